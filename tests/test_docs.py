"""The documentation's examples run, and its pages state what the code decides.

Every fenced ``python`` block in ``docs/**/*.md`` and in README.md is run by
:func:`test_example`. An HTML
comment right before a block's fence (invisible on the site, plain in the repository)
says how; without one the block is a whole program:

- *(no comment)*: a program, run as ``python example.py`` in a new directory, against a
  fresh embedded server started by this test (the plugin's ``rainbow_server``): the
  address ``localhost:50051`` in the text is the only thing replaced, by that server's.
  It must exit 0, and print no warning (``PYTHONDEVMODE=1``) and no exception that a
  task or a finalizer dropped.
- ``<!-- example: output -->`` on a ``text`` block: what the program before it prints,
  exactly.
- ``<!-- example: after COMMAND -->``: the program runs after ``COMMAND`` (as the page
  tells the reader to run it), in the same directory.
- ``<!-- example: pytest -->``: a test module whose first line is ``# NAME.py``; it runs
  with ``python -m pytest -W error`` in a project of its own, with the page's ``toml``
  block as its ``pyproject.toml``, and every test in it must pass without a warning.
- ``<!-- example: not run: REASON -->``: shown, not run; the reason is required.

Other checks read the pages like the README tests read README.md: the retry table, the
default retry policy, the call outcomes, the command line's error example.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

import pytest

from rainbow_aio import CallOutcome, PollerOptions, RetryPolicy
from rainbow_aio._retry import RETRY_TABLE, Fault
from rainbow_aio.server import RainbowServer

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = [
    ROOT / "README.md",
    *sorted(p for p in DOCS.rglob("*.md") if not p.relative_to(DOCS).parts[0].startswith("_")),
]
EXAMPLE_ADDRESS = "localhost:50051"
LIMIT = 90.0  # seconds for one example

_FENCE = re.compile(
    r"(?:<!-- example: (?P<marker>.*?) -->\n)?```(?P<lang>[\w{}-]*)[^\n]*\n(?P<body>.*?)^```$",
    flags=re.S | re.M,
)


@dataclass(frozen=True)
class Block:
    page: Path
    line: int
    lang: str
    marker: str  # the text of the example comment before the fence ("" if none)
    body: str

    @property
    def name(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    text = page.read_text(encoding="utf-8")
    return [
        Block(
            page=page,
            line=text.count("\n", 0, match.start("lang")) + 1,
            lang=match["lang"],
            marker=(match["marker"] or "").strip(),
            body=match["body"],
        )
        for match in _FENCE.finditer(text)
    ]


ALL_BLOCKS = [block for page in PAGES for block in blocks(page)]
PYTHON = [block for block in ALL_BLOCKS if block.lang == "python"]


def expected_output(block: Block) -> str | None:
    """The ``text`` block marked as the output of ``block`` (the nearest program before
    it on the page), if there is one."""
    same_page = [b for b in ALL_BLOCKS if b.page == block.page]
    after = same_page[same_page.index(block) + 1 :]
    for other in after:
        if other.lang == "python":
            return None
        if other.marker == "output":
            return other.body
    return None


def section(page: str, title: str) -> str:
    """The text of the section ``## title`` of ``docs/page``, up to the next one."""
    text = (DOCS / page).read_text(encoding="utf-8")
    assert f"\n## {title}\n" in text, f"{page} has no section {title!r}"
    return text.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def example_env() -> dict[str, str]:
    """This environment as a user's shell would have it (without the test run's own
    settings), in Python's development mode, so a leaked resource prints a warning."""
    env = dict(os.environ)
    for name in ("PYTHONPATH", "PYTHONWARNINGS", "PYTEST_ADDOPTS"):
        env.pop(name, None)
    env["PYTHONDEVMODE"] = "1"
    return env


