"""The local executor: each job a subprocess in its own session, on this machine.

Jobs are not children of the agent: they are started by the workdir's *supervisor*
(``_supervisor.py``), one long-lived process per workdir in a session of its own that
the executor starts when none runs, and that outlives an agent killed at any moment. The
supervisor claims each job's folder exclusively before it runs anything (the ``claim``
file), so a job is never started twice; it runs the command's words (``shlex.split``,
no shell) in the folder with stdout and stderr to files there, enforces the time limit,
and writes each job's exit status to ``exit`` when the job ends, whether an agent is
connected then or not. Jobs get the agent's environment without its credentials, plus
``RAINBOW_JOB_ID``, ``RAINBOW_CLUSTER``, ``RAINBOW_NODES``, ``RAINBOW_TASKS`` and
``RAINBOW_JOB_DIR``.

A restarted agent connects to the same supervisor and hears how the jobs it re-attached
to end. A job whose supervisor is gone (killed on its own) is watched through its pid
until it ends; how it ended is then unknown (no exit status was recorded).

The handle is ``"PID:START"``: the job's pid and its start time in clock ticks
(``/proc/PID/stat``), so a reused pid is never mistaken for the job.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any, Final, Literal

from . import _supervisor
from ._executor import Ended, Launch, LaunchError, job_environment

__all__ = ["LocalExecutor"]

_Unread = Literal["unread"]
_SIGNALS: Final = {int(s): s.name for s in signal.Signals}
_CONNECT_TRIES: Final = 200
"""Attempts (2 ms to 50 ms apart) to reach a workdir's supervisor, started or not."""


