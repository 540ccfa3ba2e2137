"""The local executor: each job a subprocess in its own session, on this machine.

A job is started through a small ``/bin/sh`` wrapper (``WRAPPER`` below), never through a
shell of the job's own: the command's words (``shlex.split``) are passed as the wrapper's
arguments and run as ``"$@"``. The wrapper, in its own session so that it outlives the
agent:

1. claims the job's folder by creating ``claim`` exclusively (``set -C``: O_CREAT|O_EXCL)
   and writing its pid there; if the file exists, another wrapper already runs this job
   and it exits 75 without running anything. This is what makes "started twice"
   impossible, whatever moment the agent is killed at: a restarted agent that starts the
   job again gets a wrapper that refuses, and it waits for the first one instead;
2. runs the command in the folder (a program named without a ``/`` by the path the
   agent found it at on ``PATH``, so that a name such as ``true`` or ``echo`` runs the
   program and never the shell's builtin of that name), stdout and stderr to
   ``stdout`` and ``stderr`` there, with the job's environment (``RAINBOW_JOB_ID``,
   ``RAINBOW_CLUSTER``, ``RAINBOW_NODES``, ``RAINBOW_TASKS``, ``RAINBOW_JOB_DIR``) and
   none of the agent's credentials;
3. with a time limit, a watchdog sends SIGTERM at the limit (SIGKILL 5 s later) and
   leaves a ``timed-out`` marker;
4. writes the exit status to ``exit`` (one line, ending in a newline: a line without one
   was cut short and counts as missing).

The handle is ``"PID:START"``: the wrapper's pid and its start time in clock ticks
(``/proc/PID/stat``), so a reused pid is never mistaken for the job.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Final, Literal

from ._executor import Ended, Launch, LaunchError, job_environment

__all__ = ["WRAPPER", "LocalExecutor"]

CLAIMED_BY_ANOTHER: Final = 75
CANNOT_CLAIM: Final = 73
CANNOT_ENTER: Final = 70
_Unread = Literal["unread"]

WRAPPER: Final = r"""
d=$1; limit=$2; shift 2
cd "$d" 2>/dev/null || exit 70
set -C
if ! echo $$ 2>/dev/null >"$d/claim"; then [ -e "$d/claim" ] && exit 75; exit 73; fi
set +C
if [ "$limit" = - ]; then
  "$@" >"$d/stdout" 2>"$d/stderr" </dev/null
  rc=$?
else
  "$@" >"$d/stdout" 2>"$d/stderr" </dev/null &
  child=$!
  (
    s=
    trap 'if [ -n "$s" ]; then kill $s 2>/dev/null; wait $s; fi; exit 0' TERM
    sleep "$limit" & s=$!
    wait $s
    : >"$d/timed-out"
    kill -TERM $child 2>/dev/null
    sleep 5 & s=$!
    wait $s
    kill -KILL $child 2>/dev/null
  ) </dev/null >/dev/null 2>&1 &
  watchdog=$!
  wait $child
  rc=$?
  kill -TERM $watchdog 2>/dev/null
  wait $watchdog
