"""The server's SQLite store: one thread owns the connection and runs every statement.

Why one owner: SQLite allows one writer at a time, and the Go server's many writers
racing on one file is what produced ``database is locked``, false denials and lost jobs.
Here every statement goes through a single thread fed by a queue, so no two statements
ever compete for the lock and "locked" cannot happen by construction. (The server does
answer ``database is locked`` on purpose when it is past its bounds; see
``_limits.py``. Nothing has been written when it does.)

Why batches: the thread drains what waits in the queue (up to ``MAX_BATCH`` operations)
and runs the writes in one transaction with one commit, so 64 submits that arrive
together cost one fsync, not 64. A write's answer reaches the event loop only after its
transaction has committed: a caller told that its job was stored can rely on it.

Durability: a file database runs in WAL mode with ``synchronous=FULL``: every commit
fsyncs the WAL, so an answered SubmitJob survives a power cut as well as a killed
process. Batching is what keeps FULL affordable. (``NORMAL`` survives a killed process
but may lose the last commits on power loss, breaking "SUBMIT_SUCCESS means stored".)
The file is opened with an exclusive lock, so a second server on the same file fails at
start-up instead of fighting over the lock later.

Reads: waiting jobs live only in the database, so memory does not grow with the backlog
and start-up reads the clusters but no job. RequestJobs reads the ``limit`` lowest ids
of a cluster through the ``(cluster, id)`` index, so its cost depends on ``limit``, not
on how many jobs the cluster has or once had. A listing runs in the same thread, after
the writes drained with it have committed, so it always shows committed state. Long
listings are built in pieces (``_listing.py``): each pass of the thread commits the
writes waiting, then gives every listing in progress one piece, and while a long one
is in progress the thread pauses briefly after each pass so that the event loop gets
the GIL at once (``LARGE_LISTING_PAUSE``). A short call therefore waits for at most one
piece per listing in progress, never for a whole million-job listing; and at most
``LARGE_LISTINGS`` listings past their first piece are built at once, so their memory
stays bounded too. Short answers read in one piece are also kept
in a small cache on the event loop (``_cache.py``), dropped per cluster by every write
that touches it, so polling an idle cluster again costs no trip to this thread.

Bounds: at most ``max_queued_writes`` writes wait for the thread; past that,
:meth:`Store.submit`, :meth:`Store.accept` and :meth:`Store.register` raise
:class:`StoreBusy` without queueing anything.

Job ids come from ``INTEGER PRIMARY KEY AUTOINCREMENT``: they keep increasing across
restarts and an accepted (deleted) id is never handed out again.
"""

from __future__ import annotations

import asyncio
import collections
import fcntl
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from .. import _protocol as P
from ._cache import AnswerCache
from ._listing import Answer, AnswerTooLarge, Listing

__all__ = [
    "ACCEPT_CHUNK",
    "DETAILS_DB_GONE",
    "DETAILS_IDS_EXHAUSTED",
    "MAX_JOB_ID",
    "AnswerTooLarge",
    "ClusterCredentials",
    "Store",
    "StoreBusy",
    "StoreError",
    "StoreFull",
    "StoreGone",
]

log = logging.getLogger("rainbow_aio.server")

MAX_BATCH: Final = 512
MEMORY: Final = ":memory:"
ACCEPT_CHUNK: Final = 1000
"""Job ids deleted in one transaction (a millisecond or two): a longer AcceptJobs is
deleted in several, and other calls' writes and listings run between them."""
BATCH_ROWS: Final = 4 * ACCEPT_CHUNK
"""Rows one write transaction may touch (about; one write is never split)."""
MAX_JOB_ID: Final = 2**31 - 1
"""The largest id the wire can carry (``int32``). A submit that would get a larger one
is refused before anything is stored (:data:`DETAILS_IDS_EXHAUSTED`), and listings
leave out any row past it (written by another tool, say), so they never fail on it."""
DETAILS_IDS_EXHAUSTED: Final = (
    f"job ids are exhausted: this server cannot give a job an id past {MAX_JOB_ID} "
    "(start a new database)"
)

LARGE_LISTINGS: Final = 2
"""Listings past their first piece that are built at the same time; others wait."""

