"""README.md is the front page: these tests run what it tells a new user to run, as it is
written, and check that its links lead somewhere. (Its Python example runs with the
documentation's, in tests/test_docs.py, which also checks what the guides in docs/ say
about retries, the command line and the pytest plugin.)"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

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


def test_every_relative_link_leads_somewhere() -> None:
    targets = re.findall(r"\]\(([^)#]+)\)", README)
    local = [target for target in targets if "://" not in target]
    for target in local:
        assert (ROOT / target).exists(), target
    assert {"RELIABILITY.md", "BENCHMARKS.md"} <= set(local)


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


@pytest.mark.docs
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


def test_the_front_page_links_into_the_documentation() -> None:
    linked = set(re.findall(r"\]\((docs/[^)#]+)\)", README))
    assert "docs/index.md" in linked
    assert "docs/reference/index.md" in linked
    guides = {f"docs/{page.name}" for page in (ROOT / "docs").glob("*.md")}
    assert guides <= linked, guides - linked