fi
echo $rc >"$d/exit"
"""

_SIGNALS: Final = {int(s): s.name for s in signal.Signals}


class LocalExecutor:
    """Runs each job as a local subprocess in its own session (see the module's text).

    ``cancel_grace``: seconds between SIGTERM and SIGKILL when a job is cancelled.
    ``poll_interval``: how often a re-attached job (not this process's child) is checked
    when the system cannot notify its end (no ``pidfd``).
    """

    name = "local"

    def __init__(
        self,
        *,
        shell: str = "/bin/sh",
        cancel_grace: float = 5.0,
        poll_interval: float = 0.2,
    ) -> None:
        self._shell = shell
        self._cancel_grace = cancel_grace
        self._poll_interval = poll_interval
        self._children: dict[str, _Child] = {}
        # spawns run here: posix_spawn returns only once the child has exec'd, which on
        # a busy machine is milliseconds the event loop should not wait
        self._spawner = concurrent.futures.ThreadPoolExecutor(
            2, thread_name_prefix="rainbow-agent-spawn"
        )
        self._found: dict[str, str] = {}  # programs found on PATH before: their paths
        self._env = job_environment()

    async def free_nodes(self) -> int | None:
        """None: the agent counts nodes itself (``nodes`` / ``--nodes``)."""
        return None

    async def start(self, launch: Launch) -> str:
        """Check the command exists and the folder is writable (:class:`LaunchError`
        otherwise), then spawn the wrapper in its own session; the handle is
        ``"PID:START"``."""
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
        # the program by its path: a bare name that is also a shell builtin (true, echo,
        # printf, kill, test...) would run as the wrapper's builtin, not as the program
        command = [self._found.get(program, program), *launch.argv[1:]]
        limit = "-" if launch.time_limit is None else f"{launch.time_limit:g}"
        env = {**self._env, **launch.environment}
        argv = [self._shell, "-c", WRAPPER, "rainbow-job", str(launch.folder), limit]
        loop = asyncio.get_running_loop()
        try:
            pid, start = await loop.run_in_executor(
                self._spawner, _spawn, self._shell, [*argv, *command], env
            )
        except OSError as exc:
            raise LaunchError(f"cannot start the job: {exc.strerror or exc}") from None
        handle = f"{pid}:{start}"
        self._children[handle] = _Child(pid, self._poll_interval)
        return handle

    async def wait(self, launch: Launch, handle: str) -> Ended:
        """Wait for the wrapper (or, when another claimed the folder first, for that
        one) and read how the job ended from its folder."""
        child = self._children.get(handle)
        if child is not None:
            try:
                await child.wait()
            finally:
                if child.done:
                    self._children.pop(handle, None)
        else:
            pid, start = _parse(handle)
            if _alive(pid, start, launch.folder):
                await self._wait_other(launch, pid)
        code = _exit_code(launch.folder)
        if code is None:
            if child is not None and child.status in (CANNOT_CLAIM, CANNOT_ENTER):
                return Ended(None, f"cannot write the job folder {launch.folder}")
            # this wrapper found the folder claimed (exit 75): a wrapper started before,
            # by an agent that died, runs the job; wait for that one
            winner = _claimant(launch.folder)
            if winner is not None and _alive(winner, 0, launch.folder):
                await self._wait_other(launch, winner)
            code = _exit_code(launch.folder)
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
        """From the folder: its exit file (ended), its claim and a live wrapper (running:
        the handle), or neither (never started: None)."""
        folder = launch.folder
        if _exit_code(folder) is not None:
            return self._outcome(launch)
        claim = _claimant(folder)
        if claim is not None:
            start = _parse(handle)[1] if handle and _parse(handle)[0] == claim else 0
            if _alive(claim, start, folder):
                return f"{claim}:{start or _start_time(claim) or 0}"
            return self._outcome(launch)
        if handle is not None:
            pid, start = _parse(handle)
            if _alive(pid, start, folder):
                return handle  # spawned, about to claim the folder
            # a handle means it was spawned: never start it again, even if its folder
            # (claim, exit status) is gone; how it ended is then unknown
            return self._outcome(launch)
        if (folder / "claim").exists():  # claimed, the pid not written yet
            return self._outcome(launch)
        return None

    async def aclose(self) -> None:
        """Stop watching the jobs; they keep running, for a later agent to re-attach."""
        for child in self._children.values():
            child.close()  # the jobs keep running; a later agent re-attaches
        self._children.clear()
        self._spawner.shutdown(wait=False)

    # -- helpers ------------------------------------------------------------------------

    async def _wait_other(self, launch: Launch, pid: int) -> None:
        """Wait for a process that is not our child (re-attached) to end."""
        start = _start_time(pid) or 0
        try:
            fd = os.pidfd_open(pid)
        except (OSError, AttributeError):
            fd = None
        if fd is not None:
            loop = asyncio.get_running_loop()
            ended = asyncio.Event()
            loop.add_reader(fd, ended.set)
            try:
                if _alive(pid, start, launch.folder):
                    await ended.wait()
            finally:
                loop.remove_reader(fd)
                os.close(fd)
        while _alive(pid, start, launch.folder):  # noqa: ASYNC110 - no event without pidfd
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


_NULL_STDIO: Final = [
    (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
    (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
    (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0),
]


def _spawn(shell: str, argv: list[str], env: dict[str, str]) -> tuple[int, int]:
    """Start the wrapper (posix_spawn: as fast whatever the agent's size, no thread per
    child) in a session of its own; its pid and start time."""
    pid = os.posix_spawn(shell, argv, env, file_actions=_NULL_STDIO, setsid=True)
    return pid, _start_time(pid) or 0


class _Child:
    """A wrapper this process started: reaped when it ends (pidfd, or polling)."""

    def __init__(self, pid: int, poll_interval: float) -> None:
        self.pid = pid
        self.status: int | None = None
        self._poll_interval = poll_interval
        self._ended = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._fd: int | None = None
        try:
            self._fd = os.pidfd_open(pid)
        except (OSError, AttributeError):
            self._poller: asyncio.Task[None] | None = self._loop.create_task(self._poll())
        else:
            self._poller = None
            self._loop.add_reader(self._fd, self._reap)

    @property
    def done(self) -> bool:
        return self._ended.is_set()

    async def wait(self) -> int | None:
        await self._ended.wait()
        return self.status

    def _reap(self) -> None:
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:  # reaped by someone else: the folder says how it ended
            pid, status = self.pid, 0
        if pid == 0:
            return  # not yet
        self.status = os.waitstatus_to_exitcode(status)
        self.close()
        self._ended.set()

    async def _poll(self) -> None:
        while not self._ended.is_set():
            self._reap()
            if not self._ended.is_set():
                await asyncio.sleep(self._poll_interval)

    def close(self) -> None:
        if self._fd is not None:
            self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = None
        if self._poller is not None and self._poller is not asyncio.current_task():
            self._poller.cancel()
            self._poller = None


def _parse(handle: str) -> tuple[int, int]:
    pid, _, start = handle.partition(":")
    try:
        return int(pid), int(start or 0)
    except ValueError:
        return 0, 0


def _start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2 :].split()
    if fields[0] == b"Z":
        return None  # a zombie: it ended, nobody reaped it yet
    return int(fields[19])


def _alive(pid: int, start: int, folder: Path) -> bool:
    """Whether the wrapper of the job in ``folder`` is still running as ``pid``.

    With its start time known (``start``), a match is proof enough: a reused pid has
    another. Without it, the process's arguments must name the folder (they are empty
    for a moment around an exec, so an empty answer is asked again)."""
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


def _claimant(folder: Path) -> int | None:
    try:
        text = (folder / "claim").read_text()
    except OSError:
        return None
    text = text.strip()
    return int(text) if text.isdigit() else None


def _exit_code(folder: Path) -> int | None:
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