LARGE_LISTING_PAUSE: Final = 0.0005
"""Seconds the thread sleeps after each pass while a listing past its first piece is
being built. Building pieces holds the GIL almost without a break (SQLite releases it
for each row, but takes it back before a waiting thread wakes), so the event loop, which
needs the GIL for every call, would get it only after the interpreter's switch interval
(5 ms), several times per call. Sleeping lets it in at once: measured during a listing
of a million jobs, the small calls' p99 halves, and the listing takes about a third
longer."""

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

LIST_JOBS: Final = (
    "SELECT id, name, nodes, tasks, command FROM jobs "
    f"WHERE cluster = ? AND id > ? AND id <= {MAX_JOB_ID} ORDER BY id LIMIT ?"
)
"""One piece of a listing: a range scan of the ``(cluster, id)`` index."""


class StoreError(Exception):
    """The database could not be opened or a statement failed; the message is safe to show."""


class StoreBusy(Exception):
    """Too many writes wait for the database; this one was not queued (nothing written)."""


class StoreFull(StoreError):
    """The disk (or the database's size limit) is full: the write was rolled back, so
    nothing was written and it can be tried again later."""


class StoreGone(StoreError):
    """The database file was deleted or replaced under the running server: it refuses
    every write from then on, rather than acknowledge jobs that a restart would lose."""


@dataclass(frozen=True, slots=True)
class ClusterCredentials:
    """SHA-256 digests of a cluster's token and secret (the plain values are never kept)."""

    token_hash: bytes
    secret_hash: bytes


@dataclass(slots=True)
class _Write:
    """A write for the thread: ``fn(conn, *args)`` inside the batch's transaction; it
    may change the jobs of ``cluster``."""

    fn: Callable[..., Any]
    args: tuple[Any, ...]
    fut: asyncio.Future[Any]
    cluster: str | None
    counted: bool = True  # counts towards max_queued_writes (a chunk of an accept does not)


# An answer for the event loop: (future, succeeded, value or exception).
_Result = tuple["asyncio.Future[Any]", bool, Any]
# A listing's answer: the same, and for an answer to cache its (cluster, maxJobs).
_Listed = tuple["asyncio.Future[Any]", bool, Any, "tuple[str, int] | None"]
_STOP: Final = object()


