"""The agent's journal: one SQLite file (WAL) that says where every accepted job stands.

This module is the only one that touches the file. An agent opens it with
:meth:`Journal.open`, which takes an exclusive lock (``fcntl.flock`` on ``FILE.lock``,
held until :meth:`Journal.close`): a second agent on the same journal is refused with
:class:`JournalLockedError`, naming the file and the holder's pid. ``agent status`` opens
it with :meth:`Journal.read`, without the lock (WAL lets it read while the agent writes).

A file that is not a journal, or fails SQLite's integrity check, is
:class:`JournalCorruptError` naming the file: never reset, never overwritten.

What a row holds: the job as the server listed it (JSON), its state, the executor and its
handle, times (Unix seconds), exit code and reason. Never a token or a secret: the agent
never gives them to the journal.
"""

from __future__ import annotations

import contextlib
import enum
import fcntl
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from .._exceptions import RainbowError
from .._models import Job

__all__ = [
    "JobRecord",
    "JobStateName",
    "Journal",
    "JournalCorruptError",
    "JournalError",
    "JournalLockedError",
]

SCHEMA_VERSION: Final = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    cluster TEXT NOT NULL,
    id INTEGER NOT NULL,
    state TEXT NOT NULL,
    job TEXT NOT NULL,
    nodes INTEGER NOT NULL,
    command TEXT NOT NULL,
    executor TEXT,
    handle TEXT,
    exit_code INTEGER,
    reason TEXT,
    created REAL NOT NULL,
    accepted REAL,
    started REAL,
    ended REAL,
    updated REAL NOT NULL,
    PRIMARY KEY (cluster, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state);