class LocalExecutor:
    """Runs each job as a local subprocess in its own session (see the module's text).

    ``cancel_grace``: seconds between SIGTERM and SIGKILL when a job is cancelled.
    ``poll_interval``: how often a job whose supervisor is gone is checked when the
    system cannot notify its end (no ``pidfd``).
    """

    name = "local"

    def __init__(self, *, cancel_grace: float = 5.0, poll_interval: float = 0.2) -> None:
        self._cancel_grace = cancel_grace
        self._poll_interval = poll_interval
        self._links: dict[Path, _Link] = {}  # by workdir: the supervisor's connection
        self._connecting: dict[Path, asyncio.Future[_Link | None]] = {}
        self._found: dict[str, str] = {}  # programs found on PATH before: their paths
        self._env = job_environment()

    async def free_nodes(self) -> int | None:
        """None: the agent counts nodes itself (``nodes`` / ``--nodes``)."""
        return None

    async def start(self, launch: Launch) -> str:
        """Check the command exists (:class:`LaunchError` otherwise), then have the
        workdir's supervisor claim the folder and start the job; the handle is
        ``"PID:START"``. A job whose folder was claimed before (started by an agent that
        died) is not started again: its handle is returned, to wait on."""
        if not launch.argv or not launch.argv[0]:
            raise LaunchError("empty command")
        program = launch.argv[0]
        if "/" in program:
            if not os.access(program, os.X_OK) or Path(program).is_dir():  # noqa: ASYNC240
                raise LaunchError(f"command not found or not executable: {program}")
        elif program not in self._found:
            found = shutil.which(program, path=self._env.get("PATH", os.defpath))
            if found is None:
                raise LaunchError(f"command not found: {program}")
            self._found[program] = found
        argv = [self._found.get(program, program), *launch.argv[1:]]
        for _ in range(3):  # a supervisor may leave as it answers: ask the next one
            link = await self._link(launch.folder.parent, start=True)
            if link is None:  # another caller's connect was cancelled: connect again
                continue
            answer = await link.start(launch, argv)
            if answer is not None:
                return answer
        raise LaunchError("the job supervisor keeps stopping; see .supervisor.log in the workdir")

    async def wait(self, launch: Launch, handle: str) -> Ended:
        """Wait for the job to end and say how: told by the supervisor, or read from
        the folder's claim, or (its supervisor gone) watched through its pid."""
        folder = launch.folder
        while True:
            link = self._links.get(folder.parent)
            if link is None or link.closed:
                link = await self._link(folder.parent, start=False)
            if link is not None:
                code = link.take_end(folder)
                if code is None and link.started(folder):
                    code = await link.end_of(folder)  # told when it ends: no file to read
                if code is not None:
                    return self._outcome(launch, code)
            code = _exit_code(folder)
            if code is not None:
                return self._outcome(launch, code)
            pid, start = _parse(handle)
            if pid <= 0:
                claimed = _claimant(folder)
                if claimed is None:
                    return self._outcome(launch, None)
                pid, start = claimed
            if link is not None and link.watches(pid, folder):
                code = await link.end_of(folder)
                if code is not None:
                    return self._outcome(launch, code)
                continue  # the supervisor left: ask again (its exit file, or by the pid)
            if _alive(pid, start, folder):
                await self._wait_other(pid, start, folder)
            # ended with no supervisor watching: none wrote its end, or one is writing it
            for _ in range(5):
                code = _exit_code(folder)
                if code is not None:
                    break
                await asyncio.sleep(0.01)
            return self._outcome(launch, code)

    async def cancel(self, launch: Launch, handle: str) -> None:
        """SIGTERM to the job's session, SIGKILL after ``cancel_grace`` seconds; the job
        is recorded as ``"cancelled"``."""
        pid, start = _parse(handle)
        with contextlib.suppress(OSError):
            (launch.folder / "cancelled").touch()
        if not _alive(pid, start, launch.folder):
            return
        _kill_group(pid, signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._cancel_grace):
                while _alive(pid, start, launch.folder):  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
                return
        _kill_group(pid, signal.SIGKILL)

    async def reattach(self, launch: Launch, handle: str | None) -> str | Ended | None:
        """From the folder: its exit file (ended), its claim and a live job (running:
        the handle), or neither (never started: None)."""
        folder = launch.folder
        # connected first: an end after the exit file is read below is then heard
        link = await self._link(folder.parent, start=False)
        if _exit_code(folder) is not None:
            return self._outcome(launch)
        claimed = _claimant(folder)
        if claimed is not None:
            pid, start = claimed
            if _alive(pid, start, folder):
                if link is not None:
                    link.watches(pid, folder)  # its end is kept from now on
                return f"{pid}:{start or _start_time(pid) or 0}"
            return self._outcome(launch)
        if handle is not None:
            pid, start = _parse(handle)
            if _alive(pid, start, folder):
                return handle  # an old-style start, about to claim the folder
            # a handle means it was spawned: never start it again, even if its folder
            # (claim, exit status) is gone; how it ended is then unknown
            return self._outcome(launch)
        if (folder / "claim").exists():  # claimed, the pid not written (supervisor killed)
            return self._outcome(launch)
        return None

    async def aclose(self) -> None:
        """Disconnect from the supervisors; the jobs keep running, for a later agent to
        re-attach (each supervisor leaves once its last job ended)."""
        links = list(self._links.values())
        self._links.clear()
        for link in links:
            await link.aclose()

    # -- helpers ------------------------------------------------------------------------

    async def _link(self, workdir: Path, *, start: bool) -> _Link | None:
        """The connection to ``workdir``'s supervisor; with ``start``, one is started
        when none runs (else None)."""
        link = self._links.get(workdir)
        if link is not None and not link.closed:
            return link
        pending = self._connecting.get(workdir)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[_Link | None] = asyncio.get_running_loop().create_future()
        self._connecting[workdir] = future
        try:
            link = await _Link.connect(workdir, self._env, start=start)
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                future.set_result(None)  # the others try again themselves
            else:
                future.set_exception(exc)
                future.exception()  # retrieved: the others get it themselves
            raise
        finally:
            del self._connecting[workdir]
        future.set_result(link)
        if link is not None:
            self._links[workdir] = link
        return link

    async def _wait_other(self, pid: int, start: int, folder: Path) -> None:
        """Wait for a job that no live supervisor watches to end."""
        try:
            fd = os.pidfd_open(pid)
        except (OSError, AttributeError):
            fd = None
        if fd is not None:
            loop = asyncio.get_running_loop()
            ended = asyncio.Event()
            loop.add_reader(fd, ended.set)
            try:
                if _alive(pid, start, folder):
                    await ended.wait()
            finally:
                loop.remove_reader(fd)
                os.close(fd)
        while _alive(pid, start, folder):  # noqa: ASYNC110 - no event without pidfd
            await asyncio.sleep(self._poll_interval)

    def _outcome(self, launch: Launch, code: int | _Unread | None = "unread") -> Ended:
        folder = launch.folder
        if code == "unread":
            code = _exit_code(folder)
        assert not isinstance(code, str)
        if code == 0:
            return Ended(0, "exit 0")  # the common case: nothing else to look at
        if (folder / "cancelled").exists() and (code is None or code < 0 or code > 128):
            return Ended(None, "cancelled")
        if code is None:
            return Ended(None, "ended without recording an exit status (killed?)")
        if (folder / "timed-out").exists() and code != 0:
            return Ended(None, f"timed out after {launch.time_limit or 0:g} s")
        if code == 127:
            return Ended(code, f"exit 127 (command not found: {launch.argv[0]})")
        if code == 126:
            return Ended(code, f"exit 126 (cannot execute: {launch.argv[0]})")
        if code > 128 and (code - 128) in _SIGNALS:
            return Ended(None, f"killed by {_SIGNALS[code - 128]}")
        return Ended(code, f"exit {code}")