class Store:
    """Asynchronous access to the SQLite database through its owner thread.

    ``max_queued_writes`` bounds the writes waiting for the thread; ``max_answer_bytes``
    bounds one listing's answer (:class:`AnswerTooLarge` past it).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        cleanup: bool = False,
        max_queued_writes: int,
        max_answer_bytes: int,
    ) -> None:
        self._path = str(path)
        self._cleanup = cleanup
        self._max_queued_writes = max_queued_writes
        self._max_answer_bytes = max_answer_bytes
        self._queue: queue.SimpleQueue[_Write | Listing | object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed: asyncio.Future[None] | None = None
        self._accepting = False
        self._queued_writes = 0  # changed on the event loop only
        self._gone: StoreGone | None = None  # set on the event loop once writes are refused
        self._identity: list[tuple[str, int, int]] = []  # files watched (path, dev, inode)
        self._lost: StoreGone | None = None  # the thread's own record of the same
        self._lock_file: int | None = None
        self._cache = AnswerCache()  # used on the event loop only

    @property
    def path(self) -> str:
        return self._path

    # -- lifecycle ---------------------------------------------------------------------

    async def open(self) -> dict[str, ClusterCredentials]:
        """Open (or create) the database; return the registered clusters' credentials.

        Reads no job. Raises :class:`StoreError` when the file cannot be used (corrupt,
        unreadable, or held by another server).
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
        """Finish the queued writes, then close the connection; listings still being
        built fail with :class:`StoreError`. Idempotent."""
        if self._thread is None or self._closed is None:
            return
        self._accepting = False
        self._queue.put(_STOP)
        await asyncio.shield(self._closed)
        self._thread = None

    # -- operations (awaitable from the event loop) --------------------------------------

    async def register(self, name: str, creds: ClusterCredentials) -> bool:
        """Insert a cluster; False when the name is already taken."""
        created: bool = await self._write(_op_register, (name, creds), None)
        return created

    async def submit(self, cluster: str, name: str, nodes: int, tasks: int, command: str) -> int:
        """Insert a job and return its id (the row is committed when this returns)."""
        job_id: int = await self._write(_op_submit, (cluster, name, nodes, tasks, command), cluster)
        return job_id

    async def accept(self, cluster: str, job_ids: Sequence[int]) -> int:
        """Delete the cluster's jobs with these ids; return how many rows were deleted.

        More than :data:`ACCEPT_CHUNK` ids are deleted in several transactions, one
        after another, with other calls' work in between; the whole call counts as one
        queued write throughout.
        """
        ids = tuple(job_ids)
        if len(ids) <= ACCEPT_CHUNK:
            count: int = await self._write(_op_accept, (cluster, ids), cluster)
            return count
        self._reserve_write()
        try:
            deleted = 0
            for start in range(0, len(ids), ACCEPT_CHUNK):
                chunk = ids[start : start + ACCEPT_CHUNK]
                deleted += await self._write(_op_accept, (cluster, chunk), cluster, counted=False)
            return deleted
        finally:
            self._queued_writes -= 1

    async def list_jobs(self, cluster: str, limit: int) -> bytes:
        """The ``limit`` lowest-id committed jobs of a cluster (all when ``limit <= 0``),
        as a serialized ``RequestJobsResponse`` (empty when none waits).

        Raises :class:`AnswerTooLarge` when the answer would be larger than
        ``max_answer_bytes``.
        """
        loop = self._open_loop()
        cached = self._cache.get(cluster, limit)
        if cached is not None:
            return cached
        listing = Listing(cluster, limit, self._max_answer_bytes, loop.create_future())
        self._queue.put(listing)
        answer = await listing.fut
        if isinstance(answer, bytes):  # short: joined by the store's thread already
            return answer
        try:
            if answer.large:  # a read or join of many MB: not on the loop
                return await asyncio.to_thread(answer.join)
            return answer.join()
        except OSError as exc:
            raise StoreError(f"cannot assemble the answer: {exc.strerror or exc}") from None

    def _reserve_write(self) -> None:
        """Count one more queued write, or raise :class:`StoreBusy` at the bound."""
        self._open_loop()
        if self._gone is not None:
            raise self._gone
        if self._queued_writes >= self._max_queued_writes:
            raise StoreBusy(f"{self._queued_writes} writes are waiting for the database")
        self._queued_writes += 1

    def _write(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        cluster: str | None,
        *,
        counted: bool = True,
    ) -> asyncio.Future[Any]:
        loop = self._open_loop()
        if counted:
            self._reserve_write()
        elif self._gone is not None:
            raise self._gone
        fut = loop.create_future()
        self._queue.put(_Write(fn, args, fut, cluster, counted))
        return fut

    def _open_loop(self) -> asyncio.AbstractEventLoop:
        if not self._accepting or self._loop is None:
            raise StoreError("the database is closed")
        return self._loop

    # -- answers, on the event loop ------------------------------------------------------

    # The store's thread calls these two through call_soon_threadsafe, in the order it
    # committed the writes and read the listings: the cache depends on that order.

    def _deliver_writes(self, results: list[_Result], clusters: set[str], counted: int) -> None:
        self._queued_writes -= counted
        for _, ok, value in results:
            if not ok and isinstance(value, StoreGone) and self._gone is None:
                self._gone = value
        for cluster in clusters:
            self._cache.drop(cluster)
        for fut, ok, value in results:
            _resolve(fut, ok, value)

    def _deliver_listings(self, results: list[_Listed]) -> None:
        for fut, ok, value, key in results:
            if ok and key is not None:
                self._cache.put(*key, value)
            if fut.done() and isinstance(value, Answer):
                value.close()  # its caller gave up: nobody will join it
            _resolve(fut, ok, value)

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
            except BaseException as exc:
                loop.call_soon_threadsafe(_resolve, ready, False, _store_error(exc))
                return
            loop.call_soon_threadsafe(_resolve, ready, True, clusters)
            self._serve(conn, loop)
        finally:
            if conn is not None:
                conn.close()
            if self._lock_file is not None:
                os.close(self._lock_file)  # releases the lock
                self._lock_file = None
            loop.call_soon_threadsafe(_resolve, self._closed, True, None)

    def _serve(self, conn: sqlite3.Connection, loop: asyncio.AbstractEventLoop) -> None:
        builder = _Builder(conn)
        pending: collections.deque[_Write] = collections.deque()
        stopping = False
        while not stopping or pending:
            # block for work only when no listing is being built and no write waits
            items = _drain(self._queue, block=not (builder.busy or pending or stopping))
            for item in items:
                if item is _STOP:
                    stopping = True
                elif isinstance(item, Listing):
                    builder.add(item)
                else:
                    pending.append(item)
            writes = _take_batch(pending)
            if writes:
                touched = {op.cluster for op in writes if op.cluster is not None}
                counted = sum(op.counted for op in writes)
                results = self._write_batch(conn, writes)
                loop.call_soon_threadsafe(self._deliver_writes, results, touched, counted)
            if not stopping:
                answered = builder.one_pass()
                if answered:
                    loop.call_soon_threadsafe(self._deliver_listings, answered)
                if builder.large:
                    time.sleep(LARGE_LISTING_PAUSE)
        left = builder.abandon_all(StoreError("the database is closed"))
        if left:
            loop.call_soon_threadsafe(self._deliver_listings, left)

    def _connect(self) -> sqlite3.Connection:
        memory = self._path == MEMORY
        name = MEMORY if memory else Path(self._path).name
        exists = False
        if not memory:
            path = Path(self._path)
            self._lock_file = _take_lock(path)  # before anything touches the files
            if self._cleanup:
                _probe_unused(path)
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
            if not memory:
                self._identity = [
                    (name, st.st_dev, st.st_ino)
                    for name in (self._path, f"{self._path}-wal")
                    if (st := _stat(name)) is not None
                ]
        except BaseException:
            conn.close()
            raise
        return conn

    def _file_lost(self) -> bool:
        """Whether the database file (or its WAL) is no longer the one this server
        opened: deleted, or replaced by another file. Once true, it stays true."""
        if self._lost is None:
            for name, dev, ino in self._identity:
                st = _stat(name)
                if st is None or (st.st_dev, st.st_ino) != (dev, ino):
                    what = "deleted" if st is None else "replaced"
                    log.error(
                        "the database file %s was %s while the server ran: refusing every "
                        "write from now on (restart the server)",
                        name,
                        what,
                    )
                    self._lost = StoreGone(DETAILS_DB_GONE)
                    break
        return self._lost is not None

    def _write_batch(self, conn: sqlite3.Connection, writes: list[_Write]) -> list[_Result]:
        """Run a batch unless the file is gone; checked again after the commit, before
        any answer leaves the thread, so no write is acknowledged into a file that
        nobody will open again (those few fail, though the dead file has them)."""
        if self._file_lost():
            return [(op.fut, False, self._lost) for op in writes]
        results = _execute(conn, writes)
        if self._file_lost():
            return [(fut, False, self._lost) for fut, _, _ in results]
        return results


