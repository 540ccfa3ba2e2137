"""Job JSON exactly as Go's ``encoding/json`` writes it.

The Go server marshals each waiting job with ``json.Marshal``, and clients may compare
those strings byte for byte, so this module reproduces Go's string escaping rather than
Python's ``json.dumps`` (which escapes differently and puts spaces after separators).

Go's rules for a string value, as implemented here:

- ``"`` and ``\\`` get a backslash; ``\\n``, ``\\r`` and ``\\t`` use their short forms;
- every other control character below U+0020 is written ``\\u00XX`` (lower-case hex),
  including U+0008 and U+000C (the form Go used before 1.22; see ``SHORT_BF``);
- ``&``, ``<`` and ``>`` are written ``\\u0026``, ``\\u003c``, ``\\u003e`` (HTML-safe mode,
  which ``json.Marshal`` always uses);
- U+2028 and U+2029 are written ``\\u2028`` and ``\\u2029``;
- a lone surrogate (Python's stand-in for invalid UTF-8) becomes ``\\ufffd``;
- everything else, including U+007F and all other non-ASCII text, is written raw.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

__all__ = ["SHORT_BF", "JobRow", "encode_job", "encode_jobs", "encode_string"]

SHORT_BF: Final = False
"""Whether U+0008/U+000C are written ``\\b``/``\\f`` (Go >= 1.22) instead of ``\\u0008``/
``\\u000c``. See the module docstring and the server README section for the choice."""

_ESCAPES: dict[str, str] = {chr(c): f"\\u{c:04x}" for c in range(0x20)}
_ESCAPES.update(
    {
        "\n": "\\n",
        "\r": "\\r",
        "\t": "\\t",
        '"': '\\"',
        "\\": "\\\\",
        "&": "\\u0026",
        "<": "\\u003c",
        ">": "\\u003e",
        "\u2028": "\\u2028",
        "\u2029": "\\u2029",
    }
)
if SHORT_BF:  # pragma: no cover - the other Go flavour, kept for reference
    _ESCAPES.update({"\b": "\\b", "\f": "\\f"})
for _c in range(0xD800, 0xE000):
    _ESCAPES[chr(_c)] = "\\ufffd"

_NEEDS_ESCAPE: Final = re.compile('[\x00-\x1f"\\\\&<>\u2028\u2029\ud800-\udfff]')
_SURROGATE: Final = re.compile("[\ud800-\udfff]")

# The escapes other than control characters and surrogates, backslash first (the others
# add backslashes of their own). Each is one str.replace: a pass in C over the text.
_SIMPLE: Final = tuple(
    (char, _ESCAPES[char]) for char in ("\\", '"', "&", "<", ">", "\u2028", "\u2029")
)
_SIMPLE_ASCII: Final = _SIMPLE[:5]
_CONTROLS: Final = tuple((chr(c), _ESCAPES[chr(c)]) for c in range(0x20))
_CONTROL_BYTES: Final = bytes(range(0x20))


def encode_string(text: str) -> str:
    """Return ``text`` as a quoted JSON string, escaped the way Go escapes it.

    Every step runs in C, with no Python call per character: one regex search decides
    whether anything needs escaping (most text does not); the text's UTF-8 bytes tell
    whether it holds control characters (``bytes.translate``) or anything but ASCII;
    then one ``str.replace`` per character that occurs. A 4 MB command of ``&`` costs a
    few tens of milliseconds, not a second.
    """
    if _NEEDS_ESCAPE.search(text) is None:
        return '"' + text + '"'
    data = text.encode("utf-8", "surrogatepass")
    ascii_only = len(data) == len(text)
    has_controls = len(data.translate(None, _CONTROL_BYTES)) != len(data)
    has_surrogates = not ascii_only and _SURROGATE.search(text) is not None
    for char, escaped in _SIMPLE if not ascii_only else _SIMPLE_ASCII:
        if char in text:
            text = text.replace(char, escaped)
    if has_controls:
        for char, escaped in _CONTROLS:
            if char in text:
                text = text.replace(char, escaped)
    if has_surrogates:  # last: its replacement has a backslash that must stay single
        text = _SURROGATE.sub(r"\\ufffd", text)  # a template, expanded in C
    return '"' + text + '"'


def encode_job(job_id: int, cluster: str, name: str, nodes: int, tasks: int, command: str) -> str:
    """Return the JSON of one job: keys ``id, cluster, name, nodes, tasks, command``."""
    return (
        f'{{"id":{job_id:d},"cluster":{encode_string(cluster)},"name":{encode_string(name)},'
        f'"nodes":{nodes:d},"tasks":{tasks:d},"command":{encode_string(command)}}}'
    )


JobRow = tuple[int, str, int, int, str]
"""A job as the server's store reads it: id, name, nodes, tasks, command."""

# the characters Go escapes, less the two that escaped text itself contains (" and \)
_ESCAPED_ELSEWHERE: Final = re.compile("[\x00-\x1f&<>\u2028\u2029\ud800-\udfff]")
_ASCII_ESCAPED: Final = _CONTROL_BYTES + b'"\\&<>'


def encode_jobs(cluster: str, rows: Sequence[JobRow]) -> list[str]:
    """The JSON of each job of ``cluster``, exactly as :func:`encode_job` writes it.

    Most names and commands need no escaping, and checking each one costs more than
    formatting it. So every job is first formatted with its name and command as they
    are, and the whole text is checked once: the template and the escaped cluster hold
    a known number of the characters that escaping adds or removes (``"`` and ``\\``)
    and none of the others, and no text can take such a character away, so the count
    is exact only when no name or command holds one. Otherwise the names and commands
    are escaped one by one.
    """
    quoted = encode_string(cluster).replace("%", "%%")
    plain = f'{{"id":%d,"cluster":{quoted},"name":"%s","nodes":%d,"tasks":%d,"command":"%s"}}'
    texts = [plain % row for row in rows]
    if _plain(texts, plain % (0, "", 0, 0, "")):
        return texts
    escaped = f'{{"id":%d,"cluster":{quoted},"name":%s,"nodes":%d,"tasks":%d,"command":%s}}'
    return [
        escaped % (job_id, encode_string(name), nodes, tasks, encode_string(command))
        for job_id, name, nodes, tasks, command in rows
    ]


def _plain(texts: list[str], blank: str) -> bool:
    """Whether each of ``texts`` holds the escape-relevant characters of ``blank`` (a job
    with an empty name and command) and nothing else that Go would escape."""
    joined = "".join(texts)
    expected = len(texts) * (blank.count('"') + blank.count("\\"))
    if joined.isascii():  # the usual case: counted in one pass over the bytes, in C
        data = joined.encode("ascii")
        return len(data) - len(data.translate(None, _ASCII_ESCAPED)) == expected
    if _ESCAPED_ELSEWHERE.search(joined) is not None:
        return False
    return joined.count('"') + joined.count("\\") == expected