class _Link:
    """One connection to a workdir's supervisor: start requests out, answers and ends in.

    Ends are kept for the folders this connection started or waits on (``take_end``),
    so an end heard before anyone waits for it is not lost."""

    def __init__(
        self, workdir: Path, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pid: int
    ) -> None:
        self.workdir = workdir
        self.supervisor = pid
        self._reader = reader
        self._writer = writer
        self._answers: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._waiters: dict[str, asyncio.Future[int | None]] = {}
        self._ends: dict[str, int] = {}
        self._mine: set[str] = set()  # folders started (or claimed) through this link
        self.closed = False
        self._task = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def connect(cls, workdir: Path, env: dict[str, str], *, start: bool) -> _Link | None:
        spawned: _Spawned | None = None
        path = str(workdir / _supervisor.SOCKET)
        delay = 0.002
        for _ in range(_CONNECT_TRIES):
            try:
                reader, writer = await _open(path)
            except OSError as exc:
                if not start:
                    return None  # none runs (or none can): nothing to connect to
                if not isinstance(exc, (FileNotFoundError, ConnectionRefusedError)):
                    why = exc.strerror or exc
                    raise LaunchError(f"cannot use the workdir {workdir}: {why}") from None
                if spawned is None or spawned.exited:
                    spawned = _Spawned.start(workdir, env)
            else:
                writer.write(json.dumps({"hello": 1, "env": env}).encode() + b"\n")
                with contextlib.suppress(ConnectionError):
                    line = await reader.readline()
                    if line:
                        return cls(workdir, reader, writer, int(json.loads(line)["hello"]))
                writer.close()  # the supervisor was leaving: the next one will do
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)
        raise LaunchError(
            f"cannot reach the job supervisor of {workdir}; see {_supervisor.LOG} there"
        )

    async def start(self, launch: Launch, argv: list[str]) -> str | None:
        """The handle; None if the supervisor left before it answered (ask another)."""
        if self.closed:
            return None
        key = str(launch.folder)
        request = {
            "start": key,
            "argv": argv,
            "env": launch.environment,
            "limit": launch.time_limit,
        }
        future = asyncio.get_running_loop().create_future()
        self._answers[key] = future
        self._mine.add(key)
        self._writer.write(json.dumps(request, separators=(",", ":")).encode() + b"\n")
        try:
            answer = await future
        finally:
            self._answers.pop(key, None)
        if "refused" in answer:
            self._mine.discard(key)
            raise LaunchError(answer["why"])
        if "lost" in answer:
            return None
        handle = str(answer["handle"] or "0:0")
        if "claimed" in answer:
            # started before: its end is told here only if this supervisor runs it
            self._mine.discard(key)
            self.watches(_parse(handle)[0], launch.folder)
        return handle

    def watches(self, pid: int, folder: Path) -> bool:
        """Whether this supervisor runs the job (so it will tell its end, which is kept
        from now on for ``end_of``)."""
        key = str(folder)
        if key in self._mine:
            return True
        if _parent(pid) == self.supervisor:
            self._mine.add(key)
            return True
        return False

    def started(self, folder: Path) -> bool:
        """Whether the job of ``folder`` was started (or re-attached) through this link,
        so that its end will be told here unless the supervisor leaves first."""
        return str(folder) in self._mine and not self.closed

    def take_end(self, folder: Path) -> int | None:
        return self._ends.pop(str(folder), None)

    async def end_of(self, folder: Path) -> int | None:
        """The job's exit status when it ends; None if the supervisor left first."""
        key = str(folder)
        if key in self._ends:
            return self._ends.pop(key)
        if self.closed:
            return None
        future = self._waiters.get(key)
        if future is None:
            future = self._waiters[key] = asyncio.get_running_loop().create_future()
        try:
            return await asyncio.shield(future)
        finally:
            if future.done():
                self._waiters.pop(key, None)
                self._ends.pop(key, None)

    async def _read(self) -> None:
        try:
            while line := await self._reader.readline():
                msg = json.loads(line)
                if "ended" in msg:
                    key = msg["ended"]
                    waiter = self._waiters.pop(key, None)
                    if waiter is not None and not waiter.done():
                        waiter.set_result(msg["code"])
                    elif key in self._mine:
                        self._ends[key] = msg["code"]
                    self._mine.discard(key)
                else:
                    key = msg.get("started") or msg.get("claimed") or msg.get("refused")
                    future = self._answers.get(key)
                    if future is not None and not future.done():
                        future.set_result(msg)
        except (ConnectionError, ValueError):
            pass
        finally:
            self._lost()

    def _lost(self) -> None:
        self.closed = True
        for future in self._answers.values():
            if not future.done():
                future.set_result({"lost": True})
        for waiter in self._waiters.values():
            if not waiter.done():
                waiter.set_result(None)
        self._writer.close()

    async def aclose(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        if not self.closed:  # cancelled before it ever ran
            self._lost()
        with contextlib.suppress(ConnectionError):
            await self._writer.wait_closed()


async def _open(path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect to a Unix socket at ``path``, however long (``sun_path`` holds 107 bytes:
    a longer path is reached through ``/proc/self/fd`` and the folder's descriptor)."""
    if len(os.fsencode(path)) < 100:
        return await asyncio.open_unix_connection(path, limit=1 << 20)
    folder, name = os.path.split(path)
    fd = os.open(folder, os.O_PATH)
    try:
        return await asyncio.open_unix_connection(f"/proc/self/fd/{fd}/{name}", limit=1 << 20)
    finally:
        os.close(fd)


class _Spawned:
    """A supervisor this process started, reaped when it exits (it exits at once when
    another supervisor already serves the workdir)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.exited = False
        self._loop = asyncio.get_running_loop()
        try:
            self._fd: int | None = os.pidfd_open(pid)
        except (OSError, AttributeError):
            self._fd = None
            self._loop.call_later(0.05, self._reap)
        else:
            self._loop.add_reader(self._fd, self._reap)

    @classmethod
    def start(cls, workdir: Path, env: dict[str, str]) -> _Spawned:
        log = str(workdir / _supervisor.LOG)
        try:
            pid = os.posix_spawn(
                sys.executable,
                [sys.executable, "-I", _supervisor.__file__, str(workdir)],
                env,
                file_actions=[
                    (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                    (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
                    (os.POSIX_SPAWN_OPEN, 2, log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600),
                ],
                setsid=True,
            )
        except OSError as exc:
            raise LaunchError(f"cannot use the workdir {workdir}: {exc.strerror or exc}") from None
        return cls(pid)

    def _reap(self) -> None:
        try:
            pid, _ = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            pid = self.pid
        if pid == 0:
            if self._fd is None:
                self._loop.call_later(0.05, self._reap)
            return
        self.exited = True
        if self._fd is not None:
            self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = None


def _parse(handle: str) -> tuple[int, int]:
    pid, _, start = handle.partition(":")
    try:
        return int(pid), int(start or 0)
    except ValueError:
        return 0, 0


_start_time = _supervisor.start_time


def _parent(pid: int) -> int | None:
    fields = _supervisor.stat_fields(pid)
    return None if fields is None else int(fields[1])


def _alive(pid: int, start: int, folder: Path) -> bool:
    """Whether the job of ``folder`` is still running as ``pid``.

    With its start time known (``start``), a match is proof enough: a reused pid has
    another. Without it (a claim written by an older version, whose wrapper's arguments
    name the folder), the process's arguments must name the folder (they are empty for a
    moment around an exec, so an empty answer is asked again)."""
    if pid <= 0:
        return False
    now = _start_time(pid)
    if now is None or (start and now != start):
        return False
    if start:
        return True
    for _ in range(50):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return False
        if cmdline:
            return os.fsencode(str(folder)) in cmdline.split(b"\0")
        time.sleep(0.001)
    return False


def _claim(folder: Path) -> list[str] | None:
    """The lines of the folder's claim (complete lines only), None without one."""
    try:
        text = (folder / "claim").read_text()
    except OSError:
        return None
    return text.split("\n")[:-1]


def _claimant(folder: Path) -> tuple[int, int] | None:
    """The pid and start time the folder's claim names (start 0 when it names none);
    None without a claim, or with one whose pid was never written."""
    lines = _claim(folder)
    if not lines:
        return None
    pid, start = _parse(lines[0].strip())
    return (pid, start) if pid > 0 else None


def _exit_code(folder: Path) -> int | None:
    """The job's exit status: the claim's ``exit N`` line (or the ``exit`` file an
    older version wrote); None while it runs or when nobody recorded it."""
    for line in (_claim(folder) or [])[1:]:
        word, _, code = line.partition(" ")
        if word == "exit" and code.isdigit():
            return int(code)
    try:
        text = (folder / "exit").read_text()
    except OSError:
        return None
    if not text.endswith("\n") or not text.strip().isdigit():
        return None
    return int(text)


def _kill_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
