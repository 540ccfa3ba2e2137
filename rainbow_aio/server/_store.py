"""The server's SQLite store: one thread owns the connection and does every write.

Why one owner: SQLite allows one writer at a time, and the Go server's many writers
racing on one file is what produced ``database is locked``, false denials and lost jobs.
Here every statement goes through a single thread fed by a queue, so no two statements
ever compete for the lock and "locked" cannot happen by construction.

Why batches: the thread drains everything waiting in the queue (up to ``MAX_BATCH``
operations) and runs it in one transaction with one commit, so 64 submits that arrive
together cost one fsync, not 64. An operation's answer reaches the event loop only after
its transaction has committed: a caller told that its job was stored can rely on it.

Durability: a file database runs in WAL mode with ``synchronous=FULL``: every commit
fsyncs the WAL, so an answered SubmitJob survives a power cut as well as a killed
process. Batching is what keeps FULL affordable. (``NORMAL`` survives a killed process
but may lose the last commits on power loss, breaking "SUBMIT_SUCCESS means stored".)
The file is opened with an exclusive lock, so a second server on the same file fails at
start-up instead of fighting over the lock later.

Reads: the jobs waiting for each cluster are also kept in memory (:class:`JobIndex`,
loaded at start-up, changed only when a commit is delivered, in commit order), so
RequestJobs is answered without a trip to the database thread and always reflects
committed state. The cost is memory for the waiting jobs' JSON; accepted jobs leave it.

Job ids come from ``INTEGER PRIMARY KEY AUTOINCREMENT``: they keep increasing across
restarts and an accepted (deleted) id is never handed out again.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from .._gojson import encode_job

__all__ = ["ClusterCredentials", "JobIndex", "Store", "StoreError"]

log = logging.getLogger("rainbow_aio.server")

MAX_BATCH: Final = 512
MEMORY: Final = ":memory:"

_SCHEMA_CLUSTERS: Final = """
CREATE TABLE IF NOT EXISTS clusters (
    name        TEXT PRIMARY KEY NOT NULL,
    token_hash  BLOB NOT NULL,
    secret_hash BLOB NOT NULL
)"""
_SCHEMA_JOBS: Final = """
CREATE TABLE IF NOT EXISTS jobs (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    cluster TEXT NOT NULL REFERENCES clusters(name),
    name    TEXT NOT NULL,
    nodes   INTEGER NOT NULL,
    tasks   INTEGER NOT NULL,
    command TEXT NOT NULL
)"""
_SCHEMA_JOBS_INDEX: Final = "CREATE INDEX IF NOT EXISTS jobs_by_cluster ON jobs (cluster, id)"


class StoreError(Exception):
    """The database could not be opened or a statement failed; the message is safe to show."""


@dataclass(frozen=True, slots=True)
class ClusterCredentials:
    """SHA-256 digests of a cluster's token and secret (the plain values are never kept)."""

    token_hash: bytes
    secret_hash: bytes


class JobIndex:
    """The waiting jobs per cluster, as id -> Go JSON, in ascending id order.

    Ids are handed out in increasing order by the single writer and added here in commit
    order, so each cluster's dict stays sorted by insertion alone.
    """

    def __init__(self) -> None:
        self._jobs: dict[str, dict[int, str]] = {}

    def add(self, cluster: str, job_id: int, text: str) -> None:
        self._jobs.setdefault(cluster, {})[job_id] = text

    def remove(self, cluster: str, job_ids: Sequence[int]) -> None:
        jobs = self._jobs.get(cluster)
        if jobs is not None:
            for job_id in job_ids:
                jobs.pop(job_id, None)

    def waiting(self, cluster: str, limit: int) -> dict[int, str]:
        """The ``limit`` lowest-id jobs (all when ``limit <= 0``)."""
        jobs = self._jobs.get(cluster)
        if not jobs:
            return {}
        if limit <= 0 or limit >= len(jobs):
            return dict(jobs)
        return dict(itertools.islice(jobs.items(), limit))

    def __len__(self) -> int:
        return sum(len(jobs) for jobs in self._jobs.values())


# One queued operation: (function run in the store thread, its arguments, the future
# resolved with its result on the event loop, and an optional function run on the event
# loop with the committed result before the future is resolved).
_After = Callable[[Any], Any] | None
_Op = tuple[Callable[..., Any], tuple[Any, ...], "asyncio.Future[Any]", _After]
_Result = tuple["asyncio.Future[Any]", bool, Any, _After]
_STOP: Final = object()


