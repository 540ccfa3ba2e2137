"""Run ``python -m rainbow_aio ...`` as a child process, as a user's shell would."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from support.scripts import without_slow_callbacks

from rainbow_aio._proto import rainbow_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str

    @property
    def lines(self) -> list[str]:
        return self.out.splitlines()


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a child: this one, without credentials the person running the
    tests may have exported (``RAINBOW_TOKEN``...), plus ``extra``."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("RAINBOW_")}
    env["PYTHONIOENCODING"] = "utf-8"
    # the test run's strict warnings apply to the child too: a leak there fails here
    env["PYTHONWARNINGS"] = "error"
    env["PYTHONDEVMODE"] = "1"
    env.update(extra or {})
    return env


async def run(
    *argv: str, limit: float = 60.0, cwd: Path = ROOT, env: Mapping[str, str] | None = None
) -> Result:
    """Run ``argv`` with this interpreter and wait for it (without blocking the loop,
    so an in-process server of the test keeps answering); ``env`` adds variables."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
        env=child_env(env),
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
    return Result(proc.returncode, out.decode("utf-8"), without_slow_callbacks(err.decode("utf-8")))


async def interrupt(
    *argv: str,
    when_line: str | None = None,
    when: Callable[[], bool] | None = None,
    limit: float = 60.0,
) -> Result:
    """Run ``argv`` with this interpreter, press Ctrl-C (a real SIGINT) once it is busy,
    and wait for it to end.

    Busy means: it printed a line starting with ``when_line``, or ``when()`` became true
    (checked every few milliseconds; for example "the child has connected"). Either way
    the child is past its imports and inside its event loop, which is what Ctrl-C is
    meant to interrupt. Fails if the child ends before that, or does not end in ``limit``.
    """
    assert (when_line is None) != (when is None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
        env=child_env(),
        cwd=ROOT,
    )
    assert proc.stdout is not None
    seen: list[bytes] = []
    try:
        async with asyncio.timeout(limit):
            if when_line is not None:
                while not (line := await proc.stdout.readline()).decode().startswith(when_line):
                    assert line, f"the child ended first: {b''.join(seen).decode()!r}"
                    seen.append(line)
                seen.append(line)
            else:
                assert when is not None
                while not when():
                    assert proc.returncode is None, "the child ended first"
                    await asyncio.sleep(0.005)
            proc.send_signal(signal.SIGINT)
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return Result(
        proc.returncode,
        b"".join([*seen, out]).decode(),
        without_slow_callbacks(err.decode("utf-8")),
    )


async def cli(*args: str, limit: float = 60.0, env: Mapping[str, str] | None = None) -> Result:
    return await run("-m", "rainbow_aio", *args, limit=limit, env=env)


def unused_port() -> int:
    """A loopback port that nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Unanswered(rainbow_pb2_grpc.RainbowSchedulerServicer):
    """Takes every call and answers none of them."""

    def __init__(self) -> None:
        self.calls = 0

    async def _hold(self, request: Any, context: Any) -> Any:
        self.calls += 1
        await asyncio.Event().wait()  # until the server stops and cancels the call

    Register = SubmitJob = RequestJobs = AcceptJobs = _hold


class SilentServer:
    """A gRPC server on loopback that speaks HTTP/2, so clients connect, and answers no
    call: a command is then busy inside its call until its ``--timeout``."""

    def __init__(self) -> None:
        self._servicer = _Unanswered()
        self._server: grpc.aio.Server | None = None
        self.address = ""

    @property
    def calls(self) -> int:
        """Calls received so far (each is still waiting for its answer)."""
        return self._servicer.calls

    async def __aenter__(self) -> SilentServer:
        self._server = grpc.aio.server()
        rainbow_pb2_grpc.add_RainbowSchedulerServicer_to_server(self._servicer, self._server)
        port = self._server.add_insecure_port("127.0.0.1:0")
        await self._server.start()
        self.address = f"127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        await self._server.stop(grace=None)