async def run(argv: list[str], cwd: Path) -> tuple[int, str, str]:
    """Run ``argv`` in ``cwd`` (without blocking the event loop that serves the example's
    server); its exit status, stdout and stderr."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        env=example_env(),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), LIMIT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def command(text: str) -> list[str]:
    argv = shlex.split(text)
    return [sys.executable, *argv[1:]] if argv[0] in ("python", "python3") else argv


async def run_program(block: Block, server: RainbowServer, where: Path) -> None:
    if block.marker.startswith("after "):
        code, out, err = await run(command(block.marker.removeprefix("after ")), where)
        assert code == 0, out + err
    program = block.body.replace(EXAMPLE_ADDRESS, server.address)
    (where / "example.py").write_text(program, encoding="utf-8")
    code, out, err = await run([sys.executable, "example.py"], where)
    assert code == 0, f"{block.name} exited {code}:\n{out}{err}"
    # stderr may hold the program's own logging; never a warning, nor an exception that
    # a task or a finalizer dropped
    for sign in ("Warning", "Task exception was never retrieved", "Exception ignored"):
        assert sign not in err, f"{block.name}:\n{err}"
    shown = expected_output(block)
    if shown is not None:
        assert out == shown, f"{block.name} printed:\n{out}"


def pytest_project(block: Block, where: Path) -> Path:
    """``where`` made a project: the page's toml block as pyproject.toml and the test
    module under the name its first line gives."""
    first, _, _ = block.body.partition("\n")
    match = re.fullmatch(r"# (\w+\.py)", first)
    assert match, f"{block.name}: a pytest example starts with '# NAME.py'"
    [config] = [b.body for b in ALL_BLOCKS if b.page == block.page and b.lang == "toml"]
    (where / "pyproject.toml").write_text(config, encoding="utf-8")
    (where / match[1]).write_text(block.body, encoding="utf-8")
    return where / match[1]


async def run_pytest(where: Path, *, warnings: str = "error") -> tuple[int, str, str]:
    """``python -m pytest`` in ``where``, every warning an error unless ``warnings`` says
    otherwise (as the page recommends, and as a reader's strict CI would run it)."""
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-W", warnings]
    return await run(argv, where)


@pytest.mark.docs
@pytest.mark.parametrize("block", PYTHON, ids=[block.name for block in PYTHON])
async def test_example(block: Block, rainbow_server: RainbowServer, tmp_path: Path) -> None:
    if block.marker.startswith("not run"):
        reason = block.marker.removeprefix("not run").strip(": ")
        assert reason, f"{block.name}: say why the example is not run"
        return
    if block.marker == "pytest":
        pytest_project(block, tmp_path)
        code, out, err = await run_pytest(tmp_path)
        assert code == 0, out + err
        assert re.search(r"^=+ \d+ passed in ", out, flags=re.M), out
        assert "warning" not in out.lower(), out
        return
    assert block.marker == "" or block.marker.startswith("after "), block.marker
    await run_program(block, rainbow_server, tmp_path)


def test_every_example_comment_is_understood() -> None:
    known = re.compile(r"output|pytest|not run: .+|after .+")
    for block in ALL_BLOCKS:
        if block.marker:
            assert known.fullmatch(block.marker), f"{block.name}: {block.marker!r}"
            if block.marker == "output":
                assert block.lang == "text", block.name
            else:
                assert block.lang == "python", block.name


def test_there_are_examples_to_run() -> None:
    """The runner sees the pages' programs (a broken fence pattern would see none)."""
    programs = [block for block in PYTHON if not block.marker.startswith("not run")]
    assert len(programs) >= 10
    assert {block.page.name for block in programs} >= {"getting-started.md", "delivery.md"}


# -- retries.md: the retry table, the default policy and the call outcomes --------------

# the page's method names -> the RPC names the retry table is keyed by
RPC_OF = {
    "register": "Register",
    "submit_job": "SubmitJob",
    "request_jobs": "RequestJobs",
    "accept_jobs": "AcceptJobs",
    "ping": "Serial",
    "stream_ping": "Stream",
}
COLUMNS = [Fault.NOT_CONNECTED, Fault.CONNECTION_LOST, Fault.DEADLINE, Fault.BUSY]


def test_the_retry_table_is_the_clients() -> None:
    rows = re.findall(r"^\| `(\w+)` \| (.+) \|$", section("retries.md", "Retries"), flags=re.M)
    documented = {name: [c.strip() for c in cells.split("|")] for name, cells in rows}
    assert set(RPC_OF) <= set(documented)
    for name, rpc in RPC_OF.items():
        cells = documented[name]
        assert len(cells) == len(COLUMNS), name
        for fault, cell in zip(COLUMNS, cells, strict=True):
            retried = cell.startswith("retried")
            assert retried == (fault in RETRY_TABLE[rpc]), (name, fault, cell)


def test_the_default_retry_policy_is_the_clients() -> None:
    policy = RetryPolicy()
    text = " ".join(section("retries.md", "Retries").split())
    assert (
        f"RetryPolicy(max_attempts={policy.max_attempts}, "
        f"initial_backoff={policy.initial_backoff}, max_backoff={policy.max_backoff})` "
        "is the default"
    ) in text


def test_every_call_outcome_is_explained() -> None:
    rows = re.findall(r"^\| `(\w+)` \| ", section("retries.md", "The call outcome"), flags=re.M)
    assert rows == [outcome.name for outcome in CallOutcome]


# -- delivery.md: the poller's options ---------------------------------------------------


def test_the_options_table_gives_every_option_and_its_default() -> None:
    rows = re.findall(r"^\| `(\w+)` \| ([^|]+) \|", section("delivery.md", "Options"), flags=re.M)
    shown = {name: cell.split()[0] for name, cell in rows}
    defaults = PollerOptions()
    assert sorted(shown) == sorted(f.name for f in fields(PollerOptions))
    for name, cell in shown.items():
        value = getattr(defaults, name)
        if value is None:
            assert cell == "`None`", name
        elif isinstance(value, str):  # AcceptMode is a str enum
            assert cell == f'`"{value}"`', name
        else:
            assert float(cell) == value, name


# -- command-line.md --------------------------------------------------------------------


def test_the_bad_command_line_example_is_what_the_command_prints() -> None:
    [(shown_command, shown)] = re.findall(
        r"^\$ (rainbow-aio submit .*--nodes -1 .*)\n(.+)$",
        section("command-line.md", "Exit status"),
        flags=re.M,
    )
    argv = shown_command.replace("$token", "some-token").split()[1:]
    result = subprocess.run(
        [sys.executable, "-m", "rainbow_aio", *argv],
        env=example_env(),
        capture_output=True,
        text=True,
        timeout=LIMIT,
        check=False,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == shown + "\n"


# -- testing.md: the plugin example, with and without its configuration -----------------


@pytest.fixture
def testing_example() -> Block:
    [block] = [b for b in PYTHON if b.page.name == "testing.md" and b.marker == "pytest"][:1]
    return block


def test_the_testing_extra_is_the_one_the_pages_install() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "optional-dependencies"
    ]
    assert {re.split(r"[<>=]", r, maxsplit=1)[0] for r in extras["testing"]} == {
        "pytest",
        "pytest-asyncio",
    }
    for page in ("getting-started.md", "testing.md"):
        assert "python -m pip install '.[testing]'" in (DOCS / page).read_text(encoding="utf-8")


@pytest.mark.docs
async def test_the_marker_the_page_offers_works_too(testing_example: Block, tmp_path: Path) -> None:
    module = pytest_project(testing_example, tmp_path)
    config = tmp_path / "pyproject.toml"
    text = config.read_text(encoding="utf-8")
    config.write_text(text.replace('asyncio_mode = "auto"\n', ""), encoding="utf-8")
    assert "asyncio_mode" not in config.read_text(encoding="utf-8")
    test = module.read_text(encoding="utf-8")
    marked = test.replace("\n\nasync def ", "\n\n@pytest.mark.asyncio\nasync def ", 1)
    assert marked != test
    module.write_text("import pytest\n" + marked, encoding="utf-8")
    code, out, err = await run_pytest(tmp_path)
    assert code == 0, out + err
    assert "1 passed" in out


@pytest.mark.docs
async def test_without_the_configuration_the_example_does_not_pass(
    testing_example: Block, tmp_path: Path
) -> None:
    """Why the page asks for the configuration first."""
    pytest_project(testing_example, tmp_path)
    (tmp_path / "pyproject.toml").unlink()
    code, out, _ = await run_pytest(tmp_path, warnings="default")
    assert code != 0
    assert "passed" not in out


@pytest.mark.docs
async def test_the_set_up_without_the_loop_scope_line_fails_under_strict_warnings(
    testing_example: Block, tmp_path: Path
) -> None:
    """Why the page's set-up has the loop scope line: pytest-asyncio warns without it,
    and the recommended strict warnings turn that into an INTERNALERROR."""
    pytest_project(testing_example, tmp_path)
    config = tmp_path / "pyproject.toml"
    text = config.read_text(encoding="utf-8")
    config.write_text(
        text.replace('asyncio_default_fixture_loop_scope = "function"\n', ""), encoding="utf-8"
    )
    code, out, err = await run_pytest(tmp_path)
    assert code != 0
    assert "asyncio_default_fixture_loop_scope" in out + err
