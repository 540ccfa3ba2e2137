"""Run ``python -m rainbow_aio ...`` as a child process, as a user's shell would."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str

    @property
    def lines(self) -> list[str]:
        return self.out.splitlines()


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONIOENCODING"] = "utf-8"
    # the test run's strict warnings apply to the child too: a leak there fails here
    env["PYTHONWARNINGS"] = "error"
    env["PYTHONDEVMODE"] = "1"
    return env


async def run(*argv: str, limit: float = 60.0, cwd: Path = ROOT) -> Result:
    """Run ``argv`` with this interpreter and wait for it (without blocking the loop,
    so an in-process server of the test keeps answering)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
        env=child_env(),
        cwd=cwd,
    )
    try:
        async with asyncio.timeout(limit):
            out, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return Result(proc.returncode, out.decode("utf-8"), err.decode("utf-8"))


async def cli(*args: str, limit: float = 60.0) -> Result:
    return await run("-m", "rainbow_aio", *args, limit=limit)


def unused_port() -> int:
    """A loopback port that nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