class Store:
    """Asynchronous access to the SQLite database through its owner thread."""

    def __init__(self, path: str | Path, *, cleanup: bool = False) -> None:
        self._path = str(path)
        self._cleanup = cleanup
        self._queue: queue.SimpleQueue[_Op | object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed: asyncio.Future[None] | None = None
        self._accepting = False
        self.jobs = JobIndex()

    @property
    def path(self) -> str:
        return self._path

    # -- lifecycle ---------------------------------------------------------------------

    async def open(self) -> dict[str, ClusterCredentials]:
        """Open (or create) the database; return the registered clusters' credentials.

        Raises :class:`StoreError` when the file cannot be used (corrupt, unreadable, or
        held by another server).
        """
        loop = asyncio.get_running_loop()
        self._loop = loop
        ready: asyncio.Future[dict[str, ClusterCredentials]] = loop.create_future()
        self._closed = loop.create_future()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name="rainbow-aio-sqlite", daemon=True
        )
        self._thread.start()
        try:
            clusters = await ready
        except BaseException:
            await asyncio.shield(self._closed)
            raise
        self._accepting = True
        return clusters

    async def close(self) -> None:
        """Finish the queued operations, then close the connection. Idempotent."""
        if self._thread is None or self._closed is None:
            return
        self._accepting = False
        self._queue.put(_STOP)
        await asyncio.shield(self._closed)
        self._thread = None

    # -- operations (awaitable from the event loop) --------------------------------------

    async def register(self, name: str, creds: ClusterCredentials) -> bool:
        """Insert a cluster; False when the name is already taken."""
        created: bool = await self._submit(_op_register, (name, creds))
        return created

    async def submit(self, cluster: str, name: str, nodes: int, tasks: int, command: str) -> int:
        """Insert a job and return its id (the row is committed when this returns)."""

        def after(value: tuple[int, str]) -> int:
            self.jobs.add(cluster, *value)
            return value[0]

        job_id: int = await self._submit(_op_submit, (cluster, name, nodes, tasks, command), after)
        return job_id

    def waiting(self, cluster: str, limit: int) -> dict[int, str]:
        """The ``limit`` lowest-id committed jobs of a cluster (all when ``limit <= 0``),
        as Go JSON."""
        return self.jobs.waiting(cluster, limit)

    async def accept(self, cluster: str, job_ids: Sequence[int]) -> int:
        """Delete the cluster's jobs with these ids; return how many rows were deleted."""

        def after(deleted: list[int]) -> int:
            self.jobs.remove(cluster, deleted)
            return len(deleted)

        count: int = await self._submit(_op_accept, (cluster, tuple(job_ids)), after)
        return count

    def _submit(
        self, fn: Callable[..., Any], args: tuple[Any, ...], after: _After = None
    ) -> asyncio.Future[Any]:
        if not self._accepting or self._loop is None:
            raise StoreError("the database is closed")
        fut = self._loop.create_future()
        self._queue.put((fn, args, fut, after))
        return fut

    # -- the owner thread --------------------------------------------------------------

    def _run(self, ready: asyncio.Future[dict[str, ClusterCredentials]]) -> None:
        loop = self._loop
        assert loop is not None
        assert self._closed is not None
        conn: sqlite3.Connection | None = None
        try:
            try:
                conn = self._connect()
                clusters = _load_clusters(conn)
                jobs = _load_jobs(conn)
            except BaseException as exc:
                loop.call_soon_threadsafe(_resolve, ready, False, _store_error(exc))
                return
            loop.call_soon_threadsafe(self._ready, ready, clusters, jobs)
            self._serve(conn, loop)
        finally:
            if conn is not None:
                conn.close()
            loop.call_soon_threadsafe(_resolve, self._closed, True, None)

    def _ready(
        self,
        ready: asyncio.Future[dict[str, ClusterCredentials]],
        clusters: dict[str, ClusterCredentials],
        jobs: list[tuple[str, int, str]],
    ) -> None:
        for cluster, job_id, text in jobs:
            self.jobs.add(cluster, job_id, text)
        _resolve(ready, True, clusters)

    def _serve(self, conn: sqlite3.Connection, loop: asyncio.AbstractEventLoop) -> None:
        get, get_nowait = self._queue.get, self._queue.get_nowait
        stopping = False
        while not stopping:
            item = get()
            if item is _STOP:
                break
            batch: list[_Op] = [item]  # type: ignore[list-item]
            while len(batch) < MAX_BATCH:
                try:
                    item = get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stopping = True
                    break
                batch.append(item)  # type: ignore[arg-type]
            try:
                results = _execute(conn, batch)
            except Exception as exc:  # a bug, not a database error: fail the batch only
                log.exception("database batch failed")
                if conn.in_transaction:
                    conn.rollback()
                error = StoreError(f"internal error: {type(exc).__name__}")
                results = [(fut, False, error, None) for _, _, fut, _ in batch]
            loop.call_soon_threadsafe(_deliver, results)

    def _connect(self) -> sqlite3.Connection:
        memory = self._path == MEMORY
        name = MEMORY if memory else Path(self._path).name
        exists = False
        if not memory:
            path = Path(self._path)
            if self._cleanup:
                for suffix in ("", "-wal", "-shm", "-journal"):
                    Path(f"{path}{suffix}").unlink(missing_ok=True)
            exists = path.exists()
        log.info("✨️ creating %s...", name)
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=True)
        try:
            conn.execute("PRAGMA busy_timeout = 1000")
            if not memory:
                conn.execute("PRAGMA locking_mode = EXCLUSIVE")
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()
                if mode is None or str(mode[0]).lower() != "wal":
                    raise StoreError(f"cannot use WAL journal mode on {self._path}")
                conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
            # take the (exclusive) lock now, so a file in use fails here
            conn.execute("BEGIN EXCLUSIVE")
            conn.execute("COMMIT")
            log.info("   %s file %s", name, "opened" if exists else "created")
            log.info("   create cluster table...")
            conn.execute(_SCHEMA_CLUSTERS)
            log.info("   cluster table created")
            log.info("   create jobs table...")
            conn.execute(_SCHEMA_JOBS)
            conn.execute(_SCHEMA_JOBS_INDEX)
            log.info("   jobs table created")
        except BaseException:
            conn.close()
            raise
        return conn


