"""``Poller``: one cluster's jobs, listed with RequestJobs, into a bounded queue.

:class:`ClusterPoller` is one cluster's polling loop, used alone by :class:`Poller` and by
the thousands in a :class:`PollerGroup`; everything about accepting belongs to the
cluster's ledger (``_ledger.py``), which it joins as a holder.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from types import TracebackType
from typing import Final, Unpack

import anyio
import anyio.abc

from .. import _protocol as P
from .._exceptions import (
    ClientClosedError,
    DeniedError,
    InvalidArgumentError,
    MissingCredentialError,
    RainbowError,
    TLSError,
)
from .._models import Job
from .._telemetry import load as load_telemetry
from ._errors import PollerStoppedError, UnhandledJobsError
from ._ledger import AcceptClient, AcceptLedger, Entry, Holder, attach
from ._options import DEFAULTS, PollerKwargs, PollerOptions, PollerStats
from ._pacing import IdleBudget
from ._queue import JobQueue
from ._run import JobSource

__all__ = [
    "ClusterPoller",
    "Poller",
    "idle_backoff",
    "jittered",
    "refill_size",
    "resolve_options",
]

log = logging.getLogger("rainbow_aio.poller")

# lifecycle phases (small ints: a group may hold ten thousand pollers)
NEW: Final = 0
RUNNING: Final = 1
STOPPED: Final = 2
CLOSED: Final = 3
PHASES: Final = ("new", "running", "stopped", "closed")

# the least wait after a denied poll (never more than max_interval)
_DENIED_BACKOFF: Final = 1.0

# A poller none of whose polls has ever succeeded, and whose polls are denied, most
# likely has a wrong secret or an unknown cluster: it stops after _FIRST_DENIALS denials
# in a row (never more than denied_attempts), each followed by a wait of
# _FIRST_DENIED_WAIT randomised to between half and all of it (never more than
# max_interval), so that a typo fails within about a second. The Go server's false
# denials under load mostly come alone (the probe's runs in the compat load figures),
# and the quick re-tries step past one; a load spike that denies all three could stop
# a poller before its first listing, the price of failing a typo fast. After a
# success, denials get denied_attempts in a row, each with _DENIED_BACKOFF or more.
_FIRST_DENIALS: Final = 3
_FIRST_DENIED_WAIT: Final = 0.5

# a cluster that found jobs this recently is served first by the idle budget
_RECENT: Final = 60.0

# A poll waits (up to _RELIST_WAIT seconds) while _RELIST_CALLS AcceptJobs calls, each
# carrying at least max_jobs ids and _RELIST_IDS in all, are on the wire: the listing
# would show all of those jobs again, and on a server that spends about as much on 200
# listed jobs as on a call, re-listing them costs more than waiting one accept's round
# trip (measured when this was introduced, commit c15d437, and by the batches
# benchmark: 2.0 jobs listed per job drained). Smaller accepts (per-job windows, the
# shared mode's one id per call) never hold a poll back.
_RELIST_CALLS: Final = 2
_RELIST_IDS: Final = 200
_RELIST_WAIT: Final = 1.0

# errors after which the same poll can never succeed: they stop this cluster's poller
_FATAL = (MissingCredentialError, InvalidArgumentError, ClientClosedError, TLSError)


def resolve_options(
    options: PollerOptions | None, overrides: PollerKwargs, *, queue_size: int
) -> PollerOptions:
    """``options`` (or the defaults, with ``queue_size``) updated by the keywords given."""
    if options is not None and not isinstance(options, PollerOptions):
        raise InvalidArgumentError("options must be a PollerOptions or None")
    base = options if options is not None else DEFAULTS.updated(queue_size=queue_size)
    return base.updated(**overrides) if overrides else base


def refill_size(opts: PollerOptions) -> int:
    """How much room a full queue must have again before the next poll: a poll lists every
    job in flight again, so polling for each freed slot would list them all for one new
    job; a poll's worth (``max_jobs``, at most half the queue) is waited for instead."""
    return min(opts.max_jobs, max(1, opts.queue_size // 2))


def idle_backoff(backoff: float, opts: PollerOptions) -> float:
    """The next idle wait: ``min_interval`` first, then doubling up to ``max_interval``."""
    if backoff <= 0:
        return opts.min_interval
    return min(backoff * 2, opts.max_interval)


def jittered(wait: float) -> float:
    """``wait`` randomised to between half and all of it, so pollers drift apart."""
    return wait * (0.5 + random.random() / 2)


def _describe(exc: BaseException) -> str:
    # RainbowError messages never hold credentials (see _exceptions.py)
    return f"{type(exc).__name__}: {exc}"


class ClusterPoller:
    """Polls one cluster into a queue (shared with other clusters in a group).

    Owns the poll loop and its counters; joins the cluster's accept ledger when started
    and leaves it when closed. ``on_fail`` is called once if the loop stops on an error.
    """

    __slots__ = (
        "__weakref__",
        "_budget",
        "_cluster",
        "_empty_polls",
        "_errors",
        "_fatal",
        "_fatal_seen",
        "_first_delay",
        "_first_unbudgeted",
        "_holder",
        "_jobs_listed",
        "_last_error",
        "_last_found",
        "_last_latency",
        "_limiter",
        "_on_fail",
        "_opts",
        "_phase",
        "_polls",
        "_queue",
        "_record_poll",
        "_scope",
        "_secret",
        "client",
    )

    def __init__(
        self,
        client: AcceptClient,
        cluster: str,
        secret: str,
        opts: PollerOptions,
        queue: JobQueue[Entry],
        *,
        on_fail: Callable[[ClusterPoller], None],
    ) -> None:
        if not isinstance(cluster, str) or not cluster:
            raise InvalidArgumentError("cluster must be a non-empty string")
        if not isinstance(secret, str) or not secret:
            raise InvalidArgumentError("secret must be a non-empty string", cluster=cluster)
        self.client = client
        self._cluster = cluster
        self._secret = secret
        self._opts = opts
        self._queue = queue
        self._on_fail = on_fail
        self._limiter: asyncio.Semaphore | None = None
        self._budget: IdleBudget | None = None
        self._first_delay = 0.0
        self._first_unbudgeted = False
        self._last_found: float | None = None  # loop time of the last poll with new jobs
        self._record_poll: Callable[[float], None] | None = None  # telemetry, if on
        self._holder: Holder | None = None
        self._scope: anyio.CancelScope | None = None
        self._phase = NEW
        self._fatal: BaseException | None = None
        self._fatal_seen = False
        self._polls = self._empty_polls = self._jobs_listed = self._errors = 0
        self._last_error: str | None = None
        self._last_latency: float | None = None

    @property
    def cluster(self) -> str:
        return self._cluster

    @property
    def options(self) -> PollerOptions:
        return self._opts

    @property
    def phase(self) -> int:
        return self._phase

    @property
    def error(self) -> BaseException | None:
        """The error that stopped this cluster's polling, if one did."""
        return self._fatal

    @property
    def running(self) -> bool:
        return self._phase == RUNNING and self._fatal is None

    @property
    def stats(self) -> PollerStats:
        counts = self._holder.counts if self._holder is not None else None
        return PollerStats(
            cluster=self._cluster,
            polls=self._polls,
            empty_polls=self._empty_polls,
            jobs_listed=self._jobs_listed,
            handed_out=counts.handed_out if counts else 0,
            accepted=counts.accepted if counts else 0,
            lost_to_others=counts.lost if counts else 0,
            vanished=counts.vanished if counts else 0,
            released=counts.released if counts else 0,
            uncertain=counts.uncertain if counts else 0,
            given_up=counts.given_up if counts else 0,
            errors=self._errors,
            last_error=self._last_error,
            last_poll_latency=self._last_latency,
            accept_calls=counts.accept_calls if counts else 0,
            accept_errors=counts.accept_errors if counts else 0,
            last_accept_error=counts.last_accept_error if counts else None,
            held=self._holder.held() if self._holder is not None else 0,
            queued=self._holder.queued() if self._holder is not None else 0,
            hold_expired=counts.hold_expired if counts else 0,
            unhandled=counts.unhandled if counts else 0,
            declined=counts.declined if counts else 0,
        )

    def counters(self) -> dict[str, int]:
        """The counters of :attr:`stats` by name (for telemetry)."""
        stats = self.stats
        return {
            "polls": stats.polls,
            "jobs_listed": stats.jobs_listed,
            "handed_out": stats.handed_out,
            "accepted": stats.accepted,
            "lost_to_others": stats.lost_to_others,
            "released": stats.released,
            "uncertain": stats.uncertain,
            "given_up": stats.given_up,
            "accept_errors": stats.accept_errors,
            "hold_expired": stats.hold_expired,
            "unhandled": stats.unhandled,
        }

    def queued(self) -> int:
        """Jobs of this cluster waiting in the queue for a consumer (for telemetry)."""
        return 0 if self._holder is None else self._holder.queued()

    def unhandled(self) -> list[Job]:
        """Accepted jobs this cluster's poller could not give to a consumer before it
        closed (empty until then)."""
        return [] if self._holder is None else list(self._holder.unhandled)

    def take_error(self) -> BaseException | None:
        """The error that stopped polling, the first time it is asked for (so that it is
        raised once, by whoever asks first)."""
        if self._fatal is None or self._fatal_seen:
            return None
        self._fatal_seen = True
        return self._fatal

    # lifecycle

    def start(
        self,
        tg: anyio.abc.TaskGroup,
        *,
        limiter: asyncio.Semaphore | None = None,
        budget: IdleBudget | None = None,
        first_delay: float = 0.0,
        first_unbudgeted: bool = False,
    ) -> None:
        """Join the cluster's ledger and start polling in ``tg``: the first poll after
        ``first_delay`` seconds, every poll holding ``limiter`` (a group's bound on polls
        in flight) if given, and every idle poll (the first, unless ``first_unbudgeted``,
        and those after a poll that found nothing new or failed) waiting for its turn in
        ``budget`` if given."""
        if self._phase != NEW:
            raise RuntimeError("a cluster poller can be started only once")
        self._limiter = limiter
        self._budget = budget
        self._first_delay = first_delay
        self._first_unbudgeted = first_unbudgeted
        telemetry = load_telemetry() if self.client.telemetry_enabled else None
        record_accept = None
        if telemetry is not None:
            self._record_poll = telemetry.watch(self)
            record_accept = telemetry.accept_recorder(self._cluster)
        self._holder = attach(
            self.client, self._cluster, self._secret, self._queue, self._opts, record_accept
        )
        self._phase = RUNNING
        tg.start_soon(self._run_loop)

    def stop(self) -> None:
        """Stop polling, send the pending accepts now, give back queued jobs."""
        if self._phase != RUNNING:
            return
        self._phase = STOPPED
        if self._scope is not None:
            self._scope.cancel()
        assert self._holder is not None
        self._holder.stop()

    async def settle(self) -> None:
        """Wait (up to ``shutdown_timeout``) until the accepts already requested are
        settled; polling must be stopped first."""
        if self._holder is not None and self._phase != CLOSED:
            await self._holder.settle()

    async def close(self) -> None:
        """Stop, then settle accepts (up to ``shutdown_timeout``), give back held jobs and
        leave the ledger. Shielded from cancellation."""
        with anyio.CancelScope(shield=True):
            self.stop()
            if self._holder is not None and self._phase != CLOSED:
                await self._holder.close()
            if self._record_poll is not None:
                telemetry = load_telemetry()
                if telemetry is not None:
                    telemetry.unwatch(self)
            self._phase = CLOSED

    def _fail(self, exc: BaseException) -> None:
        self._fatal = exc
        assert self._holder is not None
        self._holder.stop()  # polling is over: queued jobs go back at once
        self._on_fail(self)

    # polling

    async def _run_loop(self) -> None:
        if self._phase != RUNNING:
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
        holder = self._holder
        assert holder is not None
        ledger = holder.ledger
        limiter = self._limiter
        budget = self._budget
        loop = asyncio.get_running_loop()
        backoff = 0.0
        delay = self._first_delay
        denials = 0
        idle = not self._first_unbudgeted  # no poll yet found new jobs
        while True:
            if delay > 0:
                await asyncio.sleep(delay)
            # a poll lists every queued job of this cluster again (RequestJobs cannot skip
            # ids): wait until less than a listing's worth of them waits for a consumer, so
            # that the rows the server reads per new job stay bounded however slow the
            # consumers and however large the queue. Waited for before the room, so that
            # the room a consumer frees wakes the pollers that can use it.
            await queue.wait_lane(ledger, opts.max_jobs)
            while not queue.pollable:
                await queue.wait_room()
            # every job whose accept is on the wire is listed again (RequestJobs cannot
            # skip ids): while that would be most of the listing, wait for an accept first
            # (checked once there is room: a consumer taking a batch makes the room, and
            # starts its accept, just before this poller runs again)
            await ledger.sender.wait_for_sends(
                opts.max_jobs, _RELIST_CALLS, _RELIST_IDS, _RELIST_WAIT
            )
            while not queue.pollable:  # in a group, other clusters' polls may fill it
                await queue.wait_room()
            if budget is not None and idle:
                last = self._last_found
                recent = last is not None and loop.time() - last < _RECENT
                await budget.acquire(recent)
            if limiter is not None:
                await limiter.acquire()
                if not queue.pollable:  # other pollers filled the queue meanwhile
                    limiter.release()
                    delay = 0.0
                    continue
            try:
                began = time.monotonic()
                listed, fresh = await self._list(ledger)
            except Exception as exc:
                self._errors += 1
                self._last_error = _describe(exc)
                denials = denials + 1 if isinstance(exc, DeniedError) else 0
                never_listed = self._polls == 0  # no poll of this poller ever succeeded
                allowed = opts.denied_attempts
                if never_listed:
                    allowed = min(allowed, _FIRST_DENIALS)
                if (
                    isinstance(exc, _FATAL)
                    or denials >= allowed
                    or not isinstance(exc, RainbowError)
                ):
                    log.warning("cluster %r: polling stopped: %s", self._cluster, exc)
                    self._fail(exc)
                    return
                idle = True
                backoff = idle_backoff(backoff, opts)
                if denials and never_listed:
                    # most likely a wrong secret: try again soon, to fail soon
                    log.info("cluster %r: first polls denied, trying again: %s", self._cluster, exc)
                    delay = jittered(min(_FIRST_DENIED_WAIT, opts.max_interval))
                    continue
                log.info("cluster %r: poll failed, backing off: %s", self._cluster, exc)
                if denials:
                    # a denial is either permanent (a wrong secret) or a false one the Go
                    # server gives under load: wait long enough for a load spike to pass
                    backoff = min(max(backoff, _DENIED_BACKOFF), opts.max_interval)
                delay = jittered(backoff)
                continue
            finally:
                if limiter is not None:
                    limiter.release()
            if self._phase != RUNNING:
                return
            denials = 0
            self._polls += 1
            self._jobs_listed += listed
            self._last_latency = time.monotonic() - began
            if self._record_poll is not None:
                self._record_poll(self._last_latency)
            found = ledger.seq
            # the jobs beyond the room left are not tracked: a later poll lists them again
            queue.begin_run()
            holder.track(fresh[: max(queue.room, 0)], found)
            if queue.room > 0:
                queue.wake_room()  # pass unused room (and this poll's share) on
            if fresh:
                # new jobs, even if other pollers filled the shared queue during the
                # listing and none fitted: poll again as soon as there is room (the
                # loop's top waits for it) rather than back off while they wait
                backoff = delay = 0.0
                idle = False
                self._last_found = loop.time()
            else:
                self._empty_polls += 1
                backoff = idle_backoff(backoff, opts)
                delay = jittered(backoff)
                idle = True

    async def _list(self, ledger: AcceptLedger) -> tuple[int, list[Job]]:
        """One RequestJobs: how many jobs it listed, and those that may be handed out
        (only these are parsed)."""
        want = min(self._opts.max_jobs, self._queue.room)
        asked = min(want + ledger.hidden_count(), P.INT32_MAX)
        start = ledger.begin_listing()
        queue = self._queue
        queue.listing += 1
        try:
            listing = await self.client.request_listing(
                self._cluster, self._secret, asked, skip=ledger.hidden(start, queue)
            )
            ledger.listed(start, listing.ids, asked)
            return len(listing.ids), listing.jobs
        finally:
            queue.listing -= 1
            # this poll's share of the room is free again (it may have failed)
            queue.wake_room()
            ledger.end_listing(start)


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
      accept ledger, so two of them never hand out the same job.
    - **No loss.** Every job waiting for the cluster is eventually handed out: each
      request asks for ``max_jobs`` more than the ids this process skips, so a listing
      (lowest ids first) always looks past them, however large the backlog.
    - **One owner.** ``accept()`` returns True only when this consumer owns the job, and
      False only when someone else took it; when neither can be known it raises
      :class:`AcceptUncertainError` (see ``accept_mode``). An AcceptJobs whose answer
      was lost (deadline, dropped connection) is sent again until an answer comes, so
      in batched mode a job taken by a lost attempt is still reported as ours. An
      accept that may have acted is never reported as "not accepted", whatever happens
      to the poller, the group or the client meanwhile.
    - **Release.** ``job.release()`` puts the job back: it stays on the server and a later
      poll hands it out again. A job dropped without accept or release is released when
      garbage collected.
    - **Failed deliveries.** A job released as failed (``release(failed=True)``, or a
      handler of ``run()`` that raised) is handed out again only after a growing delay,
      and after ``max_deliveries`` failures no more by this process.
    - **Cancellation.** Cancelling a consumer inside ``accept()`` never loses the job: an
      accept not yet sent is withdrawn and the job released; one already on the wire
      finishes in the background, and if it took the job the job is handed out again,
      already accepted (``job.accepted`` is True and ``accept()`` returns True at once).
    - **Backpressure.** At most ``queue_size`` listed jobs wait in the queue; while it is
      full the poller does not poll. In a group, once the shared queue is full, polls
      wait until there is room for ``max_jobs`` (at most half the queue), so that a
      poll, which lists every job in flight again, brings a batch of new ones. For the
      same reason a poll waits (up to a second) while two accepts of at least
      ``max_jobs`` ids each, 200 or more in all, are unanswered: batches of whole
      listings, accepted in one call each.
    - **Graceful shutdown.** ``stop()`` (or leaving the context) stops polling, ends
      iteration (``get()`` raises :class:`PollerStoppedError`), sends the accepts waiting
      for their window, and gives back the jobs still queued, untouched on the server.
      Jobs already handed out can still be accepted (at once) until the context is left;
      leaving it waits up to ``shutdown_timeout`` for every accept requested, reports
      those still unanswered then as uncertain, and releases every job not accepted.
    - **Failure isolation.** Transient errors (unavailable, deadline, database locked,
      other server errors) are counted in ``stats`` and retried with backoff; they never
      stop the poller. Wrong or missing credentials (``denied_attempts`` denials in a
      row, a missing secret, a TLS failure, a closed client) stop this poller only, as
      does an unexpected exception (a bug, logged): ``get()`` and iteration raise the
      error, and leaving the context raises it if nobody saw it. A poller none of whose
      polls has succeeded yet stops after 3 denials in a row (fewer if
      ``denied_attempts`` says so), polled again 0.25 to 0.5 s after each, so that a
      wrong secret or an unknown cluster fails within about a second; the quick
      re-tries step past a false denial of the Go server under load, which mostly
      comes alone (a spike that denies all three stops a poller before its first
      listing). Once a poll has succeeded, each denial is followed by a wait of at
      least a second, and ``denied_attempts`` of them in a row stop the poller.
    - **Bounded memory.** The bookkeeping holds only jobs in flight, tombstones of ids
      settled while a listing was running, and the ids of jobs whose deliveries failed.

    Options: see :class:`PollerOptions` (pass one, or its fields as keywords).
    The secret is never logged and never shown in ``repr()``.
    """

    __slots__ = ("_polling", "_queue", "_tg")

    def __init__(
        self,
        client: AcceptClient,
        cluster: str,
        secret: str,
        options: PollerOptions | None = None,
        **overrides: Unpack[PollerKwargs],
    ) -> None:
        opts = resolve_options(options, overrides, queue_size=DEFAULTS.queue_size)
        self._queue: JobQueue[Entry] = JobQueue(opts.queue_size, refill=refill_size(opts))
        self._polling = ClusterPoller(
            client, cluster, secret, opts, self._queue, on_fail=self._failed
        )
        self._tg: anyio.abc.TaskGroup | None = None

    # public surface

    @property
    def cluster(self) -> str:
        """The cluster this poller lists jobs for."""
        return self._polling.cluster

    @property
    def options(self) -> PollerOptions:
        """The options in force (the :class:`PollerOptions` with the keywords applied)."""
        return self._polling.options

    @property
    def error(self) -> BaseException | None:
        """The error that stopped this poller, if one did."""
        return self._polling.error

    @property
    def running(self) -> bool:
        """True while the poller polls (entered, not stopped, not failed)."""
        return self._polling.running

    @property
    def stats(self) -> PollerStats:
        """A snapshot of the counters."""
        return self._polling.stats

    def qsize(self) -> int:
        """Jobs waiting in the queue."""
        return len(self._queue)

    def _consumer_queue(self) -> JobQueue[Entry]:
        if self._polling.phase == NEW:
            raise RuntimeError("enter the poller first: async with client.poller(...)")
        return self._queue

    def halt(self) -> None:
        """Stop polling now, without waiting (see :meth:`stop`)."""
        if self._polling.phase == RUNNING:
            self._polling.stop()
            self._queue.close(self._stopped_error)

    async def stop(self) -> None:
        """Stop polling and handing out: queued jobs are given back, accepts waiting for
        their window go out now, and this waits until every accept already requested is
        settled (up to ``shutdown_timeout``; after that they are settled when the context
        is left). Jobs already handed out can still be accepted or released until the
        context is left. Safe to call from a consumer or a handler; it does not wait for
        ``run()``'s handlers (``run()`` returns once they finish)."""
        self.halt()
        await self._polling.settle()

    async def aclose(self) -> None:
        """Leave the poller as ``async with`` does (for code that cannot use it)."""
        await self.__aexit__(None, None, None)

    async def __aenter__(self) -> Poller:
        if self._polling.phase != NEW:
            raise RuntimeError("a Poller can be entered only once")
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        self._polling.start(tg)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        tg = self._tg
        if tg is None:
            if self._polling.phase == CLOSED:
                return  # left already (aclose() after the block, say)
            raise RuntimeError("the poller was not entered")
        self._tg = None
        try:
            self.halt()
            await self._polling.close()
        finally:
            tg.cancel_scope.cancel()
            # the body's own exception propagates as is (not wrapped in a group)
            await tg.__aexit__(None, None, None)
        if exc is None:
            error = self._polling.take_error()
            if error is not None:
                raise error
            unhandled = self._polling.unhandled()
            if unhandled:
                raise UnhandledJobsError(
                    f"{len(unhandled)} accepted job(s) of cluster {self.cluster!r} were not "
                    f"handled before the poller closed: ids {sorted(j.id for j in unhandled)}; "
                    "they are no longer on the server",
                    jobs=unhandled,
                    cluster=self.cluster,
                )

    def __repr__(self) -> str:
        return (
            f"Poller(cluster={self.cluster!r}, phase={PHASES[self._polling.phase]}, "
            f"queued={len(self._queue)}, mode={self._polling.options.accept_mode.value})"
        )

    # internals

    def _stopped_error(self) -> BaseException:
        error = self._polling.take_error()
        if error is not None:
            return error
        return PollerStoppedError("the poller was stopped", cluster=self.cluster)

    def _failed(self, member: ClusterPoller) -> None:
        self._queue.close(self._raise_fatal)

    def _raise_fatal(self) -> BaseException:
        error = self._polling.error
        assert error is not None
        self._polling.take_error()
        return error