DETAILS_DB_GONE: Final = (
    "the server's database file was deleted or replaced while it ran: it refuses writes "
    "until it is restarted"
)


def _stat(name: str) -> os.stat_result | None:
    try:
        return os.stat(name)
    except FileNotFoundError:
        return None


def _take_lock(path: Path) -> int:
    """Lock ``PATH.lock`` for the life of the server (a second server, or a
    ``--cleanup`` of a file in use, fails here before touching any file); its fd."""
    lock_path = f"{path}.lock"
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise StoreError(f"cannot open the lock file {lock_path}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise StoreError("database is locked (is another server using this file?)") from None
    return fd


def _probe_unused(path: Path) -> None:
    """Fail if a server that does not know the lock file (an older version) holds the
    database: before ``cleanup`` deletes it."""
    if not path.exists():
        return
    probe = sqlite3.connect(path, isolation_level=None, timeout=0)
    try:
        probe.execute("BEGIN EXCLUSIVE")
        probe.execute("ROLLBACK")
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc):
            raise StoreError(f"{exc} (is another server using this file?)") from None
    except sqlite3.DatabaseError:
        pass  # not a database: cleanup is what deletes it
    finally:
        probe.close()


def _take_batch(pending: collections.deque[_Write]) -> list[_Write]:
    """The writes of the next transaction, oldest first: up to ``MAX_BATCH`` writes and
    about ``BATCH_ROWS`` rows (an accept counts its ids), so that one transaction stays
    short however many large accepts wait; the rest wait for the next pass."""
    batch: list[_Write] = []
    rows = 0
    while pending and len(batch) < MAX_BATCH:
        op = pending[0]
        weight = len(op.args[1]) if op.fn is _op_accept else 1
        if batch and rows + weight > BATCH_ROWS:
            break
        batch.append(pending.popleft())
        rows += weight
    return batch


