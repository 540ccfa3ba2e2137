"""Sphinx configuration of the rainbow-aio documentation site.

Why Sphinx: the docstrings are written in reST (``:class:`` roles, ``::`` literal blocks),
which autodoc renders and checks as written; furo is a maintained theme, and MyST keeps
every page plain Markdown that reads as well in the repository as on the site.

Build it with ``tox -e docs`` (strict: any warning, a broken reference, an anchor that
does not exist or a page left out of the table of contents fails the build). The source
directory is the repository root, so that pages in ``docs/`` can link ``../BENCHMARKS.md``
and ``../RELIABILITY.md`` exactly as they do in the repository browser; only the files in
``include_patterns`` are read.
"""

from __future__ import annotations

import re
import sys
import warnings
from pathlib import Path
from typing import Any

from docutils.nodes import Element
from sphinx.addnodes import pending_xref
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment
from sphinx.util.docstrings import prepare_docstring

import rainbow_aio

sys.path.insert(0, str(Path(__file__).parent / "_ext"))
import public_api  # docs/_ext: shared with the tests

# myst-parser 5.2 still uses an attribute that Sphinx 11 will remove; both are pinned
# (the docs extra), so the notice has nothing to act on until they are upgraded together.
warnings.filterwarnings(
    "ignore", message=r"'myst_parser\..*' is deprecated", module=r"myst_parser\."
)

project = "rainbow-aio"
author = "rainbow-aio developers"
copyright = "rainbow-aio developers, MIT license"
release = version = rainbow_aio.__version__

extensions = ["myst_parser", "sphinx.ext.autodoc"]

root_doc = "docs/index"
include_patterns = ["docs/**.md", "BENCHMARKS.md", "RELIABILITY.md"]
# the two measurement pages link their charts; nothing else of the repository is read
exclude_patterns = ["docs/_extra/**"]

# Headings get GitHub's anchors, so a link such as retries.md#the-call-outcome works in
# the repository browser and on the site alike (and a wrong one fails the build).
myst_heading_anchors = 4

html_theme = "furo"
html_title = f"rainbow-aio {release}"
# the site's root index.html forwards to docs/index.html
html_extra_path = ["_extra"]
html_show_sourcelink = False

# Strict references: every name a signature or a docstring mentions must resolve.
# Without network there is no intersphinx, so names from the standard library and from
# the dependencies are accepted as plain text; private helpers that appear in public
# signatures are listed one by one, so a new one is noticed.
nitpicky = True
nitpick_ignore_regex = [
    (
        r"py:.*",
        r"(builtins|collections\.abc|typing|types|enum|pathlib|asyncio|os|signal|sqlite3)\..*",
    ),
    (r"py:.*", r"(grpc|google|anyio|pytest|_pytest)(\..*)?"),
    (r"py:class", r"(int|str|float|bool|bytes|object|None|Exception|BaseException)"),
    (r"py:class", r"(ValueError|TimeoutError|RuntimeError|Path|Literal|Unpack)"),
    (r"py:class", r"(Sequence|Mapping|Iterable|Iterator|AsyncIterator|Awaitable|Callable)"),
    (r"py:class", r"(Container|TracebackType|StrEnum|Enum|TypedDict)"),
]
nitpick_ignore = [
    # bases and parameter types that are internal on purpose
    ("py:class", "rainbow_aio.poller._run.JobSource"),
    ("py:class", "JobSource"),
    ("py:class", "rainbow_aio.poller._ledger.AcceptClient"),
    ("py:class", "AcceptClient"),
    ("py:class", "rainbow_aio.poller._job.JobEntry"),
    ("py:class", "JobEntry"),
    ("py:class", "rainbow_aio.poller._job.AcceptTogether"),
    ("py:class", "AcceptTogether"),
]

autodoc_member_order = "bysource"
autodoc_typehints_format = "short"
python_use_unqualified_type_names = True
autodoc_default_options = {"members": True, "show-inheritance": True}
add_module_names = False


_SECTION = re.compile(r"^(\s*)(Arguments|Args|Parameters):\s*$")
_ITEM = re.compile(r"^(\s*)(\*{0,2}\w+):\s+(.*)$")


def google_arguments(
    app: Sphinx, what: str, name: str, obj: Any, options: Any, lines: list[str]
) -> None:
    """Turn a Google-style ``Arguments:`` section (``RainbowClient`` has one) into
    ``:param name:`` fields; every other line of a docstring is left as written."""
    out: list[str] = []
    section: str | None = None  # the section's indentation while inside it
    item: str | None = None  # the indentation of the current argument's first line
    for line in lines:
        if section is None:
            match = _SECTION.match(line)
            if match:
                section = match.group(1)
                continue
            out.append(line)
            continue
        if not line.strip():
            item = None
            out.append(line)
            continue
        indent = line[: len(line) - len(line.lstrip())]
        if len(indent) <= len(section):  # the section ended
            section = item = None
            out.append(line)
            continue
        match = _ITEM.match(line)
        if match and (item is None or len(match.group(1)) <= len(item)):
            item = match.group(1)
            out.append(f"{section}:param {match.group(2)}: {match.group(3)}")
        else:
            out.append(f"{section}   {line.strip()}")
    lines[:] = out


def alias_docstring(
    app: Sphinx, what: str, name: str, obj: Any, options: Any, lines: list[str]
) -> None:
    """Give a re-exported type alias (``rainbow_aio.SubmitRetry``) the docstring written
    under its assignment in the module that defines it, which autodoc cannot see."""
    if what != "data" or any(line.strip() for line in lines):
        return
    module, _, short = name.rpartition(".")
    text = public_api.docstring(module, short)
    if text:
        lines[:] = prepare_docstring(text)


# Docstrings name other public objects by their short names (``:class:`PollerOptions```
# inside ``rainbow_aio.poller``); those are documented where users import them from.


def public_name(
    app: Sphinx, env: BuildEnvironment, node: pending_xref, contnode: Element
) -> Element | None:
    """Resolve a Python reference that failed by looking for the same short name in the
    public packages; a name documented in none of them still fails the build."""
    if node.get("refdomain") != "py":
        return None
    short = node["reftarget"].rsplit(".", 1)[-1]
    domain = env.get_domain("py")
    for package in public_api.PUBLIC_PACKAGES:
        target = f"{package}.{short}"
        if target in domain.objects:  # type: ignore[attr-defined]
            return domain.resolve_xref(
                env, node["refdoc"], app.builder, node["reftype"], target, node, contnode
            )
    return None


def setup(app: Sphinx) -> dict[str, object]:
    app.connect("autodoc-process-docstring", google_arguments)
    app.connect("autodoc-process-docstring", alias_docstring)
    app.connect("missing-reference", public_name)
    return {"parallel_read_safe": True}
