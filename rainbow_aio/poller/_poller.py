"""``Poller``: one cluster's jobs, listed with RequestJobs, into a bounded queue."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Container, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Protocol

import anyio
import anyio.abc

from .. import _protocol as P
from .._exceptions import (
    ClientClosedError,
    DeniedError,
    InvalidArgumentError,
    MissingCredentialError,
    RainbowError,
    ServerBusyError,
    TLSError,
    UnavailableError,
)
from .._models import AcceptResult, AcceptStatus, Job
from .._retry import may_have_reached_server
from ._errors import AcceptUncertainError, PollerStoppedError
from ._job import JobState, PolledJob
from ._options import DEFAULTS, AcceptMode, PollerOptions, PollerStats, parse_accept_mode
from ._queue import JobQueue
from ._run import JobSource
from ._view import ClusterView, acquire_view, release_view

if TYPE_CHECKING:
    from ._group import PollerGroup

__all__ = ["Poller", "PollingClient"]

log = logging.getLogger("rainbow_aio.poller")

# lifecycle phases (small ints: a group may hold ten thousand pollers)
_NEW, _RUNNING, _STOPPED, _CLOSED = 0, 1, 2, 3
_PHASES = ("new", "running", "stopped", "closed")

# first wait before an AcceptJobs whose outcome is unknown is sent again (then doubling)
_RESEND_BACKOFF = 0.05

# errors after which the same poll can never succeed: they stop this poller
_FATAL = (MissingCredentialError, InvalidArgumentError, ClientClosedError, TLSError)
# accept errors that prove the server did not act (when the call was sent once)
_NOT_APPLIED = (
    DeniedError,
    MissingCredentialError,
    InvalidArgumentError,
    ClientClosedError,
    ServerBusyError,
)


class PollingClient(Protocol):
    """What a poller needs from :class:`~rainbow_aio.RainbowClient`: a listing that
    parses only the jobs not in ``known`` (and returns every id listed), and accepts."""

    async def _list_new_jobs(
        self,
        cluster: str,
        secret: str,
        max_jobs: int | None,
        known: Container[int],
        *,
        timeout: float | None = ...,  # noqa: ASYNC109
    ) -> tuple[list[Job], list[int]]: ...

    async def accept_jobs(
        self,
        cluster: str,
        secret: str,
        job_ids: Iterable[int],
        *,
        timeout: float | None = ...,  # noqa: ASYNC109
    ) -> AcceptResult: ...


def _not_applied(exc: Exception) -> bool:
    """Whether a failed AcceptJobs certainly did not delete anything."""
    if not isinstance(exc, RainbowError) or (exc.attempts or 1) > 1:
        return False  # an earlier attempt may have reached the server
    if isinstance(exc, (*_NOT_APPLIED, TLSError)):
        return True  # refused before acting, or no TLS session was ever set up
    return isinstance(exc, UnavailableError) and not may_have_reached_server(exc)


def _describe(exc: BaseException) -> str:
    # RainbowError messages never hold credentials (see _exceptions.py)
    return f"{type(exc).__name__}: {exc}"


class Poller(JobSource):
    """Lists one cluster's jobs with RequestJobs and hands each out once, to be accepted.

    Use it as an async context manager, from ``client.poller(cluster, secret, ...)``::

        async with client.poller("keebler", secret, max_jobs=10) as poller:
            async for job in poller:          # or: job = await poller.get()
                if await job.accept():        # True: this process owns the job
                    await run(job.job)

    Guarantees:

    - **No duplicates.** A job is handed out at most once while it is in flight (queued,
      held by a consumer, or being accepted), although every RequestJobs returns it
      again until it is accepted. All pollers of one cluster on one client share one
      view of what is in flight, so two of them never hand out the same job.
    - **No loss.** Every job waiting for the cluster is eventually handed out: each
      request asks for ``max_jobs`` more than the ids already in flight, so a listing
      (lowest ids first) always looks past them, however large the backlog.
    - **One owner.** ``accept()`` returns True only when this consumer owns the job, and
      False only when someone else took it; when neither can be known it raises
      :class:`AcceptUncertainError` (see ``accept_mode``). An AcceptJobs whose answer
      was lost (deadline, dropped connection) is sent again until an answer comes, so
      in batched mode a job taken by a lost attempt is still reported as ours.
    - **Release.** ``job.release()`` puts the job back: it stays on the server and a later
      poll hands it out again. A job dropped without accept or release is released when
      garbage collected.
    - **Cancellation.** Cancelling a consumer inside ``accept()`` never loses the job: an
      accept not yet sent is withdrawn and the job released; one already on the wire
      finishes in the background, and if it took the job the job is handed out again,
      already accepted (``job.accepted`` is True and ``accept()`` returns True at once).
    - **Backpressure.** At most ``queue_size`` listed jobs wait in the queue; while it is
      full the poller does not poll. In a group, once the shared queue is full, polls
      wait until there is room for ``max_jobs`` (at most half the queue), so that a
      poll, which lists every job in flight again, brings a batch of new ones.
    - **Graceful shutdown.** ``stop()`` (or leaving the context) stops polling, ends
      iteration (``get()`` raises :class:`PollerStoppedError`) and gives back the jobs
      still queued, untouched on the server. Jobs already handed out can still be
      accepted until the context is left; leaving it waits up to ``shutdown_timeout`` for
      the accepts already requested, then releases every job not accepted.
    - **Failure isolation.** Transient errors (unavailable, deadline, database locked,
      other server errors) are counted in ``stats`` and retried with backoff; they never
      stop the poller. Wrong or missing credentials (``denied_attempts`` denials in a
      row, a missing secret, a TLS failure, a closed client) stop this poller only, as
      does an unexpected exception (a bug, logged): ``get()`` and iteration raise the
      error, and leaving the context raises it if nobody saw it.
    - **Bounded memory.** The in-flight bookkeeping holds only queued and held jobs, and
      its tombstones only ids settled while a listing was running.

    Options (keywords of ``client.poller()``):

    - ``max_jobs`` (10): new jobs to ask for per poll (on top of those in flight).
    - ``queue_size`` (100): listed jobs that may wait for a consumer (a group's
      clusters share one queue, of 1,000 by default).
    - ``min_interval`` / ``max_interval`` (0.25 s / 5 s): while polls bring new jobs, the
      next poll starts as soon as the queue has room for it (also when a poll found new jobs
      but a group's other pollers filled the shared queue meanwhile: that poll is not
      empty); after an empty poll (or an error) the wait doubles from ``min_interval``
      up to ``max_interval``, each wait randomised to between half and all of it so that
      idle pollers do not poll in step.
    - ``accept_mode`` (``"batched"``): see :class:`AcceptMode`. Batched mode assumes this
      process is the only one accepting for the cluster.
    - ``accept_window`` (0.005 s) / ``accept_batch_size`` (256): accepts requested
      within the window (up to the size) go out in one AcceptJobs call.
    - ``shutdown_timeout`` (10 s): how long leaving the context waits for accepts.
    - ``denied_attempts`` (3): consecutive denied polls that stop the poller (the Go
      server sometimes answers a false "request denied" under load).

    The secret is never logged and never shown in ``repr()``.
    """

    __slots__ = (
        "_accept_calls",
        "_accepted",
        "_busy",
        "_client",
        "_cluster",
        "_empty_polls",
        "_errors",
        "_fatal",
        "_fatal_raised",
        "_first_delay",
        "_group",
        "_handed_out",
        "_idle",
        "_jobs_listed",
        "_last_error",
        "_last_latency",
        "_limiter",
        "_lost",
        "_opts",
        "_pending",
        "_phase",
        "_polls",
        "_queue",
        "_released",
        "_scope",
        "_secret",
        "_tg",
        "_uncertain",
        "_view",
        "_window_armed",
    )

    def __init__(
        self,
        client: PollingClient,
        cluster: str,
        secret: str,
        *,
        max_jobs: int = DEFAULTS.max_jobs,
        queue_size: int = DEFAULTS.queue_size,
        min_interval: float = DEFAULTS.min_interval,
        max_interval: float = DEFAULTS.max_interval,
        accept_mode: AcceptMode | str = DEFAULTS.accept_mode,
        accept_window: float = DEFAULTS.accept_window,
        accept_batch_size: int = DEFAULTS.accept_batch_size,
        shutdown_timeout: float = DEFAULTS.shutdown_timeout,
        denied_attempts: int = DEFAULTS.denied_attempts,
    ) -> None:
        opts = PollerOptions(
            max_jobs=max_jobs,
            queue_size=queue_size,
            min_interval=min_interval,
            max_interval=max_interval,
            accept_mode=parse_accept_mode(accept_mode),
            accept_window=accept_window,
            accept_batch_size=accept_batch_size,
            shutdown_timeout=shutdown_timeout,
            denied_attempts=denied_attempts,
        )
        self._setup(client, cluster, secret, opts, JobQueue(opts.queue_size), None)

    @classmethod
    def _member(
        cls,
        client: PollingClient,
        cluster: str,
        secret: str,
        opts: PollerOptions,
        queue: JobQueue,
        group: PollerGroup,
    ) -> Poller:
        self = cls.__new__(cls)
        self._setup(client, cluster, secret, opts, queue, group)
        return self

    def _setup(
        self,
        client: PollingClient,
        cluster: str,
        secret: str,
        opts: PollerOptions,
        queue: JobQueue,
        group: PollerGroup | None,
    ) -> None:
        if not isinstance(cluster, str) or not cluster:
            raise InvalidArgumentError("cluster must be a non-empty string")
        if not isinstance(secret, str) or not secret:
            raise InvalidArgumentError("secret must be a non-empty string", cluster=cluster)
        self._client = client
        self._cluster = cluster
        self._secret = secret
        self._opts = opts
        self._queue = queue
        self._group = group
        self._view: ClusterView | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self._scope: anyio.CancelScope | None = None
        self._phase = _NEW
        self._fatal: BaseException | None = None
        self._fatal_raised = False
        self._first_delay = 0.0
        self._limiter: asyncio.Semaphore | None = None
        self._pending: list[PolledJob] | None = None
        self._window_armed = False
        self._busy = 0
        self._idle: asyncio.Event | None = None
        self._polls = self._empty_polls = self._jobs_listed = self._handed_out = 0
        self._accepted = self._lost = self._released = self._uncertain = 0
        self._errors = self._accept_calls = 0
        self._last_error: str | None = None
        self._last_latency: float | None = None

    # public surface

    @property
    def cluster(self) -> str:
        return self._cluster

    @property
    def options(self) -> PollerOptions:
        return self._opts

    @property
    def error(self) -> BaseException | None:
        """The error that stopped this poller, if one did."""
        return self._fatal

    @property
    def running(self) -> bool:
        """True while the poller polls (entered, not stopped, not failed)."""
        return self._phase == _RUNNING and self._fatal is None

    @property
    def stats(self) -> PollerStats:
        """A snapshot of the counters."""
        return PollerStats(
            cluster=self._cluster,
            polls=self._polls,
            empty_polls=self._empty_polls,
            jobs_listed=self._jobs_listed,
            handed_out=self._handed_out,
            accepted=self._accepted,
            lost_to_others=self._lost,
            released=self._released,
            uncertain=self._uncertain,
            errors=self._errors,
            last_error=self._last_error,
            last_poll_latency=self._last_latency,
            accept_calls=self._accept_calls,
        )

    def qsize(self) -> int:
        """Jobs waiting in the queue."""
        return len(self._queue)

    async def get(self) -> PolledJob:
        """The next job, waiting for one if needed.

        Raises :class:`PollerStoppedError` once the poller is stopped and its queue is
        empty, and the poller's error if it failed.
        """
        if self._group is not None:
            raise RuntimeError("this poller belongs to a group: get jobs from the group")
        if self._phase == _NEW:
            raise RuntimeError("enter the poller first: async with client.poller(...)")
        return await self._take()

    async def stop(self) -> None:
        """Stop polling and handing out; give back queued jobs; wait (up to
        ``shutdown_timeout``) for accepts already sent. Jobs already handed out can still
        be accepted or released until the context is left."""
        if self._group is not None:
            raise RuntimeError("this poller belongs to a group: use group.remove()/stop()")
        if self._phase == _RUNNING:
            self._halt()
            self._queue.close(self._stopped_error)
        with anyio.CancelScope(shield=True), anyio.move_on_after(self._opts.shutdown_timeout):
            await self._wait_accepts()

    async def __aenter__(self) -> Poller:
        if self._group is not None:
            raise RuntimeError("this poller belongs to a group")
        if self._phase != _NEW:
            raise RuntimeError("a Poller can be entered only once")
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._start(tg)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        tg = self._tg
        assert tg is not None
        try:
            with anyio.CancelScope(shield=True):
                if self._phase == _RUNNING:
                    self._halt()
                    self._queue.close(self._stopped_error)
                with anyio.move_on_after(self._opts.shutdown_timeout):
                    await self._wait_accepts()
                self._finish()
        finally:
            tg.cancel_scope.cancel()
            # the body's own exception propagates as is (not wrapped in a group)
            await tg.__aexit__(None, None, None)
        if exc is None and self._fatal is not None and not self._fatal_raised:
            self._fatal_raised = True
            raise self._fatal

    def __repr__(self) -> str:
        return (
            f"Poller(cluster={self._cluster!r}, phase={_PHASES[self._phase]}, "
            f"queued={len(self._queue)}, mode={self._opts.accept_mode.value})"
        )

    # lifecycle (shared with PollerGroup)

    def _start(self, tg: anyio.abc.TaskGroup) -> None:
        self._view = acquire_view(self._client, self._cluster)
        self._tg = tg
        self._phase = _RUNNING
        tg.start_soon(self._run_loop)

    def _stopped_error(self) -> BaseException:
        return PollerStoppedError("the poller was stopped", cluster=self._cluster)

    def _halt(self) -> None:
        """Stop polling, send the pending accept batch now, give back queued jobs."""
        self._phase = _STOPPED
        if self._scope is not None:
            self._scope.cancel()
        self._flush()
        self._drop_queued()

    async def _wait_accepts(self) -> None:
        while self._busy:
            idle = self._idle = asyncio.Event()
            await idle.wait()

    def _finish(self) -> None:
        """Release what is still held, forget the view. Accepts still on the wire settle
        (as uncertain) when their tasks are cancelled."""
        view = self._view
        if view is not None:
            for pj in view.mine(self):
                if pj._state is JobState.HELD:
                    self._release_job(pj)
                elif pj._state is JobState.QUEUED:
                    self._drop(pj)
            release_view(self._client, view)
        owned = [pj for pj in self._queue._items if pj._poller is self and pj.accepted]
        for pj in owned:
            log.warning(
                "cluster %r: job %d was accepted after its consumer was cancelled, and "
                "nobody took it again before the poller closed; it is no longer on the "
                "server and has not been run",
                self._cluster,
                pj.job.id,
            )
        self._phase = _CLOSED

    async def _close_member(self) -> None:
        with anyio.CancelScope(shield=True):
            if self._phase == _RUNNING:
                self._halt()
            with anyio.move_on_after(self._opts.shutdown_timeout):
                await self._wait_accepts()
            self._finish()

    def _fail(self, exc: BaseException) -> None:
        self._fatal = exc
        self._drop_queued()
        if self._group is not None:
            self._group._member_failed(self)
        else:
            self._queue.close(self._raise_fatal)

    def _raise_fatal(self) -> BaseException:
        assert self._fatal is not None
        self._fatal_raised = True
        return self._fatal

    # polling

    async def _run_loop(self) -> None:
        if self._phase != _RUNNING:
            return
        with anyio.CancelScope() as scope:
            self._scope = scope
            try:
                await self._poll_loop()
            except asyncio.CancelledError:
                # grpc replaces a cancelled call's CancelledError with a new one, which
                # anyio cannot trace back to this scope; escaping the task, it would
                # cancel the whole task group (and the code inside `async with`)
                if not scope.cancel_called:
                    raise
            except Exception as exc:  # a bug must not take the whole task group down
                log.exception("cluster %r: the poller failed", self._cluster)
                self._last_error = _describe(exc)
                self._fail(exc)
        self._scope = None

    async def _poll_loop(self) -> None:
        opts = self._opts
        queue = self._queue
        view = self._view
        assert view is not None
        limiter = self._limiter
        backoff = 0.0
        delay = self._first_delay
        denials = 0
        while True:
            if delay > 0:
                await asyncio.sleep(delay)
            while not queue.pollable:
                await queue.wait_room()
            if limiter is not None:
                await limiter.acquire()
                if not queue.pollable:  # other pollers filled the queue meanwhile
                    limiter.release()
                    delay = 0.0
                    continue
            try:
                began = time.monotonic()
                listed, fresh = await self._list(view)
            except Exception as exc:
                self._errors += 1
                self._last_error = _describe(exc)
                denials = denials + 1 if isinstance(exc, DeniedError) else 0
                if (
                    isinstance(exc, _FATAL)
                    or denials >= opts.denied_attempts
                    or not isinstance(exc, RainbowError)
                ):
                    log.warning("cluster %r: polling stopped: %s", self._cluster, exc)
                    self._fail(exc)
                    return
                log.info("cluster %r: poll failed, backing off: %s", self._cluster, exc)
                backoff = self._grow(backoff)
                delay = self._jitter(backoff)
                continue
            finally:
                if limiter is not None:
                    limiter.release()
            if self._phase != _RUNNING:
                return
            denials = 0
            self._polls += 1
            self._jobs_listed += listed
            self._last_latency = time.monotonic() - began
            found = view.seq
            # the jobs beyond the room left are not tracked: a later poll lists them again
            for job in fresh[: max(queue.room, 0)]:
                # no local name for the PolledJob: a reference left in this frame would
                # keep a job its consumer dropped from being released
                self._enqueue(job, found)
            if queue.room > 0:
                queue.wake_room()  # pass unused room (and this poll's share) on
            if fresh:
                # new jobs, even if other pollers filled the shared queue during the
                # listing and none fitted: poll again as soon as there is room (the
                # loop's top waits for it) rather than back off while they wait
                backoff = delay = 0.0
            else:
                self._empty_polls += 1
                backoff = self._grow(backoff)
                delay = self._jitter(backoff)

    async def _list(self, view: ClusterView) -> tuple[int, list[Job]]:
        """One RequestJobs: how many jobs it listed, and those that may be handed out
        (only these are parsed)."""
        want = min(self._opts.max_jobs, self._queue.room)
        # look past every id in flight (the server lists the lowest ids first)
        asked = min(want + len(view.inflight) + len(view.tombstones), P.INT32_MAX)
        start = view.begin_listing()
        self._queue.listing += 1
        try:
            fresh, ids = await self._client._list_new_jobs(
                self._cluster, self._secret, asked, view.hidden(start)
            )
            view.listed(start, ids, asked)
            return len(ids), fresh
        finally:
            queue = self._queue
            queue.listing -= 1
            # this poll's share of the room is free again (it may have failed)
            queue.wake_room()
            view.end_listing(start)

    def _enqueue(self, job: Job, found: int) -> None:
        pj = PolledJob(job, self, found)
        assert self._view is not None
        self._view.track(pj)
        self._queue.put(pj)

    def _grow(self, backoff: float) -> float:
        if backoff <= 0:
            return self._opts.min_interval
        return min(backoff * 2, self._opts.max_interval)

    @staticmethod
    def _jitter(backoff: float) -> float:
        return backoff * (0.5 + random.random() / 2)

    # job bookkeeping (called by PolledJob, the queue and the view)

    def _hand_out(self, pj: PolledJob) -> None:
        if pj._state is JobState.QUEUED:
            pj._state = JobState.HELD
        self._handed_out += 1

    def _drop(self, pj: PolledJob) -> None:
        pj._state = JobState.DROPPED
        assert self._view is not None
        self._view.forget(pj)
        self._queue.discard()
        self._released += 1

    def _drop_queued(self) -> None:
        if self._view is None:
            return
        for pj in self._view.mine(self):
            if pj._state is JobState.QUEUED:
                self._drop(pj)

    def _vanished(self, pj: PolledJob) -> None:
        """A complete listing shows that someone else took this queued job."""
        pj._state = JobState.DROPPED
        assert self._view is not None
        self._view.settle(pj)
        self._queue.discard()
        self._lost += 1

    def _other_accepter(self, evidence: str) -> None:
        """Another process accepts jobs of this cluster: in batched mode, that breaks the
        assumption batching relies on, so the cluster's accepts go out one id per call."""
        view = self._view
        if view is None or view.per_id or self._opts.accept_mode is not AcceptMode.BATCHED:
            return
        view.per_id = True
        log.warning(
            "cluster %r: another process accepts jobs of this cluster (%s), although the "
            "batched accept mode assumes it does not; accepts now go out one id per call "
            "(use accept_mode='shared' for clusters shared between processes)",
            self._cluster,
            evidence,
        )

    def _release(self, pj: PolledJob) -> None:
        if pj._state is JobState.HELD:
            self._release_job(pj)

    def _release_job(self, pj: PolledJob) -> None:
        pj._state = JobState.RELEASED
        if self._view is not None:
            self._view.forget(pj)
        self._released += 1

    def _collected(self, pj: PolledJob) -> None:
        if pj._state is JobState.HELD:
            self._released += 1
            log.debug("cluster %r: job %d was dropped unsettled; released", self._cluster, pj.id)
        pj._state = JobState.RELEASED
        if self._view is not None:
            self._view.forget(pj)

    def _redeliver(self, pj: PolledJob) -> None:
        """An accepted job lost its consumer: hand it out again, already owned."""
        if self._phase == _CLOSED:
            log.warning(
                "cluster %r: job %d was accepted after its consumer was cancelled and the "
                "poller is closed; it is no longer on the server and has not been run",
                self._cluster,
                pj.job.id,
            )
            return
        self._queue.put_owned(pj)

    # accepting

    async def _accept(self, pj: PolledJob) -> bool:
        state = pj._state
        if state is JobState.HELD:
            if self._phase == _CLOSED:
                raise PollerStoppedError(
                    f"job {pj.job.id} cannot be accepted: the poller is closed",
                    cluster=self._cluster,
                )
            pj._state = JobState.ACCEPTING
            pj._done = asyncio.get_running_loop().create_future()
            self._submit(pj)
        elif state is JobState.ACCEPTED:
            return True
        elif state is JobState.LOST:
            return False
        elif state is JobState.UNCERTAIN:
            raise self._uncertain_error(pj, "an earlier accept of this job had an unknown outcome")
        elif state is not JobState.ACCEPTING:
            if self._phase == _CLOSED:
                raise PollerStoppedError(
                    f"job {pj.job.id} cannot be accepted: the poller is closed",
                    cluster=self._cluster,
                )
            raise RuntimeError(f"job {pj.job.id} cannot be accepted: it is {state.value}")
        done = pj._done
        assert done is not None
        pj._waiters += 1
        try:
            await asyncio.shield(done)
        except asyncio.CancelledError:
            pj._waiters -= 1
            if pj._waiters == 0:
                self._abandoned(pj)
            raise
        pj._waiters -= 1
        outcome = done.result()
        if isinstance(outcome, BaseException):
            raise outcome
        if outcome:
            pj._done = None  # a consumer has the job: never hand it out again
        return outcome

    def _abandoned(self, pj: PolledJob) -> None:
        """Every consumer waiting in ``accept()`` for ``pj`` was cancelled."""
        state = pj._state
        if state is JobState.ACCEPTING:
            pending = self._pending
            if pending is not None and pj in pending:
                pending.remove(pj)  # never sent: withdraw it
                self._release_job(pj)
                self._resolve(pj, False)
            # else: on the wire; _settle hands it out again if it was taken
        elif state is JobState.ACCEPTED and pj._done is not None:
            # taken just as the consumers were cancelled, and none of them returned
            pj._done = None
            self._redeliver(pj)
        elif state is JobState.HELD:
            self._release_job(pj)  # the accept certainly failed; nobody will retry it

    def _per_id(self) -> bool:
        assert self._view is not None
        return self._opts.accept_mode is AcceptMode.SHARED or self._view.per_id

    def _submit(self, pj: PolledJob) -> None:
        if self._per_id():
            self._spawn_send([pj])
            return
        if self._pending is None:
            self._pending = []
        self._pending.append(pj)
        if len(self._pending) >= self._opts.accept_batch_size:
            self._flush()
        elif not self._window_armed:
            self._window_armed = True
            assert self._tg is not None
            self._tg.start_soon(self._window)

    async def _window(self) -> None:
        try:
            await asyncio.sleep(self._opts.accept_window)
        finally:
            self._window_armed = False
        self._flush()

    def _flush(self) -> None:
        batch = self._pending
        if not batch:
            return
        self._pending = None
        if self._per_id():
            for pj in batch:
                self._spawn_send([pj])
        else:
            self._spawn_send(batch)

    def _spawn_send(self, batch: list[PolledJob]) -> None:
        assert self._tg is not None
        self._busy += 1
        self._tg.start_soon(self._send, batch)

    async def _send(self, batch: list[PolledJob]) -> None:
        """Accept ``batch`` with one AcceptJobs and settle each job's outcome.

        When a failed call may still have deleted the jobs (its answer was lost), the
        same ids are sent again (with backoff) until an answer comes: SUCCESS proves
        the jobs ours; PARTIAL then says some were already gone, which in batched mode
        (this process the only accepter) means our earlier attempt took them. Without
        this, a job deleted by a lost attempt would be owned by nobody.
        """
        try:
            ids = [pj.job.id for pj in batch]
            maybe_applied = False
            backoff = 0.0
            while True:
                try:
                    result = await self._client.accept_jobs(self._cluster, self._secret, ids)
                except Exception as exc:
                    attempts = exc.attempts if isinstance(exc, RainbowError) else None
                    self._accept_calls += attempts or 1
                    if not maybe_applied and _not_applied(exc):
                        self._accept_refused(batch, exc)
                        return
                    maybe_applied = True
                    if not (isinstance(exc, RainbowError) and exc.retryable):
                        self._accept_unknown(batch, exc)
                        return
                    log.info(
                        "cluster %r: AcceptJobs of %d job(s) may or may not have taken "
                        "them (%s); sending it again to find out",
                        self._cluster,
                        len(ids),
                        exc,
                    )
                    backoff = min(backoff * 2 or _RESEND_BACKOFF, self._opts.max_interval)
                    await asyncio.sleep(self._jitter(backoff))
                    continue
                self._accept_calls += result.attempts
                self._accept_answered(batch, result, maybe_applied=maybe_applied)
                return
        finally:
            for pj in batch:
                if pj._state is JobState.ACCEPTING:
                    self._settle_uncertain(
                        pj, "the accept was interrupted before its answer arrived"
                    )
            self._busy -= 1
            if not self._busy and self._idle is not None:
                self._idle.set()

    def _accept_answered(
        self, batch: list[PolledJob], result: AcceptResult, *, maybe_applied: bool
    ) -> None:
        assert self._view is not None
        status = result.status
        if status is AcceptStatus.SUCCESS:
            for pj in batch:
                self._settle(pj, JobState.ACCEPTED)
        elif status is AcceptStatus.PARTIAL and not maybe_applied:
            # nothing of ours can have taken them before: someone else took some of them
            self._other_accepter("an AcceptJobs it sent came back PARTIAL")
            if len(batch) == 1:
                self._settle(batch[0], JobState.LOST)
            else:
                for pj in batch:
                    self._settle_uncertain(
                        pj,
                        f"AcceptJobs for {len(batch)} jobs came back PARTIAL: another "
                        "process took some of them and the answer does not say which",
                    )
        elif self._opts.accept_mode is AcceptMode.BATCHED and not self._view.per_id:
            # PARTIAL after an attempt whose answer was lost: only this process accepts
            # for the cluster, so that earlier attempt took what this one did not
            for pj in batch:
                self._settle(pj, JobState.ACCEPTED)
        else:
            for pj in batch:
                self._settle_uncertain(
                    pj,
                    "AcceptJobs was sent again after its answer was lost and came back "
                    "PARTIAL: the earlier attempt or another process took the job",
                )

    def _accept_refused(self, batch: list[PolledJob], exc: Exception) -> None:
        """The server certainly did not act: the consumers still hold their jobs and
        ``accept()`` raises ``exc`` (it may be called again)."""
        for pj in batch:
            pj._state = JobState.HELD
            self._resolve(pj, exc)
            if pj._waiters == 0:
                self._release_job(pj)

    def _accept_unknown(self, batch: list[PolledJob], exc: Exception) -> None:
        for pj in batch:
            err = self._uncertain_error(pj, f"AcceptJobs failed and may have taken the job: {exc}")
            err.__cause__ = exc
            self._settle_uncertain(pj, err)

    def _settle(self, pj: PolledJob, state: JobState) -> None:
        pj._state = state
        assert self._view is not None
        self._view.settle(pj)
        if state is JobState.ACCEPTED:
            self._accepted += 1
            self._resolve(pj, True)
            if pj._waiters == 0:  # its consumers were cancelled while it was on the wire
                pj._done = None
                self._redeliver(pj)
        else:
            self._lost += 1
            self._resolve(pj, False)

    def _settle_uncertain(self, pj: PolledJob, why: str | AcceptUncertainError) -> None:
        err = why if isinstance(why, AcceptUncertainError) else self._uncertain_error(pj, why)
        pj._state = JobState.UNCERTAIN
        if self._view is not None:
            self._view.settle(pj)
        self._uncertain += 1
        log.warning("cluster %r: job %d: %s", self._cluster, pj.job.id, err.message)
        self._resolve(pj, err)

    def _uncertain_error(self, pj: PolledJob, why: str) -> AcceptUncertainError:
        return AcceptUncertainError(
            f"cannot tell whether job {pj.job.id} is ours: {why}",
            cluster=self._cluster,
            job_id=pj.job.id,
        )

    @staticmethod
    def _resolve(pj: PolledJob, outcome: bool | BaseException) -> None:
        done = pj._done
        if done is not None and not done.done():
            done.set_result(outcome)
