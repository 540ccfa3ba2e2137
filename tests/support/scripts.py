"""Run a Python script or module as a child process, the way a user's shell would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

__all__ = ["ROOT", "run_python"]

ROOT = Path(__file__).resolve().parents[2]
"""The repository's root folder (the children's working directory)."""


def run_python(
    *argv: str, env: dict[str, str] | None = None, python: str = sys.executable
) -> subprocess.CompletedProcess[str]:
    """Run ``python ARGV`` to its end (60 s at most) and capture its output as text.

    The child gets this process's environment plus ``env``, UTF-8 output, and warnings
    turned into errors (so a leak in the child fails the test too)."""
    child_env = {**os.environ, "PYTHONIOENCODING": "utf-8", "PYTHONWARNINGS": "error"}
    return subprocess.run(
        [python, *argv],
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=child_env | (env or {}),
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        timeout=60,
        check=False,
    )
