"""The job supervisor: one long-lived process per workdir that starts and reaps local jobs.

The local executor does not start jobs itself: an agent that is killed would take its
children's exit statuses with it. It asks this process instead, over a Unix socket in
the workdir (``.supervisor.sock``, mode 0600, peers of another uid refused). The
supervisor runs in a session of its own, so it outlives the agent that started it; a
restarted agent connects to the same supervisor and hears how its jobs end.

For each job (``{"start": FOLDER, "argv": [...], "env": {...}, "limit": SECONDS}``):

1. it makes the folder if needed and claims it by creating ``claim`` exclusively
   (O_CREAT|O_EXCL). If the file exists, the job was started before (by this supervisor
   or an earlier one) and is not started again: the answer is ``claimed`` with what the
   file says. This is what makes "started twice" impossible, whatever moment an agent is
   killed at;
2. it starts the program (``argv[0]`` is a path: the agent resolved it on ``PATH``) in
   the folder, in a session of its own, stdin from /dev/null, stdout and stderr to
   ``stdout`` and ``stderr`` there, with the connection's environment plus the job's
   variables; then writes ``PID:START`` (pid and start time in clock ticks, so a reused
   pid is never taken for the job) as the claim's first line, and answers ``started``;
3. with a time limit it sends SIGTERM to the job's session at the limit (SIGKILL
   ``KILL_AFTER`` seconds later) and leaves a ``timed-out`` marker;
4. when the job ends it appends ``exit N`` (and a newline) to the claim, N as a shell
   reports it (128 + S for a job killed by signal S), and tells every connected agent
   ``{"ended": FOLDER, "code": N}``.

A job costs its folder and three files (claim, stdout, stderr): file creation is what
limits how many short jobs a second a busy file system allows.

The process exits when it has no job running and no agent connected; it holds an
exclusive lock on ``.supervisor.lock`` while it lives, so a workdir never has two.
Messages are JSON, one per line. This file imports nothing but the standard library: it
runs as ``python -I _supervisor.py WORKDIR``, without the package.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import heapq
import json
import os
import selectors
import signal
import socket
import struct
import sys
import time
from typing import Any, Final

SOCKET: Final = ".supervisor.sock"
LOCK: Final = ".supervisor.lock"
LOG: Final = ".supervisor.log"
KILL_AFTER: Final = 5.0
"""Seconds between SIGTERM and SIGKILL for a job over its time limit."""
FIRST_CLIENT_WAIT: Final = 10.0
"""Seconds a new supervisor waits for its first agent before it gives up and exits."""

_SPAWN_FLAGS: Final = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
_DEVNULL: Final = os.devnull


def stat_fields(pid: int) -> list[bytes] | None:
    """The fields of ``/proc/PID/stat`` after the command name (state first, then the
    parent's pid...); None if the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.rfind(b")") + 2 :].split()


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot; None if it is gone or a
    zombie (it ended, nobody reaped it yet)."""
    fields = stat_fields(pid)
    if fields is None or fields[0] == b"Z":
        return None
    return int(fields[19])


def exit_status(wait_status: int) -> int:
    """A wait status as a shell reports it: the exit code, or 128 + the signal."""
    code = os.waitstatus_to_exitcode(wait_status)
    return code if code >= 0 else 128 - code


class _Client:
    __slots__ = ("env", "inbox", "outbox", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.inbox = b""
        self.outbox = bytearray()
        self.env: dict[str, str] | None = None  # from the hello


class _Job:
    __slots__ = ("folder", "pid")

    def __init__(self, folder: str, pid: int) -> None:
        self.folder = folder
        self.pid = pid


class Supervisor:
    def __init__(self, workdir: str, listener: socket.socket) -> None:
        self.workdir = workdir
        self.listener = listener
        self.selector = selectors.DefaultSelector()
        self.clients: dict[socket.socket, _Client] = {}
        self.jobs: dict[int, _Job] = {}  # by pid
        self.deadlines: list[tuple[float, int, int, str]] = []  # (when, pid, signal, folder)
        self.had_client = False
        self.born = time.monotonic()
        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        self.wake = wake_r
        self._wake_w = wake_w  # kept open: SIGCHLD writes to it
        signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        # the agent's terminal signals are not ours: only a direct kill stops this process
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        self.selector.register(listener, selectors.EVENT_READ)
        self.selector.register(wake_r, selectors.EVENT_READ)

    # -- the loop -----------------------------------------------------------------------

    def serve(self) -> None:
        self.reap()
        while not self.finished():
            timeout = self.next_timeout()
            for key, events in self.selector.select(timeout):
                sock = key.fileobj
                if sock is self.listener:
                    self.accept()
                elif sock is self.wake:
                    with contextlib.suppress(BlockingIOError):
                        while self.wake.recv(4096):
                            pass
                    self.reap()
                else:
                    assert isinstance(sock, socket.socket)
                    client = self.clients.get(sock)
                    if client is None:
                        continue
                    if events & selectors.EVENT_READ:
                        self.read(client)
                    if events & selectors.EVENT_WRITE and sock in self.clients:
                        self.flush(client)
            self.reap()
            self.expire()

    def finished(self) -> bool:
        if self.jobs or self.clients:
            return False
        return self.had_client or time.monotonic() - self.born > FIRST_CLIENT_WAIT

    def next_timeout(self) -> float | None:
        waits = []
        if self.deadlines:
            waits.append(self.deadlines[0][0] - time.monotonic())
        if not self.had_client:
            waits.append(self.born + FIRST_CLIENT_WAIT - time.monotonic())
        return max(0.0, min(waits)) if waits else None

    # -- agents -------------------------------------------------------------------------

    def accept(self) -> None:
        try:
            sock, _ = self.listener.accept()
        except OSError:
            return
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _, uid, _ = struct.unpack("3i", creds)
        if uid != os.getuid():
            sock.close()  # only agents of this user may start jobs as this user
            return
        sock.setblocking(False)
        self.clients[sock] = _Client(sock)
        self.selector.register(sock, selectors.EVENT_READ)
        self.had_client = True

    def read(self, client: _Client) -> None:
        try:
            data = client.sock.recv(262144)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.drop(client)
            return
        client.inbox += data
        *lines, client.inbox = client.inbox.split(b"\n")
        for line in lines:
            if not line:
                continue
            try:
                self.handle(client, json.loads(line))
            except (ValueError, KeyError, TypeError, IndexError, AttributeError):
                # not a message of this protocol: that peer is dropped, the others served
                self.drop(client)
                return
        self.flush(client)

    def handle(self, client: _Client, msg: dict[str, Any]) -> None:
        if "hello" in msg:
            client.env = msg["env"]
            self.send(client, {"hello": os.getpid()})
        elif "start" in msg:
            self.send(client, self.start(client, msg))

    def send(self, client: _Client, msg: dict[str, Any]) -> None:
        client.outbox += json.dumps(msg, separators=(",", ":")).encode() + b"\n"

    def broadcast(self, msg: dict[str, Any]) -> None:
        line = json.dumps(msg, separators=(",", ":")).encode() + b"\n"
        for client in self.clients.values():
            client.outbox += line

    def flush(self, client: _Client) -> None:
        if client.outbox:
            try:
                sent = client.sock.send(client.outbox)
            except BlockingIOError:
                sent = 0
            except OSError:
                self.drop(client)
                return
            del client.outbox[:sent]
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if client.outbox else 0)
        self.selector.modify(client.sock, events)

    def flush_all(self) -> None:
        for client in list(self.clients.values()):
            if client.outbox:
                self.flush(client)

    def drop(self, client: _Client) -> None:
        self.selector.unregister(client.sock)
        del self.clients[client.sock]
        client.sock.close()

    # -- jobs ---------------------------------------------------------------------------

    def start(self, client: _Client, msg: dict[str, Any]) -> dict[str, Any]:
        folder: str = msg["start"]
        argv: list[str] = msg["argv"]
        try:
            with contextlib.suppress(FileExistsError):
                os.mkdir(folder)
            claim = os.open(f"{folder}/claim", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return {"claimed": folder, "handle": _read_claim(folder)}
        except OSError as exc:
            why = f"cannot write the job folder {folder}: {exc.strerror}"
            return {"refused": folder, "why": why}
        env = {**(client.env or {}), **msg["env"]}
        try:
            os.chdir(folder)  # the job's working directory (no cwd= for posix_spawn)
            pid = os.posix_spawn(
                argv[0],
                argv,
                env,
                file_actions=[
                    (os.POSIX_SPAWN_OPEN, 0, _DEVNULL, os.O_RDONLY, 0),
                    (os.POSIX_SPAWN_OPEN, 1, "stdout", _SPAWN_FLAGS, 0o644),
                    (os.POSIX_SPAWN_OPEN, 2, "stderr", _SPAWN_FLAGS, 0o644),
                ],
                setsid=True,
            )
        except OSError as exc:
            # as a shell says it: 127 not found, 126 found but cannot be run
            code = 127 if exc.errno in (errno.ENOENT, errno.ENOTDIR) else 126
            os.write(claim, b"0:0\nexit %d\n" % code)
            os.close(claim)
            self.broadcast({"ended": folder, "code": code})
            return {"started": folder, "handle": "0:0"}
        finally:
            with contextlib.suppress(OSError):
                os.chdir(self.workdir)
        handle = f"{pid}:{start_time(pid) or 0}"
        os.write(claim, handle.encode() + b"\n")
        os.close(claim)
        self.jobs[pid] = _Job(folder, pid)
        limit = msg.get("limit")
        if limit is not None:
            heapq.heappush(
                self.deadlines, (time.monotonic() + float(limit), pid, signal.SIGTERM, folder)
            )
        return {"started": folder, "handle": handle}

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            job = self.jobs.pop(pid, None)
            if job is None:
                continue
            code = exit_status(status)
            _write_exit(job.folder, code)
            self.broadcast({"ended": job.folder, "code": code})
        self.flush_all()

    def expire(self) -> None:
        now = time.monotonic()
        while self.deadlines and self.deadlines[0][0] <= now:
            _, pid, sig, folder = heapq.heappop(self.deadlines)
            job = self.jobs.get(pid)
            if job is None or job.folder != folder:
                continue  # ended (and the pid maybe reused): nothing to do
            if sig == signal.SIGTERM:
                with contextlib.suppress(OSError):
                    os.close(os.open(f"{folder}/timed-out", os.O_WRONLY | os.O_CREAT, 0o644))
                heapq.heappush(self.deadlines, (now + KILL_AFTER, pid, signal.SIGKILL, folder))
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, sig)


def _read_claim(folder: str) -> str:
    try:
        with open(f"{folder}/claim") as f:
            return f.readline().strip()
    except OSError:
        return ""


def _write_exit(folder: str, code: int) -> None:
    try:
        fd = os.open(f"{folder}/claim", os.O_WRONLY | os.O_APPEND)
    except OSError:
        return  # the folder is gone: how the job ended is told to the agents only
    try:
        os.write(fd, b"exit %d\n" % code)
    finally:
        os.close(fd)


def main(argv: list[str]) -> int:
    """``python -I _supervisor.py WORKDIR``: serve WORKDIR; 0 also when another
    supervisor already does."""
    workdir = os.path.abspath(argv[1])
    os.chdir(workdir)  # the socket is bound by a relative name: any workdir length fits
    lock = os.open(LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return 0  # another supervisor serves this workdir: agents connect to it
    with contextlib.suppress(FileNotFoundError):
        os.unlink(SOCKET)  # left by a supervisor that was killed
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o077)
    try:
        listener.bind(SOCKET)
    finally:
        os.umask(old)
    listener.listen(128)
    listener.setblocking(False)
    try:
        Supervisor(workdir, listener).serve()
    finally:
        # no new agent may connect to a supervisor that is leaving
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(workdir, SOCKET))
        listener.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
