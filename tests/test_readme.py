"""README.md states facts that the code decides; these tests keep the two in step, and run
what it tells a new user to run, as it is written."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from rainbow_aio import RetryPolicy
from rainbow_aio._retry import RETRY_TABLE, Fault

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def section(title: str) -> str:
    """The text of the README section ``## title``, up to the next one."""
    return README.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def code_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


def user_env() -> dict[str, str]:
    """This environment without what the test run adds (its virtual environment, strict
    warnings), as a user's shell would have it."""
    env = dict(os.environ)
    for name in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONWARNINGS", "PYTHONDEVMODE", "PYTEST_ADDOPTS"):
        env.pop(name, None)
    return env


# README's method names -> the RPC names the retry table is keyed by
RPC_OF = {
    "register": "Register",
    "submit_job": "SubmitJob",
    "request_jobs": "RequestJobs",
    "accept_jobs": "AcceptJobs",
    "ping": "Serial",
    "stream_ping": "Stream",
}
COLUMNS = [Fault.NOT_CONNECTED, Fault.CONNECTION_LOST, Fault.DEADLINE, Fault.BUSY]


def test_the_retry_table_in_the_readme_is_the_clients() -> None:
    section = README.split("\n## Retries\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(\w+)` \| (.+) \|$", section, flags=re.M)
    documented = {name: [c.strip() for c in cells.split("|")] for name, cells in rows}
    assert set(RPC_OF) <= set(documented)
    for name, rpc in RPC_OF.items():
        cells = documented[name]
        assert len(cells) == len(COLUMNS), name
        for fault, cell in zip(COLUMNS, cells, strict=True):
            retried = cell.startswith("retried")
            assert retried == (fault in RETRY_TABLE[rpc]), (name, fault, cell)


def test_the_default_retry_policy_in_the_readme_is_the_clients() -> None:
    policy = RetryPolicy()
    text = " ".join(README.split())
    assert (
        f"RetryPolicy(max_attempts={policy.max_attempts}, "
        f"initial_backoff={policy.initial_backoff}, max_backoff={policy.max_backoff})` "
        "is the default"
    ) in text


def test_every_relative_link_leads_somewhere() -> None:
    targets = re.findall(r"\]\(([^)#]+)\)", README)
    local = [target for target in targets if "://" not in target]
    for target in local:
        assert (ROOT / target).exists(), target
    assert {"RELIABILITY.md", "BENCHMARKS.md"} <= set(local)


def test_the_testing_extra_is_installed_from_the_clone() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "optional-dependencies"
    ]
    assert {re.split(r"[<>=]", r, maxsplit=1)[0] for r in extras["testing"]} == {
        "pytest",
        "pytest-asyncio",
    }
    for title in ("Install", "Testing your own code"):
        assert "python -m pip install '.[testing]'" in section(title), title


@pytest.fixture
def readme_test(tmp_path: Path) -> tuple[str, str]:
    """The "Testing your own code" section's configuration and test file, as shown."""
    text = section("Testing your own code")
    [config] = code_blocks(text, "toml")
    [test] = code_blocks(text, "python")
    assert test.startswith("# test_my_scheduler.py\n")
    assert "`python -m pytest`" in text
    return config, test


def run_as_user(
    argv: list[str], cwd: Path = ROOT, limit: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` in ``cwd`` with :func:`user_env`, capturing its output as text."""
    return subprocess.run(
        argv,
        cwd=cwd,
        env=user_env(),
        capture_output=True,
        text=True,
        timeout=limit,
        check=False,
    )


def run_pytest(project: Path) -> subprocess.CompletedProcess[str]:
    return run_as_user([sys.executable, "-m", "pytest", "-p", "no:cacheprovider"], project)


def test_the_pytest_example_passes_as_shown(readme_test: tuple[str, str], tmp_path: Path) -> None:
    """In a project of its own: the configuration block as pyproject.toml, the test file
    under its name, then ``python -m pytest``."""
    config, test = readme_test
    (tmp_path / "pyproject.toml").write_text(config, encoding="utf-8")
    (tmp_path / "test_my_scheduler.py").write_text(test, encoding="utf-8")
    result = run_pytest(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"^1 passed in ", result.stdout.splitlines()[-1].strip("= "))
    assert "warning" not in result.stdout.lower()


def test_the_marker_the_readme_offers_works_too(
    readme_test: tuple[str, str], tmp_path: Path
) -> None:
    _, test = readme_test
    marked = test.replace("\n\nasync def ", "\n\n@pytest.mark.asyncio\nasync def ", 1)
    assert marked != test
    (tmp_path / "test_my_scheduler.py").write_text("import pytest\n" + marked, encoding="utf-8")
    result = run_pytest(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout


def test_without_the_configuration_the_example_does_not_pass(
    readme_test: tuple[str, str], tmp_path: Path
) -> None:
    """Why the README asks for the configuration first."""
    _, test = readme_test
    (tmp_path / "test_my_scheduler.py").write_text(test, encoding="utf-8")
    result = run_pytest(tmp_path)
    assert result.returncode != 0
    assert "1 passed" not in result.stdout


def test_try_it_works_as_written_in_a_fresh_clone(tmp_path: Path) -> None:
    """The "Try it" commands, exactly as shown, in a copy of the repository: a virtual
    environment (a system Python that refuses ``pip install`` never sees the install),
    the package installed into it, and the demo."""
    [block] = code_blocks(section("Try it"), "bash")
    assert block.startswith("python3 -m venv .venv && . .venv/bin/activate\n")
    clone = tmp_path / "rainbow-aio"
    shutil.copytree(
        ROOT,
        clone,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", ".tox", ".*_cache", "__pycache__", "*.egg-info", "build", "dist"
        ),
    )
    result = run_as_user(["bash", "-e", "-c", block], clone, limit=170)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (clone / ".venv" / "bin" / "rainbow-aio").exists()
    lines = result.stdout.splitlines()
    assert lines[-1] == "✅️ every job was accepted exactly once"
    assert any(re.fullmatch(r"jobs submitted\s+5,000", line) for line in lines)


def test_the_bad_command_line_example_is_what_the_command_prints() -> None:
    [(command, shown)] = re.findall(
        r"^\$ (rainbow-aio submit .*--nodes -1 .*)\n(.+)$", section("Command line"), flags=re.M
    )
    argv = command.replace("$token", "some-token").split()[1:]
    result = run_as_user([sys.executable, "-m", "rainbow_aio", *argv])
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == shown + "\n"
