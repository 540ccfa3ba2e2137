"""The hand-written job JSON encoder against outputs of Go's encoding/json.

The expected strings are what ``json.Marshal`` writes (Go 1.20, the toolchain of the
rainbow container image): HTML-safe escapes, ``\\u2028``/``\\u2029``, ``\\u00XX`` for
control characters other than ``\\n \\r \\t`` (including ``\\b`` and ``\\f``), lower-case
hex, raw UTF-8 for everything else, and ``\\ufffd`` for invalid UTF-8.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rainbow_aio import Job
from rainbow_aio._gojson import JobRow, encode_job, encode_jobs, encode_string

GO_STRINGS = [
    ("", '""'),
    ("echo hello", '"echo hello"'),
    ("sleep 1 && echo hi", '"sleep 1 \\u0026\\u0026 echo hi"'),
    ("<b>&amp;</b>", '"\\u003cb\\u003e\\u0026amp;\\u003c/b\\u003e"'),
    ('say "hi"', '"say \\"hi\\""'),
    ("back\\slash", '"back\\\\slash"'),
    ("a\nb\rc\td", '"a\\nb\\rc\\td"'),
    ("\b\f", '"\\u0008\\u000c"'),
    ("\x00\x01\x1f", '"\\u0000\\u0001\\u001f"'),
    ("\x0b\x1b", '"\\u000b\\u001b"'),
    ("\x7f", '"\x7f"'),
    ("héllo wörld ñ", '"héllo wörld ñ"'),
    ("日本語", '"日本語"'),
    ("emoji 🌈", '"emoji 🌈"'),
    ("\u2028\u2029", '"\\u2028\\u2029"'),
    ("\u2027\u202a", '"\u2027\u202a"'),
    ("'single' %_ /slash", "\"'single' %_ /slash\""),
    ("\u0085\u00a0\ufeff", '"\u0085\u00a0\ufeff"'),
    ("bad \udc80 byte", '"bad \\ufffd byte"'),
]


@pytest.mark.parametrize(("text", "go"), GO_STRINGS)
def test_strings_escape_like_go(text: str, go: str) -> None:
    assert encode_string(text) == go


def test_job_keys_order_and_no_spaces() -> None:
    assert (
        encode_job(2, "alpha", "j2", 3, 4, "sleep 1 && echo hi")
        == '{"id":2,"cluster":"alpha","name":"j2","nodes":3,"tasks":4,'
        '"command":"sleep 1 \\u0026\\u0026 echo hi"}'
    )


def test_job_extreme_integers() -> None:
    assert (
        encode_job(2147483647, "c", "", -2147483648, 0, "")
        == '{"id":2147483647,"cluster":"c","name":"","nodes":-2147483648,"tasks":0,"command":""}'
    )


@given(st.text())
def test_any_text_round_trips_through_a_json_parser(text: str) -> None:
    decoded = json.loads(encode_string(text))
    expected = "".join("\ufffd" if 0xD800 <= ord(c) < 0xE000 else c for c in text)
    assert decoded == expected


@given(st.text())
def test_output_is_ascii_safe_where_go_escapes(text: str) -> None:
    out = encode_string(text)[1:-1]
    for forbidden in ("<", ">", "&", "\u2028", "\u2029"):
        assert forbidden not in out
    assert not any(ord(c) < 0x20 for c in out)


# text that can cross the wire (protobuf strings are UTF-8, so no lone surrogates)
WIRE_TEXT = st.text(st.characters(exclude_categories=("Cs",)))


@given(WIRE_TEXT, WIRE_TEXT, st.integers(-(2**31), 2**31 - 1))
def test_job_to_json_rebuilds_what_the_server_sent(name: str, command: str, nodes: int) -> None:
    sent = encode_job(7, "alpha", name, nodes, 1, command)
    job = Job.from_json(7, sent, cluster="alpha")
    assert job.to_json() == sent


def test_escaping_agrees_with_the_per_character_rules_on_every_special_character() -> None:
    specials = [chr(c) for c in range(0x20)] + ['"', "\\", "&", "<", ">", "\u2028", "\u2029"]
    text = "".join(f"a{c}é{c}\udc80" for c in specials) + "\U0001f308"
    expected = (
        '"'
        + "".join(
            json.dumps(c)[1:-1]
            .replace("&", "\\u0026")
            .replace("<", "\\u003c")
            .replace(">", "\\u003e")
            .replace("\\b", "\\u0008")
            .replace("\\f", "\\u000c")
            if c not in "\u2028\u2029\udc80é\U0001f308"
            else {"\u2028": "\\u2028", "\u2029": "\\u2029", "\udc80": "\\ufffd"}.get(c, c)
            for c in text
        )
        + '"'
    )
    assert encode_string(text) == expected


# -- a listing's jobs, encoded together ---------------------------------------------------

ROWS = st.lists(
    st.tuples(
        st.integers(1, 2**31 - 1),
        st.text(),
        st.integers(-(2**31), 2**31 - 1),
        st.integers(-(2**31), 2**31 - 1),
        st.text(),
    ),
    max_size=8,
)


@given(st.text(), ROWS)
def test_jobs_encoded_together_are_each_encoded_alone(cluster: str, rows: list[JobRow]) -> None:
    assert encode_jobs(cluster, rows) == [encode_job(row[0], cluster, *row[1:]) for row in rows]


@pytest.mark.parametrize("cluster", ["alpha", 'a"b', "a\\b", "a&b<c>", "50%d %s", "日本", "\x00"])
@pytest.mark.parametrize("special", [*GO_STRINGS, ("", "")])
def test_one_job_that_needs_escaping_among_plain_ones(
    cluster: str, special: tuple[str, str]
) -> None:
    """Whichever job holds the character, whether in its name or its command, and
    whatever the cluster's name holds (``%`` included): the same JSON as one by one."""
    text = special[0]
    for n in range(3):
        rows: list[JobRow] = [(i + 1, f"job-{i}", 1, 0, f"echo {i}") for i in range(3)]
        rows[n] = (n + 1, text, 2, 3, "echo plain") if n % 2 else (n + 1, "j", 2, 3, text)
        assert encode_jobs(cluster, rows) == [encode_job(r[0], cluster, *r[1:]) for r in rows]