def _load_clusters(conn: sqlite3.Connection) -> dict[str, ClusterCredentials]:
    rows = conn.execute("SELECT name, token_hash, secret_hash FROM clusters").fetchall()
    return {name: ClusterCredentials(bytes(tok), bytes(sec)) for name, tok, sec in rows}


def _load_jobs(conn: sqlite3.Connection) -> list[tuple[str, int, str]]:
    rows = conn.execute(
        "SELECT id, cluster, name, nodes, tasks, command FROM jobs ORDER BY id"
    ).fetchall()
    return [(row[1], row[0], encode_job(*row)) for row in rows]


def _store_error(exc: BaseException) -> BaseException:
    if isinstance(exc, StoreError):
        return exc
    if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
        return StoreError(f"{exc} (is another server using this file?)")
    if isinstance(exc, sqlite3.Error):
        return StoreError(str(exc) or type(exc).__name__)
    if isinstance(exc, OSError):
        return StoreError(exc.strerror or str(exc))
    return exc


def _resolve(fut: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if fut.done():
        return
    if ok:
        fut.set_result(value)
    else:
        fut.set_exception(value)


def _deliver(results: list[_Result]) -> None:
    """Apply committed results on the event loop, in commit order, then answer."""
    for fut, ok, value, after in results:
        if ok and after is not None:
            value = after(value)  # even if the caller gave up: the commit happened
        _resolve(fut, ok, value)


def _execute(conn: sqlite3.Connection, batch: list[_Op]) -> list[_Result]:
    """Run a batch in one transaction; if it fails, run each operation on its own."""
    try:
        conn.execute("BEGIN")
        values = [fn(conn, *args) for fn, args, _, _ in batch]
        conn.execute("COMMIT")
    except sqlite3.Error:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
    else:
        return [
            (fut, True, value, after)
            for (_, _, fut, after), value in zip(batch, values, strict=True)
        ]
    return [_execute_one(conn, op) for op in batch]


def _execute_one(conn: sqlite3.Connection, op: _Op) -> _Result:
    fn, args, fut, after = op
    try:
        conn.execute("BEGIN")
        value = fn(conn, *args)
        conn.execute("COMMIT")
        return (fut, True, value, after)
    except sqlite3.Error as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        log.warning("database operation %s failed: %s", fn.__name__, exc)
        return (fut, False, StoreError(str(exc) or type(exc).__name__), after)


# -- statements (run in the owner thread, inside a transaction) ----------------------------


def _op_register(conn: sqlite3.Connection, name: str, creds: ClusterCredentials) -> bool:
    cur = conn.execute(
        "INSERT OR IGNORE INTO clusters (name, token_hash, secret_hash) VALUES (?, ?, ?)",
        (name, creds.token_hash, creds.secret_hash),
    )
    return cur.rowcount == 1


def _op_submit(
    conn: sqlite3.Connection, cluster: str, name: str, nodes: int, tasks: int, command: str
) -> tuple[int, str]:
    cur = conn.execute(
        "INSERT INTO jobs (cluster, name, nodes, tasks, command) VALUES (?, ?, ?, ?, ?)",
        (cluster, name, nodes, tasks, command),
    )
    job_id = cur.lastrowid
    if job_id is None:  # pragma: no cover - sqlite always sets it for an INSERT
        raise sqlite3.DatabaseError("no id for the new job")
    return job_id, encode_job(job_id, cluster, name, nodes, tasks, command)


def _op_accept(conn: sqlite3.Connection, cluster: str, job_ids: tuple[int, ...]) -> list[int]:
    deleted = []
    for job_id in job_ids:
        cur = conn.execute("DELETE FROM jobs WHERE id = ? AND cluster = ?", (job_id, cluster))
        if cur.rowcount == 1:
            deleted.append(job_id)
    return deleted