def _drain(q: queue.SimpleQueue[Any], *, block: bool) -> list[Any]:
    """Up to ``MAX_BATCH`` items from the queue, waiting for the first only if ``block``."""
    items: list[Any] = []
    if block:
        items.append(q.get())
    while len(items) < MAX_BATCH:
        try:
            items.append(q.get_nowait())
        except queue.Empty:
            break
    return items


class _Builder:
    """The listings in progress, owned by the store's thread.

    Each pass gives every listing being built one piece. A listing that needs more than
    its first piece keeps going only while fewer than ``LARGE_LISTINGS`` others do; the
    rest wait their turn holding one piece each.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._turns: collections.deque[Listing] = collections.deque()
        self._waiting: collections.deque[Listing] = collections.deque()
        self._large: set[Listing] = set()

    @property
    def busy(self) -> bool:
        return bool(self._turns)

    @property
    def large(self) -> bool:
        """A listing past its first piece is being built."""
        return bool(self._large)

    def add(self, listing: Listing) -> None:
        self._turns.append(listing)

    def one_pass(self) -> list[_Listed]:
        """Build one piece of each listing in turn; the answers of those finished."""
        answered: list[_Listed] = []
        for _ in range(len(self._turns)):
            listing = self._turns.popleft()
            result = self._piece(listing)
            if result is not None:
                self._large.discard(listing)
                answered.append(result)
            elif listing in self._large or len(self._large) < LARGE_LISTINGS:
                self._large.add(listing)
                self._turns.append(listing)
            else:
                self._waiting.append(listing)
        while self._waiting and len(self._large) < LARGE_LISTINGS:
            listing = self._waiting.popleft()
            self._large.add(listing)
            self._turns.append(listing)
        return answered

    def _piece(self, listing: Listing) -> _Listed | None:
        """Build one piece; the listing's answer when it is finished (or failed)."""
        result = self._try_piece(listing)
        if result is not None:
            listing.close()
        return result

    def _try_piece(self, listing: Listing) -> _Listed | None:
        fut = listing.fut
        if listing.abandoned:
            return (fut, False, StoreError("abandoned"), None)
        asked = listing.want()
        try:
            rows = self._conn.execute(LIST_JOBS, (listing.cluster, listing.after_id, asked))
            if not listing.add(rows, asked):
                return None
            answer = listing.answer()
            if listing.pieces > 1 or answer.large:
                return (fut, True, answer, None)  # joined on the loop's side
            # read at one moment, and short: join it here and let the loop cache it
            return (fut, True, answer.join(), (listing.cluster, listing.limit))
        except AnswerTooLarge as exc:
            return (fut, False, exc, None)
        except sqlite3.Error as exc:
            log.warning("listing jobs failed: %s", exc)
            return (fut, False, StoreError(str(exc) or type(exc).__name__), None)
        except Exception as exc:  # a bug, or no memory for the answer: fail this listing
            log.exception("listing jobs failed")
            return (fut, False, StoreError(f"internal error: {type(exc).__name__}"), None)

    def abandon_all(self, error: Exception) -> list[_Listed]:
        left = [*self._turns, *self._waiting]
        self._turns.clear()
        self._waiting.clear()
        self._large.clear()
        for listing in left:
            listing.close()
        return [(listing.fut, False, error, None) for listing in left]


def _load_clusters(conn: sqlite3.Connection) -> dict[str, ClusterCredentials]:
    rows = conn.execute("SELECT name, token_hash, secret_hash FROM clusters").fetchall()
    return {name: ClusterCredentials(bytes(tok), bytes(sec)) for name, tok, sec in rows}


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


