"""``ServerProcess``: a real ``rainbow-aio serve`` child process for tests and benchmarks.

The child runs ``sys.executable -m rainbow_aio serve --address 127.0.0.1:PORT --db FILE``.
A daemon thread reads its combined stdout/stderr line by line (so the pipe never fills
up and blocks the server) and wakes :meth:`ServerProcess.start` when the
``server listening: ADDRESS`` line appears. The first start asks for port 0 and reads
the real port from that line (no race for a free port); later starts reuse that port, so
clients can reconnect to the same address after a restart.

Every method has a blocking form (``start_sync``, ``stop_sync``, ...) for code outside
an event loop; the async forms run those in a worker thread.

No server outlives the process that started it, whatever ends that process (SIGKILL
included, or pytest ended by a CI timeout's SIGTERM): the child gets the read end of a
pipe whose write end only this process holds (``RAINBOW_AIO_LIFELINE_FD``), and ``serve``
stops when that pipe reports end of file, which the kernel does the moment the last
holder of the write end is gone. (A parent-death signal would not do: it fires when the
*thread* that started the child ends, and ``start()`` runs in a worker thread.)
"""

from __future__ import annotations

import asyncio
import collections
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from .. import _protocol as P

__all__ = ["ServerProcess", "ServerProcessError"]

_LISTENING: Final = re.compile(r"server listening: (\S+)\s*$")
LIFELINE_ENV: Final = "RAINBOW_AIO_LIFELINE_FD"
"""The variable that gives ``serve`` the pipe it watches (see the module docstring)."""
_KEEP_LINES: Final = 2000


class ServerProcessError(RuntimeError):
    """The server process failed to start (or to stop) in time; ``output`` has its log."""

    def __init__(self, message: str, output: str = "") -> None:
        super().__init__(message)
        self.output = output


