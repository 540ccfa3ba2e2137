"""Run a Python script or module as a child process, the way a user's shell would."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

__all__ = ["ROOT", "credentials_printed", "run_python"]

ROOT = Path(__file__).resolve().parents[2]
"""The repository's root folder (the children's working directory)."""


# asyncio's debug mode (on in children that inherit PYTHONDEVMODE) logs every callback
# that ran longer than 100 ms: a note on how busy the machine was, not an error of the child
_SLOW_CALLBACK = re.compile(r"^Executing <.*> took \d+\.\d+ seconds\n", re.M)


def without_slow_callbacks(stderr: str) -> str:
    """A child's stderr, less asyncio's notes on slow callbacks."""
    return _SLOW_CALLBACK.sub("", stderr)


def run_python(
    *argv: str, env: dict[str, str] | None = None, python: str = sys.executable
) -> subprocess.CompletedProcess[str]:
    """Run ``python ARGV`` to its end (60 s at most) and capture its output as text.

    The child gets this process's environment plus ``env``, UTF-8 output, and warnings
    turned into errors (so a leak in the child fails the test too)."""
    child_env = {**os.environ, "PYTHONIOENCODING": "utf-8", "PYTHONWARNINGS": "error"}
    done = subprocess.run(
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
    done.stderr = without_slow_callbacks(done.stderr)
    return done


_UUID = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def credentials_printed(stdout: str) -> tuple[str, str]:
    """The token and secret that a register command printed (``rainbow-aio register``,
    ``examples/flux/register.py`` or the original bindings' script), after checking that
    the output has the original script's layout, line for line."""
    lines = stdout.splitlines()
    token = re.fullmatch(f'token: "({_UUID})"', lines[0] if lines else "")
    secret = re.fullmatch(f'secret: "({_UUID})"', lines[1] if len(lines) > 1 else "")
    assert token, stdout
    assert secret, stdout
    assert lines[2:] == [
        "status: REGISTER_SUCCESS",
        "",
        f"🤫️ The token you will need to submit jobs to this cluster is {token[1]}",
        f"🔐️ The secret you will need to accept jobs is {secret[1]}",
    ], stdout
    return token[1], secret[1]