class _Refusal(Exception):
    """A write refused by its own statement (rolled back); the message is for the caller."""


def _execute(conn: sqlite3.Connection, batch: list[_Write]) -> list[_Result]:
    """Run a batch in one transaction; if it fails, run each write on its own."""
    try:
        try:
            conn.execute("BEGIN")
            values = [op.fn(conn, *op.args) for op in batch]
            conn.execute("COMMIT")
        except (sqlite3.Error, _Refusal):
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        else:
            return [(op.fut, True, value) for op, value in zip(batch, values, strict=True)]
        return [_execute_one(conn, op) for op in batch]
    except Exception as exc:  # a bug, not a database error: fail the batch only
        log.exception("database batch failed")
        if conn.in_transaction:
            conn.rollback()
        error = StoreError(f"internal error: {type(exc).__name__}")
        return [(op.fut, False, error) for op in batch]


def _execute_one(conn: sqlite3.Connection, op: _Write) -> _Result:
    try:
        conn.execute("BEGIN")
        value = op.fn(conn, *op.args)
        conn.execute("COMMIT")
        return (op.fut, True, value)
    except _Refusal as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        return (op.fut, False, StoreError(str(exc)))
    except sqlite3.Error as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
            # rolled back, nothing written: the contract's "try again", not SQLite's text
            log.error("%s: %s failed, answering 'database is locked'", exc, op.fn.__name__)
            return (op.fut, False, StoreFull(P.DETAILS_DB_LOCKED))
        log.warning("database operation %s failed: %s", op.fn.__name__, exc)
        return (op.fut, False, StoreError(str(exc) or type(exc).__name__))


# -- statements (run in the owner thread, inside a transaction) ----------------------------


def _op_register(conn: sqlite3.Connection, name: str, creds: ClusterCredentials) -> bool:
    cur = conn.execute(
        "INSERT OR IGNORE INTO clusters (name, token_hash, secret_hash) VALUES (?, ?, ?)",
        (name, creds.token_hash, creds.secret_hash),
    )
    return cur.rowcount == 1


def _op_submit(
    conn: sqlite3.Connection, cluster: str, name: str, nodes: int, tasks: int, command: str
) -> int:
    cur = conn.execute(
        "INSERT INTO jobs (cluster, name, nodes, tasks, command) VALUES (?, ?, ?, ?, ?)",
        (cluster, name, nodes, tasks, command),
    )
    job_id = cur.lastrowid
    if job_id is None:  # pragma: no cover - sqlite always sets it for an INSERT
        raise sqlite3.DatabaseError("no id for the new job")
    if job_id > MAX_JOB_ID:
        raise _Refusal(DETAILS_IDS_EXHAUSTED)  # rolled back: the row is not kept
    return job_id


IDS_PER_DELETE: Final = 512
"""Ids in one DELETE statement at most (SQLite before 3.32 binds at most 999 values)."""

_DELETE_IDS: Final = {
    n: f"DELETE FROM jobs WHERE cluster = ? AND id IN ({', '.join('?' * n)})"
    for n in (1 << k for k in range(IDS_PER_DELETE.bit_length()))
}
"""One statement per power-of-two length of the id list: a shorter list is padded with
its own last id (which ``IN`` reads once), so that a few prepared statements serve
every length."""


def _op_accept(conn: sqlite3.Connection, cluster: str, job_ids: tuple[int, ...]) -> int:
    """Delete up to :data:`ACCEPT_CHUNK` ids; how many rows were deleted.

    One ``DELETE ... IN`` per :data:`IDS_PER_DELETE` ids, rather than a statement run
    per id: SQLite looks each id up in its primary key all the same, but the rows
    cost no Python call, no bound statement and no reset each. An id listed twice is
    deleted once, as before: only the rows deleted count, so the answer is PARTIAL.
    """
    deleted = 0
    for start in range(0, len(job_ids), IDS_PER_DELETE):
        chunk = job_ids[start : start + IDS_PER_DELETE]
        size = 1 << (len(chunk) - 1).bit_length()
        cur = conn.execute(_DELETE_IDS[size], (cluster, *chunk, *chunk[-1:] * (size - len(chunk))))
        deleted += cur.rowcount
    return deleted