class ServerProcess:
    """Runs the embedded server as a child process, on loopback, on one database file.

    ``start()`` waits until the server listens; ``kill()`` sends SIGKILL, ``terminate()``
    SIGTERM, and both wait for the exit and return the exit status; ``start()`` again
    restarts it on the same port and database file. As an (async) context manager it
    starts the server and always stops whatever it started.
    """

    def __init__(
        self,
        db: str | Path,
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        secret: str = P.DEFAULT_REGISTRATION_SECRET,
        cleanup: bool = False,
        args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        startup_timeout: float = 30.0,
        python: str = sys.executable,
    ) -> None:
        self.db = Path(db)
        self.host = host
        self.port = port
        self.secret = secret
        self.cleanup = cleanup
        self.args = list(args)
        self.env = env
        self.startup_timeout = startup_timeout
        self.python = python
        self._proc: subprocess.Popen[bytes] | None = None
        self._lifeline: int | None = None  # the pipe's write end, while a child may run
        self._reader: threading.Thread | None = None
        self._lines: collections.deque[str] = collections.deque(maxlen=_KEEP_LINES)
        self._lock = threading.Lock()
        self._new_line = threading.Condition(self._lock)
        self._line_count = 0
        self._listening = threading.Event()
        self._listen_address: str | None = None
        self.starts = 0

    def __repr__(self) -> str:
        state = f"pid={self.pid}" if self.running else "stopped"
        return f"<ServerProcess {self.address} db={str(self.db)!r} {state}>"

    # -- state ---------------------------------------------------------------------------

    @property
    def address(self) -> str:
        """``HOST:PORT`` the server listens on (the real port after the first start)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The process id of the latest start (also after it exited), or None before the
        first start."""
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        """True while the child process has not exited."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        """The exit status of the last run (``-N`` for signal N), or None while it runs."""
        return self._proc.poll() if self._proc is not None else None

    @property
    def output(self) -> str:
        """The process's log so far (the last lines, newest last)."""
        with self._lock:
            return "\n".join(self._lines)

    def command(self, *, cleanup: bool | None = None) -> list[str]:
        """The command line the next start runs."""
        argv = [
            self.python,
            "-m",
            "rainbow_aio",
            "serve",
            "--address",
            self.address,
            "--db",
            str(self.db),
        ]
        if self.cleanup if cleanup is None else cleanup:
            argv.append("--cleanup")
        return argv + self.args

    # -- blocking API --------------------------------------------------------------------

    def start_sync(self, *, cleanup: bool | None = None, timeout: float | None = None) -> None:
        """Start the process and block until it listens.

        ``cleanup`` overrides the constructor's value for this start only (the default
        cleans up only on the first start, so a restart keeps the data). Raises
        :class:`ServerProcessError` with the process output if it exits or does not
        listen within ``timeout`` (default ``startup_timeout``).
        """
        if self.running:
            raise ServerProcessError(f"server process already running (pid {self.pid})")
        self._reap()
        if cleanup is None:
            cleanup = self.cleanup and self.starts == 0
        deadline = time.monotonic() + (self.startup_timeout if timeout is None else timeout)
        # A restart reuses the port; if something else holds it for a moment (another
        # process that raced for it), try again until the deadline.
        while True:
            try:
                self._launch(cleanup, deadline)
                return
            except ServerProcessError as exc:
                retry = self.starts > 1 and "in use" in exc.output
                if not retry or time.monotonic() + 0.25 > deadline:
                    raise
                time.sleep(0.25)

    def _launch(self, cleanup: bool, deadline: float) -> None:
        env = dict(os.environ if self.env is None else self.env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        # the secret goes through the environment, never the process list
        env["RAINBOW_REGISTRATION_SECRET"] = self.secret
        self._listening.clear()
        self._listen_address = None
        with self._lock:
            self._lines.clear()
        self._close_lifeline()
        watched, held = os.pipe()  # both ends close on exec; the child gets `watched`
        env[LIFELINE_ENV] = str(watched)
        try:
            proc = subprocess.Popen(
                self.command(cleanup=cleanup),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=env,
                pass_fds=(watched,),
                start_new_session=True,  # a ^C in the terminal does not reach the child
            )
        except BaseException:
            os.close(held)
            raise
        finally:
            os.close(watched)
        self._lifeline = held
        self._proc = proc
        self.starts += 1
        self._reader = threading.Thread(
            target=self._read, args=(proc,), name=f"rainbow-serve-{proc.pid}", daemon=True
        )
        self._reader.start()
        while not self._listening.wait(0.05):
            if proc.poll() is not None:
                self._join_reader()
                raise ServerProcessError(
                    f"server process exited with status {proc.returncode} before listening:"
                    f"\n{self.output}",
                    self.output,
                )
            if time.monotonic() > deadline:
                self.kill_sync()
                raise ServerProcessError(
                    f"server process did not listen within the timeout:\n{self.output}",
                    self.output,
                )
        address = self._listen_address
        if address is not None:
            self.port = int(address.rpartition(":")[2])

    def wait_for_output_sync(self, pattern: str, timeout: float = 30.0) -> str:
        """Block until a line of this run's output matches the regex ``pattern``; return
        the line. Raises :class:`ServerProcessError` on timeout or when the process ends
        first."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                for line in self._lines:
                    if regex.search(line):
                        return line
                remaining = deadline - time.monotonic()
                reader = self._reader
                if remaining <= 0 or reader is None or not reader.is_alive():
                    raise ServerProcessError(
                        f"no output line matched {pattern!r}:\n" + "\n".join(self._lines),
                        "\n".join(self._lines),
                    )
                self._new_line.wait(min(remaining, 0.1))

    def send_signal(self, sig: int) -> None:
        """Send a signal without waiting (no-op when the process is not running)."""
        if self.running:
            assert self._proc is not None
            self._proc.send_signal(sig)

    def wait_sync(self, timeout: float | None = None) -> int | None:
        """Wait for the process to exit; its status (``-N`` for signal N), or None."""
        if self._proc is None:
            return None
        try:
            code = self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        self._join_reader()
        return code

    def kill_sync(self) -> int | None:
        """SIGKILL the process and wait for it; returns the exit status."""
        self.send_signal(signal.SIGKILL)
        return self._finish(self.wait_sync(30.0))

    def terminate_sync(self, timeout: float = 15.0) -> int | None:
        """SIGTERM the process and wait up to ``timeout`` (then SIGKILL)."""
        self.send_signal(signal.SIGTERM)
        code = self.wait_sync(timeout)
        if code is None:
            self.kill_sync()
            raise ServerProcessError(
                f"server process ignored SIGTERM for {timeout} s and was killed:\n{self.output}",
                self.output,
            )
        return self._finish(code)

    def stop_sync(self, timeout: float = 15.0) -> int | None:
        """Stop the process if it runs (SIGTERM, then SIGKILL after ``timeout``)."""
        if not self.running:
            return self._finish(self.wait_sync(0))
        self.send_signal(signal.SIGTERM)
        code = self.wait_sync(timeout)
        if code is None:
            code = self.kill_sync()
        return self._finish(code)

    # -- async API -----------------------------------------------------------------------
    # (the timeouts bound waits on a child process in a worker thread, hence ASYNC109)

    async def start(self, *, cleanup: bool | None = None, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """:meth:`start_sync` without blocking the event loop."""
        await asyncio.to_thread(self.start_sync, cleanup=cleanup, timeout=timeout)

    async def kill(self) -> int | None:
        """:meth:`kill_sync` without blocking the event loop."""
        return await asyncio.to_thread(self.kill_sync)

    async def terminate(self, timeout: float = 15.0) -> int | None:  # noqa: ASYNC109
        """:meth:`terminate_sync` without blocking the event loop."""
        return await asyncio.to_thread(self.terminate_sync, timeout)

    async def stop(self, timeout: float = 15.0) -> int | None:  # noqa: ASYNC109
        """:meth:`stop_sync` without blocking the event loop."""
        return await asyncio.to_thread(self.stop_sync, timeout)

    async def wait(self, timeout: float | None = None) -> int | None:  # noqa: ASYNC109
        """:meth:`wait_sync` without blocking the event loop."""
        return await asyncio.to_thread(self.wait_sync, timeout)

    async def wait_for_output(self, pattern: str, timeout: float = 30.0) -> str:  # noqa: ASYNC109
        """:meth:`wait_for_output_sync` without blocking the event loop."""
        return await asyncio.to_thread(self.wait_for_output_sync, pattern, timeout)

    async def restart(self) -> None:
        """Stop (SIGTERM) and start again on the same port and database."""
        await self.stop()
        await self.start()

    async def __aenter__(self) -> ServerProcess:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def __enter__(self) -> ServerProcess:
        self.start_sync()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop_sync()

    # -- internals -----------------------------------------------------------------------

    def _read(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        with proc.stdout:
            for raw in proc.stdout:
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                with self._lock:
                    self._lines.append(line)
                    self._line_count += 1
                    self._new_line.notify_all()
                if not self._listening.is_set():
                    match = _LISTENING.search(line)
                    if match:
                        self._listen_address = match.group(1)
                        self._listening.set()

    def _join_reader(self) -> None:
        if self._reader is not None:
            self._reader.join(10.0)
            self._reader = None

    def _finish(self, code: int | None) -> int | None:
        if code is not None:
            self._join_reader()
            self._close_lifeline()
        return code

    def _reap(self) -> None:
        if self._proc is not None and self._proc.poll() is not None:
            self._join_reader()
            self._close_lifeline()

    def _close_lifeline(self) -> None:
        if self._lifeline is not None:
            os.close(self._lifeline)
            self._lifeline = None
