"""The Go rainbow server as a real child process, for the compatibility suite.

    server = GoServer(binary, tmp_path)         # binary: a build of the Go server
    server.start()                              # 127.0.0.1, a port the kernel picks
    RainbowClient(server.address) ...
    server.stored_jobs()                        # every job row it ever inserted
    server.waiting_jobs("alpha")                # alpha's rows still in its jobs table
    await server.wait_drained(within=30)        # until no job waits (or the time is up)
    with server.write_lock(): ...               # hold SQLite's write lock meanwhile
    server.stop()                               # SIGTERM to this PID only, then wait

The server logs every SQL statement (tokens and secrets included), so its output goes
to a file in the work folder, never to a pipe that might fill up or into a test's
report. It has no signal handler: SIGTERM ends it at once, and ``stop()`` signals only
the process this object started.

**What it really stored.** The Go server can answer SUBMIT_SUCCESS for a job it never
wrote. To know the truth, ``start()`` adds to the server's own database (which the
server creates with its own schema before it listens) a table ``stored_jobs`` and a
trigger that copies every row inserted into ``jobs`` there, in the same transaction as
the insert. Accepting deletes from ``jobs`` and leaves ``stored_jobs`` alone, so
``stored_jobs()`` lists every job the server really stored, whatever it answered.

**Locks on demand.** The server opens its SQLite file afresh for each call and waits up
to 5 s (the driver's busy timeout) for a lock. ``write_lock("immediate")`` holds the
write lock the way a long write would (the server can still read): its writes answer
"database is locked", except SubmitJob, which answers SUBMIT_SUCCESS and stores nothing.
``"exclusive"`` also shuts readers out: every call answers "database is locked". (Its
false "request denied" needs a lock taken in a window of microseconds inside a call, so
only load produces it.)
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import sqlite3
import subprocess
import time
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Literal

from rainbow_aio import Job

__all__ = ["GoServer", "GoServerError"]

_LISTENING = re.compile(rb"server listening: (\S+)")

_AUDIT = """
CREATE TABLE stored_jobs (
    idJob INTEGER PRIMARY KEY, cluster TEXT, name TEXT, nodes INTEGER, tasks INTEGER,
    command TEXT
);
CREATE TRIGGER copy_to_stored_jobs AFTER INSERT ON jobs BEGIN
    INSERT INTO stored_jobs VALUES
        (NEW.idJob, NEW.cluster, NEW.name, NEW.nodes, NEW.tasks, NEW.command);
END;
"""


class GoServerError(RuntimeError):
    """The Go server did not start (or stop) as expected."""


class GoServer:
    """One Go server process on 127.0.0.1, on a database file of its own in ``workdir``."""

    def __init__(self, binary: str | Path, workdir: Path, *, secret: str | None = None) -> None:
        self.binary = Path(binary)
        self.workdir = workdir
        self.db = workdir / "rainbow-go.db"
        self.log = workdir / "rainbow-go.log"
        self.secret = secret
        self.address = ""
        self._proc: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        state = f"pid={self._proc.pid}" if self.running else "stopped"
        return f"<GoServer {self.address or '-'} {state}>"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self, timeout: float = 30.0) -> None:
        """Start the server on a fresh database and wait until it listens."""
        if self._proc is not None:
            raise GoServerError("this GoServer was started already")
        self.workdir.mkdir(parents=True, exist_ok=True)
        argv = [str(self.binary), "-address", "127.0.0.1:0", "-db", str(self.db)]
        if self.secret is not None:
            argv += ["-secret", self.secret]
        with self.log.open("wb") as log:
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                start_new_session=True,  # a ^C in the terminal does not reach it
            )
        deadline = time.monotonic() + timeout
        while not self.address:
            match = _LISTENING.search(self.log.read_bytes())
            if match:
                self.address = match.group(1).decode()
            elif self._proc.poll() is not None or time.monotonic() > deadline:
                # nothing was registered yet, so the log holds no credentials
                output = self.log.read_text("utf-8", "replace")
                self.stop()
                raise GoServerError(f"the Go server did not start listening:\n{output}")
            else:
                time.sleep(0.02)
        # the server created its schema before listening; add the audit trail to it
        with contextlib.closing(self._connect()) as conn:
            conn.executescript(_AUDIT)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM the process started here (SIGKILL if it lingers); its exit status."""
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        return proc.returncode

    def __enter__(self) -> GoServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # the database, read beside the running server

    def _connect(self) -> sqlite3.Connection:
        # a generous busy timeout: the server may hold the lock for a while under load
        return sqlite3.connect(self.db, timeout=60.0, isolation_level=None)

    def _jobs(self, table: Literal["jobs", "stored_jobs"], cluster: str | None) -> list[Job]:
        query = f"SELECT idJob, cluster, name, nodes, tasks, command FROM {table}"
        args: tuple[str, ...] = ()
        if cluster is not None:
            query += " WHERE cluster = ?"
            args = (cluster,)
        with contextlib.closing(self._connect()) as conn:
            rows = conn.execute(query + " ORDER BY idJob", args).fetchall()
        # the rows, as the client would list them
        return [Job(*row) for row in rows]

    def stored_jobs(self, cluster: str | None = None) -> list[Job]:
        """Every job the server ever inserted (of ``cluster``, or of all), accepted or
        not, lowest id first."""
        return self._jobs("stored_jobs", cluster)

    def waiting_jobs(self, cluster: str | None = None) -> list[Job]:
        """The jobs still in the server's queue (not accepted yet), lowest id first."""
        return self._jobs("jobs", cluster)

    async def wait_drained(
        self, within: float, *, clusters: Collection[str] | None = None, every: float = 0.2
    ) -> list[Job]:
        """Wait until no job waits (for ``clusters``, or for any), reading the database
        every ``every`` seconds, for at most ``within`` seconds; returns the jobs still
        waiting at the end (none: drained)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            left = await asyncio.to_thread(self.waiting_jobs)
            if clusters is not None:
                left = [job for job in left if job.cluster in clusters]
            if not left or loop.time() > deadline:
                return left
            await asyncio.sleep(every)

    def cluster_names(self) -> list[str]:
        with contextlib.closing(self._connect()) as conn:
            return [row[0] for row in conn.execute("SELECT name FROM clusters ORDER BY name")]

    @contextlib.contextmanager
    def write_lock(self, kind: Literal["immediate", "exclusive"] = "immediate") -> Iterator[None]:
        """Hold SQLite's write lock on the server's database for the ``with`` block.

        ``"immediate"`` takes the RESERVED lock: the server can still read, but each of
        its writes waits 5 s and then fails. ``"exclusive"`` shuts out its reads too.
        Nothing is written: the transaction is rolled back at the end.
        """
        conn = self._connect()
        try:
            conn.execute(f"BEGIN {kind.upper()}")
            try:
                yield
            finally:
                conn.execute("ROLLBACK")
        finally:
            conn.close()
