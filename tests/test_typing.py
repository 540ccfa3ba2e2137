"""The options of pollers are typed: ``mypy --strict`` rejects a misspelt one in user code.

Runs mypy (the version the project pins) on two small programs that use the public API:
one correct, one with misspelt or mistyped poller options, which must be refused at the
lines where the mistakes are.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mypy", reason="mypy is part of the test extra")

GOOD = """\
from rainbow_aio import AcceptMode, PollerOptions, RainbowClient


async def use(client: RainbowClient) -> None:
    options = PollerOptions(max_jobs=20, accept_mode=AcceptMode.SHARED)
    async with client.poller("keebler", "s", options, accept_mode="batched") as poller:
        async for job in poller:
            await job.accept()
    async with client.poll_many({"keebler": "s"}, max_jobs=5, max_concurrent_polls=8):
        pass
"""

BAD = """\
from rainbow_aio import PollerOptions, RainbowClient


async def use(client: RainbowClient) -> None:
    client.poller("keebler", "s", max_job=20)
    client.poll_many({"keebler": "s"}, acept_mode="shared")
    client.poller("keebler", "s", max_jobs="20")
    PollerOptions(queue_sise=3)
    client.poller("keebler", "s", accept_mode="sharde")
"""


def mypy(tmp_path: Path, source: str) -> subprocess.CompletedProcess[str]:
    program = tmp_path / "program.py"
    program.write_text(source, encoding="utf-8")
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-incremental",
            "--cache-dir",
            str(tmp_path / "cache"),
            str(program),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        # not the repository's root: there mypy would check the source tree as the
        # program's own code, where a user's mypy reads the installed package
        cwd=tmp_path,
    )


def test_mypy_accepts_options_spelt_right_and_rejects_them_misspelt(tmp_path: Path) -> None:
    good = mypy(tmp_path, GOOD)
    assert good.returncode == 0, good.stdout
    bad = mypy(tmp_path, BAD)
    assert bad.returncode == 1, bad.stdout
    lines = {int(n) for n in re.findall(r"program\.py:(\d+): error", bad.stdout)}
    assert lines == {5, 6, 7, 8, 9}, bad.stdout
    assert '"max_job"' in bad.stdout
    assert '"acept_mode"' in bad.stdout
    assert '"queue_sise"' in bad.stdout