"""

_COLUMNS: Final = (
    "cluster, id, state, job, nodes, command, executor, handle, exit_code, reason, "
    "created, accepted, started, ended, updated"
)


class JobStateName(enum.StrEnum):
    """Where an accepted (or refused) job stands in the journal.

    ``accepting → accepted → running → finished | failed | interrupted``; an intent whose
    job was not taken becomes ``not_taken`` (the row is kept for the record), one whose
    outcome cannot be known ``uncertain``. ``refused``: a job this agent can never run
    (more nodes than it has, or fewer than 1): left on the server, reported once.
    """

    ACCEPTING = "accepting"
    """The intent: AcceptJobs is about to be sent, or was sent and not answered."""
    ACCEPTED = "accepted"
    """This agent owns the job; it has not been started yet."""
    RUNNING = "running"
    """Started (or being started: the executor's trace decides on a restart)."""
    FINISHED = "finished"
    """Ended with exit code 0."""
    FAILED = "failed"
    """Could not start, exited non-zero, was killed or timed out (see ``reason``)."""
    INTERRUPTED = "interrupted"
    """Cancelled by the agent (``--cancel-on-stop``) or by a request."""
    NOT_TAKEN = "not_taken"
    """The intent did not take the job: it is still on the server (or someone else has it)."""
    UNCERTAIN = "uncertain"
    """The accept may or may not have taken the job; not run (shared accept mode)."""
    REFUSED = "refused"
    """Never accepted: the job can never fit this agent (reported once)."""

    @property
    def terminal(self) -> bool:
        """No more transitions follow."""
        return self in _TERMINAL

    @property
    def owned(self) -> bool:
        """The agent holds the server's only copy of this job and must see it through."""
        return self in (JobStateName.ACCEPTED, JobStateName.RUNNING)


_TERMINAL: Final = frozenset(
    {
        JobStateName.FINISHED,
        JobStateName.FAILED,
        JobStateName.INTERRUPTED,
        JobStateName.NOT_TAKEN,
        JobStateName.REFUSED,
    }
)


class JournalError(RainbowError):
    """The journal cannot be used (see the subclasses)."""


class JournalLockedError(JournalError):
    """Another agent holds the journal (the message names the file and its pid)."""


class JournalCorruptError(JournalError):
    """The file is not a journal, or SQLite found it damaged (the message names it)."""


@dataclass(frozen=True, slots=True)
class JobRecord:
    """One job in the journal. Times are Unix seconds (None: not reached)."""

    cluster: str
    id: int
    state: JobStateName
    job: Job
    executor: str | None
    handle: str | None
    exit_code: int | None
    reason: str | None
    created: float
    accepted: float | None
    started: float | None
    ended: float | None
    updated: float

    @property
    def command(self) -> str:
        """The job's command, as submitted."""
        return self.job.command

    @property
    def nodes(self) -> int:
        """The nodes the job asked for."""
        return self.job.nodes

    @property
    def duration(self) -> float | None:
        """Seconds from start to end (to now while running), None if never started."""
        if self.started is None:
            return None
        end = self.ended if self.ended is not None else time.time()
        return max(0.0, end - self.started)

    def as_dict(self) -> dict[str, object]:
        """The record as JSON-ready values (``agent status --json``)."""
        return {
            "id": self.id,
            "cluster": self.cluster,
            "name": self.job.name,
            "state": self.state.value,
            "exit_code": self.exit_code,
            "reason": self.reason,
            "command": self.command,
            "nodes": self.job.nodes,
            "tasks": self.job.tasks,
            "executor": self.executor,
            "handle": self.handle,
            "created": self.created,
            "accepted": self.accepted,
            "started": self.started,
            "ended": self.ended,
            "duration": self.duration,
        }


Sync = Literal["full", "normal"]


class Journal:
    """The journal file. Open it with :meth:`open` (an agent) or :meth:`read` (a reader).

    Every write is one transaction, committed before the method returns: with
    ``sync="full"`` (the default) it survives a power cut, with ``"normal"`` a crash of
    the process (kill -9) but maybe not of the machine.
    """

    def __init__(
        self, path: Path, db: sqlite3.Connection, lock_fd: int | None, *, readonly: bool
    ) -> None:
        self.path = path
        self._db = db
        self._lock_fd = lock_fd
        self._readonly = readonly
        self._deferred: list[tuple[str, tuple[object, ...]]] = []
        # writes may come from a worker thread (the agent commits off its event loop):
        # one lock per transaction, and a short one for the deferred list, so that
        # deferring a write never waits for a commit (and its fsync) in progress
        self._lock = threading.Lock()
        self._deferred_lock = threading.Lock()

    # -- opening ------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, sync: Sync = "full") -> Journal:
        """Open (or create) the journal for an agent, holding its lock until ``close``."""
        path = Path(path)
        lock_fd = _lock(path)
        try:
            db = _connect(path, readonly=False)
            try:
                _check(db, path, create=True)
                try:
                    db.execute("PRAGMA journal_mode=WAL")
                    db.execute(f"PRAGMA synchronous={sync.upper()}")
                except sqlite3.DatabaseError as exc:
                    raise JournalCorruptError(f"cannot use the journal {path}: {exc}") from None
            except BaseException:
                db.close()
                raise
        except BaseException:
            os.close(lock_fd)
            raise
        return cls(path, db, lock_fd, readonly=False)

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> Journal:
        """Open an existing journal to read it (while an agent runs, or not)."""
        path = Path(path)
        if not path.exists():
            raise JournalError(f"no journal at {path}")
        db = _connect(path, readonly=True)
        try:
            _check(db, path, create=False)
        except BaseException:
            db.close()
            raise
        return cls(path, db, None, readonly=True)

    def close(self) -> None:
        """Commit the deferred writes, close the file and let go of the lock."""
        with contextlib.suppress(JournalError):
            self.flush()
        with contextlib.suppress(sqlite3.Error):
            self._db.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading ------------------------------------------------------------------------

    def records(
        self, states: Iterable[JobStateName] | None = None, *, cluster: str | None = None
    ) -> list[JobRecord]:
        """The jobs in ``states`` (all when None), by cluster and id."""
        sql = f"SELECT {_COLUMNS} FROM jobs"
        where: list[str] = []
        args: list[object] = []
        if states is not None:
            wanted = [JobStateName(s).value for s in states]
            where.append(f"state IN ({','.join('?' * len(wanted))})")
            args.extend(wanted)
        if cluster is not None:
            where.append("cluster = ?")
            args.append(cluster)
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY cluster, id"
        try:
            rows = self._db.execute(sql, args).fetchall()
        except sqlite3.DatabaseError as exc:
            raise JournalCorruptError(f"cannot read the journal {self.path}: {exc}") from None
        return [_record(row) for row in rows]

    def get(self, cluster: str, job_id: int) -> JobRecord | None:
        """One job, or None."""
        row = self._db.execute(
            f"SELECT {_COLUMNS} FROM jobs WHERE cluster = ? AND id = ?", (cluster, job_id)
        ).fetchone()
        return None if row is None else _record(row)

    def counts(self) -> dict[JobStateName, int]:
        """How many jobs are in each state."""
        rows = self._db.execute("SELECT state, count(*) FROM jobs GROUP BY state").fetchall()
        return {JobStateName(state): n for state, n in rows}

    # -- writing (the agent) ------------------------------------------------------------

    def intend(self, jobs: Sequence[Job], cluster: str) -> None:
        """Record the intent to accept ``jobs`` (state ``accepting``), before AcceptJobs."""
        now = time.time()
        self._write(
            "INSERT INTO jobs (cluster, id, state, job, nodes, command, created, updated) "
            "VALUES (?, ?, 'accepting', ?, ?, ?, ?, ?) "
            "ON CONFLICT (cluster, id) DO UPDATE SET state = 'accepting', job = excluded.job, "
            "nodes = excluded.nodes, command = excluded.command, reason = NULL, "
            "updated = excluded.updated",
            [(cluster, j.id, j.to_json(), j.nodes, j.command, now, now) for j in jobs],
        )

    def refuse(self, job: Job, cluster: str, reason: str) -> bool:
        """Record a job that can never run here; False when it was recorded before."""
        now = time.time()
        changed = self._write(
            "INSERT INTO jobs (cluster, id, state, job, nodes, command, reason, created, "
            "updated) VALUES (?, ?, 'refused', ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (cluster, id) DO NOTHING",
            [(cluster, job.id, job.to_json(), job.nodes, job.command, reason, now, now)],
        )
        return changed > 0

    def accepted(
        self,
        cluster: str,
        ids: Iterable[int],
        *,
        reason: str | None = None,
        launching: bool = False,
    ) -> None:
        """The intents that took their jobs: this agent owns them now.

        ``launching``: they are being started at once, so they go straight to ``running``
        without a handle (a restart then asks the executor whether each one started)."""
        now = time.time()
        state = "running" if launching else "accepted"
        self._write(
            "UPDATE jobs SET state = ?, accepted = ?, updated = ?, reason = ? "
            "WHERE cluster = ? AND id = ?",
            [(state, now, now, reason, cluster, i) for i in ids],
        )

    def settle(
        self, cluster: str, ids: Iterable[int], state: JobStateName, reason: str | None
    ) -> None:
        """Intents that did not take their jobs (``not_taken``) or cannot tell (``uncertain``)."""
        now = time.time()
        self._write(
            "UPDATE jobs SET state = ?, reason = ?, updated = ? WHERE cluster = ? AND id = ?",
            [(JobStateName(state).value, reason, now, cluster, i) for i in ids],
        )

    _RUNNING = (
        "UPDATE jobs SET state = 'running', executor = ?, handle = ?, "
        "started = coalesce(started, ?), updated = ? WHERE cluster = ? AND id = ?"
    )
    _ENDED = (
        "UPDATE jobs SET state = ?, exit_code = ?, reason = ?, ended = ?, updated = ? "
        "WHERE cluster = ? AND id = ?"
    )

    def running(
        self,
        cluster: str,
        job_id: int,
        executor: str,
        handle: str | None,
        *,
        defer: bool = False,
    ) -> None:
        """The job was started (``handle`` None: being started, not known yet).

        ``defer``: written with the next write or :meth:`flush`, not now (for facts a
        restart can learn again from the executor: a handle, how a job ended)."""
        now = time.time()
        row = (executor, handle, now, now, cluster, job_id)
        if defer:
            with self._deferred_lock:
                self._deferred.append((self._RUNNING, row))
        else:
            self._write(self._RUNNING, [row])

    def note(self, cluster: str, job_id: int, reason: str) -> None:
        """Change only the reason (for example "left running at stop")."""
        self._write(
            "UPDATE jobs SET reason = ?, updated = ? WHERE cluster = ? AND id = ?",
            [(reason, time.time(), cluster, job_id)],
        )

    def ended(
        self,
        cluster: str,
        job_id: int,
        state: JobStateName,
        exit_code: int | None,
        reason: str,
        *,
        ended_at: float | None = None,
        defer: bool = False,
    ) -> None:
        """The job ended (or could not start): ``finished``, ``failed`` or ``interrupted``
        (``defer``: see :meth:`running`)."""
        now = time.time()
        row = (JobStateName(state).value, exit_code, reason, ended_at or now, now, cluster, job_id)
        if defer:
            with self._deferred_lock:
                self._deferred.append((self._ENDED, row))
        else:
            self._write(self._ENDED, [row])

    @property
    def deferred(self) -> int:
        """Writes waiting for :meth:`flush`."""
        return len(self._deferred)

    def flush(self) -> None:
        """Commit the deferred writes, in one transaction."""
        if self._deferred:
            self._write("", [])

    def _write(self, sql: str, rows: Sequence[tuple[object, ...]]) -> int:
        """One transaction: the deferred writes first (in order), then ``rows``; returns
        how many rows ``sql`` changed."""
        if self._readonly:
            raise JournalError(f"the journal {self.path} was opened read-only")
        with self._lock:
            with self._deferred_lock:
                deferred, self._deferred = self._deferred, []
            if not rows and not deferred:
                return 0
            changed = 0
            try:
                with self._db:
                    for statement, row in deferred:
                        self._db.execute(statement, row)
                    if rows:
                        changed = self._db.executemany(sql, rows).rowcount
            except sqlite3.DatabaseError as exc:
                raise JournalError(f"cannot write the journal {self.path}: {exc}") from exc
            return changed


def _lock(path: Path) -> int:
    lock_path = Path(f"{path}.lock")
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise JournalError(f"cannot open the journal's lock file {lock_path}: {exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
        os.close(fd)
        raise JournalLockedError(
            f"the journal {path} is in use by another agent (pid {holder}); "
            "stop it first, or give this agent its own --journal"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _connect(path: Path, *, readonly: bool) -> sqlite3.Connection:
    try:
        if readonly:
            db = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)
        else:
            db = sqlite3.connect(path, check_same_thread=False)
    except sqlite3.Error as exc:
        raise JournalError(f"cannot open the journal {path}: {exc}") from None
    db.execute("PRAGMA busy_timeout = 5000")
    return db


def _check(db: sqlite3.Connection, path: Path, *, create: bool) -> None:
    """Refuse a file that is not an intact journal of this version (never reset it)."""
    try:
        # one read transaction for both: read apart, an agent creating the journal
        # between the two reads would show a version without its tables
        db.execute("BEGIN")
        try:
            tables = {
                name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")
            }
            (version,) = db.execute("PRAGMA user_version").fetchone()
        finally:
            db.execute("ROLLBACK")
        if not tables and version == 0:
            if not create:
                raise JournalError(f"{path} holds no journal yet (is an agent creating it?)")
            # one transaction: a reader never sees the tables without the version
            db.executescript(
                f"BEGIN IMMEDIATE; {_SCHEMA} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
            )
            return
        (ok,) = db.execute("PRAGMA quick_check").fetchone()
    except sqlite3.DatabaseError as exc:
        raise JournalCorruptError(
            f"the journal {path} is damaged or not a journal ({exc}); it was left untouched: "
            "move it away to start with an empty one"
        ) from None
    if ok != "ok":
        raise JournalCorruptError(
            f"the journal {path} is damaged (SQLite integrity check: {ok}); it was left "
            "untouched: move it away to start with an empty one"
        )
    if version != SCHEMA_VERSION or "jobs" not in tables:
        raise JournalCorruptError(
            f"{path} is not an agent journal of version {SCHEMA_VERSION} "
            f"(user_version {version}, tables {sorted(tables)})"
        )
    columns = {row[1] for row in db.execute("PRAGMA table_info(jobs)")}
    missing = {c.strip() for c in _COLUMNS.split(",")} - columns
    if missing:
        raise JournalCorruptError(f"the journal {path} lacks columns {sorted(missing)}")


def _record(row: tuple[object, ...]) -> JobRecord:
    (cluster, job_id, state, job, _nodes, _command, executor, handle, exit_code, reason) = row[:10]
    created, accepted, started, ended, updated = row[10:]
    assert isinstance(cluster, str)
    assert isinstance(job_id, int)
    assert isinstance(job, str)
    assert isinstance(state, str)
    return JobRecord(
        cluster=cluster,
        id=job_id,
        state=JobStateName(state),
        job=Job.from_json(job_id, job, cluster=cluster),
        executor=executor,  # type: ignore[arg-type]
        handle=handle,  # type: ignore[arg-type]
        exit_code=exit_code,  # type: ignore[arg-type]
        reason=reason,  # type: ignore[arg-type]
        created=created,  # type: ignore[arg-type]
        accepted=accepted,  # type: ignore[arg-type]
        started=started,  # type: ignore[arg-type]
        ended=ended,  # type: ignore[arg-type]
        updated=updated,  # type: ignore[arg-type]
    )
