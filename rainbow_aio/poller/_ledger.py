"""The accept ledger: the one owner of everything about accepting one cluster's jobs.

RequestJobs only lists, and AcceptJobs is the only claim. Between the two, this process
has to remember which listed jobs it already handed out, which accepts are waiting to be
sent, which are on the wire or being sent again after a lost answer, and how each one
ended. All of that lives in one :class:`AcceptLedger` per (client, cluster), and nowhere
else. The ledger keeps the jobs and their states; the sending of their accepts is done
by the :class:`~rainbow_aio.poller._sends.AcceptSender` it owns (``_sends.py``), which
tells it how each call ended and leaves the states to it:

- **entries**: one :class:`Entry` per job in flight (queued, held by a consumer, being
  accepted). Its state changes only in this module. Consumers see it through a
  :class:`~rainbow_aio.PolledJob` handle, which only asks and forwards.
- **listings**: a counter and **tombstones**. A listing never hands out an id in flight.
  An id settled (accepted, lost, uncertain) while a listing was running may still come
  back from that listing, because the server read its rows before the delete; each
  tombstone records the listing counter at the time, hides the id only from listings
  that started no later, and is dropped once no such listing runs.
- **holders**: each poller (or group member) attaches as a :class:`Holder`, with its
  queue, its options, its counters, and its outbox at the sender (its secret, its
  pending accept batch and window, and the tasks sending its accepts). Closing a holder
  has the sender send its batch, wait up to ``shutdown_timeout`` for its sends and
  cancel what is left (those accepts are then reported uncertain, never "not
  accepted"), and releases its held jobs; only then does it detach. The ledger lives
  while any holder is attached, so a cluster removed and added again while its old
  poller is still closing gets the same ledger back, with every job in flight still
  known.
- **holds**: a job held longer than ``max_hold`` without ``accept()`` or ``release()``
  is given back (checked in sweeps, one timer per ledger).
- **failed deliveries**: a job released because its consumer failed is hidden from
  listings for a growing, jittered delay, and after ``max_deliveries`` failures for good
  (in this process; it stays on the server).
- **settling**: what the sender reports becomes states here. An accepted job leaves the
  ledger, and is handed out again, already owned, if its consumers were all cancelled
  meanwhile; a lost or uncertain one leaves it too; each is hidden from the listings
  still running. The jobs of a call that certainly did not act go back to their
  consumers, who get the call's error from ``accept()`` and still hold them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import weakref
from collections.abc import Callable, Collection, Container, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

from .. import _accepters
from .._exceptions import RainbowError
from .._models import Job, JobListing
from ._errors import AcceptUncertainError, JobReleasedError, PollerStoppedError
from ._failures import FailureRecords
from ._job import (
    ACCEPTED,
    ACCEPTING,
    DROPPED,
    HELD,
    LOST,
    QUEUED,
    RELEASED,
    UNCERTAIN,
    JobBatch,
    JobEntry,
    PolledJob,
)
from ._listings import ListingClock
from ._options import PollerOptions
from ._queue import JobQueue
from ._sends import AcceptSender, Outbox, SendClient, resolve_when_all

__all__ = ["AcceptClient", "AcceptCounts", "AcceptLedger", "Entry", "Holder", "attach"]

log = logging.getLogger("rainbow_aio.poller")

# Entry.redelivery: an accepted job whose consumers were all cancelled is handed out again
# (_IN_QUEUE), or will be once its retry delay is over (_WAITING)
_NOT_NEEDED, _IN_QUEUE, _CLAIMED, _WAITING = 0, 1, 2, 3


class AcceptClient(SendClient, Protocol):
    """What the ledger and the pollers need from :class:`~rainbow_aio.RainbowClient`
    (``accept_jobs()``, for the sender, with it)."""

    @property
    def telemetry_enabled(self) -> bool: ...

    @property
    def timeout(self) -> float: ...

    async def request_listing(
        self,
        cluster: str,
        secret: str,
        max_jobs: int | None = ...,
        *,
        skip: Container[int] = ...,
        timeout: float | None = ...,  # noqa: ASYNC109
    ) -> JobListing: ...


@dataclass(slots=True)
class AcceptCounts:
    """A holder's job counters; written only by its ledger (the AcceptJobs call counters
    by the ledger's sender), read by its poller."""

    handed_out: int = 0
    accepted: int = 0
    lost: int = 0
    vanished: int = 0
    released: int = 0
    uncertain: int = 0
    given_up: int = 0
    accept_calls: int = 0
    accept_errors: int = 0
    last_accept_error: str | None = None
    hold_expired: int = 0
    unhandled: int = 0
    declined: int = 0


class Entry:
    """The ledger's record of one listed job (see the module docstring).

    The queue holds entries; a consumer gets a :class:`PolledJob` handle made by
    :meth:`hand_out`. Every method forwards to the ledger, which alone changes the state.
    """

    __slots__ = (
        "done",
        "error",
        "failures",
        "found",
        "handle",
        "held_at",
        "holder",
        "job",
        "ledger",
        "redelivery",
        "state",
        "waiters",
    )

    def __init__(self, job: Job, ledger: AcceptLedger, holder: Holder, found: int) -> None:
        self.job = job
        self.ledger = ledger
        self.holder = holder
        self.state = QUEUED
        # the ledger's listing counter when the job was last known to be waiting
        self.found = found
        # resolved when the AcceptJobs call carrying this job's accept has settled it (one
        # future per call, shared by the jobs of the call); the outcome is in the state
        self.done: asyncio.Future[None] | None = None
        # consumers currently waiting in accept()
        self.waiters = 0
        self.handle: weakref.ref[PolledJob] | None = None
        self.redelivery = _NOT_NEEDED
        # why the accept was uncertain, the error of a call that certainly did not act, or
        # why the job was given back without its consumer asking (hold limit, closing)
        self.error: RainbowError | None = None
        # loop time when a consumer last got the job to hold (for max_hold)
        self.held_at = 0.0
        # failed deliveries of an accepted job (run() handlers that raised)
        self.failures = 0

    @property
    def cluster(self) -> str:
        return self.ledger.cluster

    @property
    def lane(self) -> AcceptLedger:
        """Queues keep each cluster's jobs in a lane of their own."""
        return self.ledger

    @property
    def deliverable(self) -> bool:
        """Whether a consumer may be given this entry from a queue."""
        state = self.state
        return state is QUEUED or (state is ACCEPTED and self.redelivery == _IN_QUEUE)

    def hand_out(self) -> PolledJob:
        """Give the job to a consumer (it came out of a queue): the handle it works with."""
        return self.ledger.hand_out(self)

    def hand_out_with(self, others: list[Entry]) -> JobBatch:
        """Give this job and ``others`` (of the same cluster) to a consumer together."""
        return self.ledger.hand_out_batch([self, *others])

    async def accept(self) -> bool:
        return await self.ledger.accept(self)

    def release(self, *, failed: bool) -> None:
        self.ledger.release(self, failed=failed)

    def retry_later(self) -> None:
        self.ledger.retry_later(self)

    def decline(self) -> None:
        self.ledger.decline(self)

    def report_unhandled(self, why: str) -> None:
        self.ledger.report_unhandled(self, why)

    def collected(self) -> None:
        self.ledger.collected(self)


class Holder:
    """One poller's membership in a ledger: what it accepts with, and what it holds."""

    __slots__ = (
        "accept_timeout",
        "closed",
        "counts",
        "ledger",
        "opts",
        "orphans",
        "outbox",
        "queue",
        "retries",
        "unhandled",
    )

    def __init__(
        self,
        ledger: AcceptLedger,
        secret: str,
        queue: JobQueue[Entry],
        opts: PollerOptions,
        record_accept: Callable[[float], None] | None = None,
    ) -> None:
        self.ledger = ledger
        self.queue = queue
        self.opts = opts
        self.counts = AcceptCounts()
        # what the ledger's sender keeps of this holder's accepts on their way: its
        # secret, its pending batch and window, the tasks sending them; record_accept
        # (telemetry), if given, is told how long each of its AcceptJobs took
        self.outbox: Outbox[Entry] = Outbox(secret, opts, self.counts, record_accept)
        # accepted jobs put back in the queue for want of a consumer, until one takes them
        self.orphans: set[Entry] | None = None
        # accepted jobs whose handler failed, waiting out their retry delay
        self.retries: dict[Entry, asyncio.TimerHandle] = {}
        # accepted jobs this holder could not give to a consumer before it closed
        self.unhandled: list[Job] = []
        # how long accept() waits for an answer before it says uncertain
        self.accept_timeout = opts.accept_timeout or 2 * ledger.client.timeout
        self.closed = False  # detached: its jobs can no longer be accepted

    @property
    def sends(self) -> set[asyncio.Task[None]]:
        """The tasks sending this holder's accepts (resends included)."""
        return self.outbox.sends

    def track(self, jobs: Sequence[Job], found: int) -> None:
        """A listing found ``jobs`` waiting: record them and queue them."""
        self.ledger.track(self, jobs, found)

    def stop(self) -> None:
        """Polling stopped: send the pending batch now, give back what is queued."""
        self.ledger.stop_holder(self)

    def queued(self) -> int:
        """How many of this holder's jobs wait in its queue for a consumer: listed ones,
        and accepted ones waiting to be handed out again (the queue keeps the count)."""
        return self.queue.waiting(self.ledger)

    def held(self) -> int:
        """How many of this holder's jobs consumers hold now (handed out, not settled)."""
        return self.ledger.held_of(self)

    async def settle(self) -> None:
        """Wait up to ``shutdown_timeout`` for this holder's accepts to settle."""
        await self.ledger.settle_holder(self)

    async def close(self) -> None:
        """Settle this holder's accepts (bounded by ``shutdown_timeout``), give back its
        held jobs, and detach. Run it shielded from cancellation."""
        await self.ledger.close_holder(self)


class AcceptLedger:
    """Everything about accepting one cluster's jobs in this process (module docstring)."""

    __slots__ = (
        "__weakref__",
        "client",
        "cluster",
        "entries",
        "hold_sweep",
        "holders",
        "listings",
        "records",
        "sender",
    )

    def __init__(self, client: AcceptClient, cluster: str) -> None:
        self.client = client
        self.cluster = cluster
        self.entries: dict[int, Entry] = {}
        self.listings = ListingClock()
        self.records = FailureRecords()
        # the timer of the next check of holds against max_hold, while jobs are held
        self.hold_sweep: asyncio.TimerHandle | None = None
        self.holders: set[Holder] = set()
        # sends the accepts, and reports to this ledger how each call ended
        self.sender: AcceptSender[Entry] = AcceptSender(self, client, cluster)
        # this ledger accepts for the cluster for as long as it lives
        _accepters.enter(cluster, self)

    @property
    def per_id(self) -> bool:
        """Whether the batched mode sends one id per call now (another accepter seen)."""
        return self.sender.per_id

    # -- listings -----------------------------------------------------------------------

    @property
    def seq(self) -> int:
        """The start number of the latest listing."""
        return self.listings.seq

    def begin_listing(self) -> int:
        return self.listings.begin()

    def end_listing(self, start: int) -> None:
        self.listings.end(start)

    def hidden_count(self) -> int:
        """How many listed ids this process may skip: a poll asks for that many more, so
        that a listing (lowest ids first) always looks past them."""
        return len(self.entries) + len(self.listings) + self.records.hidden_count()

    def hidden(self, start: int, queue: JobQueue[Entry] | None = None) -> Container[int]:
        """The ids a listing that started at ``start`` must not hand out. Asked right
        after the listing's answer arrives (the client skips their JSON), lowest id first.

        With ``queue``, the new ids beyond the room ``queue`` has when the answer arrives
        (at least one) are skipped too: they would not be queued (a later poll lists them
        again), so their JSON need not be parsed. A poll asks for as many more ids as
        this process may skip, and the jobs whose accept the server has already done
        are no longer listed, so a listing often brings more new jobs than there is room
        for."""
        return _Hidden(self, start, queue)

    def listed(self, start: int, ids: Collection[int], asked: int) -> None:
        """A listing that started at ``start`` returned ``ids`` (every id listed).

        When the listing was complete (fewer jobs than ``asked``, so it showed every job
        waiting), queued jobs known to wait before it started that it no longer shows
        leave their queues (``vanished``): most likely someone else took them, and a
        consumer would only be told False. This is not taken as proof of another accepter
        (the Go server's listings can miss rows under load); if such a job is still
        waiting, a later listing hands it out again, with its failed deliveries still
        counted: only a job taken on the server (accepted, lost, uncertain) has them
        dropped at once.

        Failed-delivery records (and the given-up mark) are forgotten once listings have
        not shown their job for ``_FORGET_AFTER`` seconds. A complete listing is evidence
        of absence for every id it does not show; a full one (listings are lowest id
        first) for the ids below its highest that it does not show, so a standing backlog
        does not keep records of jobs taken elsewhere for ever. One listing that misses a
        row (a cut-short answer) resets nothing: the job must stay unseen that long.
        """
        complete = len(ids) < asked
        if not complete and not self.records and not self.records.absent_since:
            return  # an incomplete listing says nothing of the ids it does not show
        seen = ids if isinstance(ids, set | frozenset) else set(ids)
        if complete:
            vanished = [
                entry
                for job_id, entry in self.entries.items()
                if job_id not in seen and entry.state is QUEUED and entry.found < start
            ]
            for entry in vanished:
                entry.state = DROPPED
                self._forget(entry)
                entry.holder.counts.vanished += 1
                entry.holder.queue.discard(entry)
        self.records.observe(seen, complete=complete)

    # -- holders ------------------------------------------------------------------------

    def attach(
        self,
        secret: str,
        queue: JobQueue[Entry],
        opts: PollerOptions,
        record_accept: Callable[[float], None] | None = None,
    ) -> Holder:
        holder = Holder(self, secret, queue, opts, record_accept)
        self.holders.add(holder)
        return holder

    def track(self, holder: Holder, jobs: Sequence[Job], found: int) -> None:
        entries = self.entries
        new: list[Entry] = []
        for job in jobs:
            if job.id in entries:
                continue  # hidden from listings; never queued twice
            entry = entries[job.id] = Entry(job, self, holder, found)
            new.append(entry)
        holder.queue.put_all(new)

    def stop_holder(self, holder: Holder) -> None:
        self.sender.stop(holder.outbox)
        for entry in self._entries_of(holder):
            if entry.state is QUEUED:
                entry.state = DROPPED
                self._forget(entry)
                holder.queue.discard(entry)
                holder.counts.released += 1

    async def settle_holder(self, holder: Holder) -> None:
        await self.sender.settle(holder.outbox)

    async def close_holder(self, holder: Holder) -> None:
        if holder.closed:
            return
        self.stop_holder(holder)
        await self.settle_holder(holder)
        holder.closed = True  # from here on, accept() raises PollerStoppedError
        await self.sender.cancel(holder.outbox)
        for entry in self._entries_of(holder):
            if entry.state is HELD:
                self._give_back(entry)
        # accepted jobs no consumer took, and those waiting out a retry delay: this
        # process is their only holder, so the application is told (never only a log)
        for entry in list(holder.orphans or ()):
            if entry.redelivery == _IN_QUEUE:
                entry.redelivery = _CLAIMED
                holder.queue.discard(entry)
                self._unhandled(entry, "nobody took it again before its poller closed")
        holder.orphans = None
        for entry, timer in list(holder.retries.items()):
            timer.cancel()
            entry.redelivery = _CLAIMED
            self._unhandled(entry, "its handler failed and the poller closed before a retry")
        holder.retries.clear()
        self.holders.discard(holder)
        if not self.holders:
            if self.hold_sweep is not None:
                self.hold_sweep.cancel()
                self.hold_sweep = None
            _forget_ledger(self)

    def held_of(self, holder: Holder) -> int:
        return sum(
            1 for entry in self.entries.values() if entry.holder is holder and entry.state is HELD
        )

    def _entries_of(self, holder: Holder) -> list[Entry]:
        return [entry for entry in self.entries.values() if entry.holder is holder]

    # -- consumers ----------------------------------------------------------------------

    def hand_out(self, entry: Entry) -> PolledJob:
        return self.hand_out_all([entry])[0]

    def hand_out_all(self, entries: list[Entry]) -> list[PolledJob]:
        """Give ``entries`` (out of a queue) to a consumer: their handles, in order. The
        loop time and the hold sweep's timer are looked up once for all of them."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        handles: list[PolledJob] = []
        append = handles.append
        last: Holder | None = None
        max_hold: float | None = None
        for entry in entries:
            holder = entry.holder
            if holder is not last:  # a batch's jobs are (almost always) one holder's
                last = holder
                max_hold = holder.opts.max_hold
            state = entry.state
            if state is QUEUED:
                entry.state = HELD
                if max_hold is not None:
                    entry.held_at = now
                    if self.hold_sweep is None:
                        # one timer per ledger, not one per job: holds are checked in sweeps
                        interval = min(max(max_hold / 4, 0.01), 60.0)
                        self.hold_sweep = loop.call_later(interval, self._sweep_holds, interval)
            elif state is ACCEPTED:
                entry.redelivery = _CLAIMED
                self._adopted(entry)
            holder.counts.handed_out += 1
            ref = entry.handle
            handle = ref() if ref is not None else None
            if handle is None:
                handle = PolledJob(entry)
                entry.handle = weakref.ref(handle)
            append(handle)
        return handles

    def hand_out_batch(self, entries: list[Entry]) -> JobBatch:
        return JobBatch(self.cluster, self.hand_out_all(entries), self._accept_entries)

    def _accept_entries(
        self, entries: list[JobEntry]
    ) -> Coroutine[Any, Any, list[bool | BaseException | None]]:
        # the entries of a batch this ledger handed out (JobBatch.subset() keeps to them);
        # accept_batch's own coroutine, not one more around it
        return self.accept_batch(cast("list[Entry]", entries))

    async def accept_batch(self, entries: list[Entry]) -> list[bool | BaseException | None]:
        """Accept ``entries`` together: the held ones go out at once, in one AcceptJobs per
        ``accept_batch_size`` in the batched mode (one per job in the shared mode). Per
        entry: what ``accept()`` returns or raises, or None for one given back before.

        Waits on the calls' futures (one per call), not on one task per job."""
        requested: dict[Holder, list[Entry]] = {}
        last: Holder | None = None
        mine: list[Entry] = []
        for entry in entries:
            if entry.state is HELD:
                holder = entry.holder
                if holder is not last:  # a batch's jobs are (almost always) one holder's
                    if holder.closed:
                        continue
                    last = holder
                    mine = requested.setdefault(holder, [])
                entry.state = ACCEPTING
                entry.error = None
                mine.append(entry)
        for holder, batch in requested.items():
            self.sender.send_now(holder.outbox, batch)
        waiting = [entry for entry in entries if entry.state is ACCEPTING]
        timed_out: list[Entry] = []
        if waiting:
            at_most = min(holder.accept_timeout for holder in {e.holder for e in waiting})
            timed_out = await self._wait(waiting, at_most)
        late = {id(entry) for entry in timed_out}
        outcomes: list[bool | BaseException | None] = []
        append = outcomes.append
        for entry in entries:
            if late and id(entry) in late:
                append(self._too_slow(entry))
            elif entry.state is ACCEPTED and entry.redelivery != _IN_QUEUE:
                entry.redelivery = _CLAIMED  # what _outcome() does, without a call per job
                append(True)
            else:
                append(self._outcome(entry))
        return outcomes

    async def accept(self, entry: Entry) -> bool:
        state = entry.state
        if state is HELD:
            holder = entry.holder
            if holder.closed:
                raise self._closed_error(entry)
            entry.state = ACCEPTING
            entry.error = None
            self.sender.request(holder.outbox, entry)
        elif state is not ACCEPTING:
            outcome = self._outcome(entry)
            if isinstance(outcome, bool):
                return outcome
            if outcome is None:
                raise self._released_error(entry)
            raise outcome
        if await self._wait([entry], entry.holder.accept_timeout):
            outcome = self._too_slow(entry)
        else:
            outcome = self._outcome(entry)
        if isinstance(outcome, bool):
            return outcome
        if outcome is None:
            raise self._released_error(entry)
        raise outcome

    async def _wait(self, entries: list[Entry], at_most: float) -> list[Entry]:
        """Wait until the calls carrying ``entries``' accepts have settled them, or
        ``at_most`` seconds; the entries still unsettled then (which go on being resolved,
        and are handed out again, already accepted, if that turns out to be the answer).
        If the caller is cancelled first, entries nobody else waits for are abandoned."""
        for entry in entries:
            entry.waiters += 1
        calls = {e.done for e in entries}  # one per call
        pending = [done for done in calls if done is not None and not done.done()]
        try:
            if pending:
                await _all_done(pending, at_most)
        except asyncio.CancelledError:
            self._unwait(entries, abandon=True)
            raise
        late = [entry for entry in entries if entry.state is ACCEPTING]
        self._unwait(entries, abandon=False)
        for entry in late:
            if entry.waiters == 0:
                self._abandoned(entry)
        return late

    def _unwait(self, entries: list[Entry], *, abandon: bool) -> None:
        for entry in entries:
            entry.waiters -= 1
            if abandon and entry.waiters == 0:
                self._abandoned(entry)

    def _outcome(self, entry: Entry) -> bool | BaseException | None:
        """What ``accept()`` says for ``entry`` now: True, False, the exception to raise,
        or None when the job was given back (by this consumer or a cancelled accept)."""
        state = entry.state
        if state is ACCEPTED:
            self._claim(entry)
            return True
        if state is LOST:
            return False
        if state is UNCERTAIN:
            assert isinstance(entry.error, AcceptUncertainError)
            return _again(entry.error)
        if state is HELD and entry.error is not None:
            return entry.error  # the call certainly did not act; the job is still held
        if entry.holder.closed and state is not ACCEPTING:
            return self._closed_error(entry)
        return None

    def release(self, entry: Entry, *, failed: bool) -> None:
        if entry.state is not HELD:
            return
        self._give_back(entry)
        if failed:
            self._failed_delivery(entry)

    def decline(self, entry: Entry) -> None:
        """The consumer will never accept this job (it cannot run it here): give it back
        and never hand it out again in this process, while the server lists it."""
        if entry.state is not HELD:
            return
        self._give_back(entry)
        entry.holder.counts.declined += 1
        self.records.declined.add(entry.job.id)

    def retry_later(self, entry: Entry) -> None:
        """A consumer failed on a job this process owns: hand it to a consumer again
        after the redelivery delay, or give up on it after ``max_deliveries`` failures
        (``on_give_up``). It is no longer on the server, so it never goes back there."""
        if entry.state is not ACCEPTED or entry.redelivery in (_IN_QUEUE, _WAITING):
            return
        holder = entry.holder
        opts = holder.opts
        entry.failures += 1
        if holder.closed:
            entry.redelivery = _CLAIMED
            self._unhandled(entry, "its handler failed after its poller closed")
            return
        if entry.failures >= opts.max_deliveries:
            entry.redelivery = _CLAIMED
            self._give_up(entry, entry.failures, owned=True)
            return
        delay = min(opts.redelivery_delay * 2 ** (entry.failures - 1), opts.max_redelivery_delay)
        entry.redelivery = _WAITING
        holder.retries[entry] = asyncio.get_running_loop().call_later(
            delay * (0.5 + random.random() / 2), self._retry_due, entry
        )

    def report_unhandled(self, entry: Entry, why: str) -> None:
        if entry.state is ACCEPTED and entry.redelivery not in (_IN_QUEUE, _WAITING):
            entry.redelivery = _CLAIMED
            # the caller reports the job itself (run() raises it): not kept for closing
            self._unhandled(entry, why, keep=False)

    def _retry_due(self, entry: Entry) -> None:
        holder = entry.holder
        if holder.retries.pop(entry, None) is None or entry.redelivery != _WAITING:
            return
        entry.redelivery = _NOT_NEEDED
        self._redeliver(entry)

    def collected(self, entry: Entry) -> None:
        """The consumer dropped its handle: a job it still held goes back; an accepted job
        it had not claimed yet (cancelled, timed out) waits in the queue for another."""
        if entry.state is HELD:
            log.debug(
                "cluster %r: job %d was dropped unsettled; released", self.cluster, entry.job.id
            )
            self._give_back(entry)

    def _claim(self, entry: Entry) -> None:
        """A consumer has the accepted job: never hand it out again."""
        if entry.redelivery == _IN_QUEUE:
            entry.holder.queue.discard(entry)  # its queued copy is no longer deliverable
            self._adopted(entry)
        entry.redelivery = _CLAIMED

    @staticmethod
    def _adopted(entry: Entry) -> None:
        orphans = entry.holder.orphans
        if orphans is not None:
            orphans.discard(entry)

    def _abandoned(self, entry: Entry) -> None:
        """Every consumer waiting in ``accept()`` for ``entry`` was cancelled."""
        state = entry.state
        if state is ACCEPTING:
            if self.sender.withdraw(entry.holder.outbox, entry):
                self._give_back(entry)  # never sent
            # else: on the wire; accepted() hands it out again if it was taken
        elif state is ACCEPTED and entry.redelivery == _NOT_NEEDED:
            self._redeliver(entry)  # taken just as its consumers were cancelled
        elif state is HELD:
            self._give_back(entry)  # the accept certainly failed; nobody will retry it

    def _sweep_holds(self, interval: float) -> None:
        """Give back the jobs consumers have held longer than ``max_hold``; come back
        while any job is held."""
        self.hold_sweep = None
        now = asyncio.get_running_loop().time()
        held = False
        for entry in [e for e in self.entries.values() if e.state is HELD]:
            max_hold = entry.holder.opts.max_hold
            if max_hold is not None and now - entry.held_at >= max_hold:
                self._hold_expired(entry)
            else:
                held = True
        if held:
            self.hold_sweep = asyncio.get_running_loop().call_later(
                interval, self._sweep_holds, interval
            )

    def _hold_expired(self, entry: Entry) -> None:
        """A consumer held ``entry`` longer than ``max_hold``: give it back, so that a
        stray reference cannot hide a job from every listing for ever."""
        holder = entry.holder
        self._give_back(entry)
        holder.counts.hold_expired += 1
        entry.error = JobReleasedError(
            f"job {entry.job.id} was held longer than max_hold "
            f"({holder.opts.max_hold:g} s) without accept() or release(), and was given back",
            cluster=self.cluster,
            job_id=entry.job.id,
        )
        log.warning(
            "cluster %r: job %d was held for %g s without accept() or release(); given back "
            "(max_hold)",
            self.cluster,
            entry.job.id,
            holder.opts.max_hold,
        )

    def _released_error(self, entry: Entry) -> RainbowError:
        if isinstance(entry.error, JobReleasedError):
            return entry.error
        return JobReleasedError(
            f"job {entry.job.id} cannot be accepted: it was given back ({entry.state.value}) "
            "before accept() was called",
            cluster=self.cluster,
            job_id=entry.job.id,
        )

    def _too_slow(self, entry: Entry) -> bool | BaseException | None:
        """What ``accept()`` says of ``entry`` once ``accept_timeout`` ran out."""
        if entry.state is not ACCEPTING:
            return self._outcome(entry)  # settled (or withdrawn) meanwhile
        timeout = entry.holder.accept_timeout
        error = AcceptUncertainError(
            f"cannot tell yet whether job {entry.job.id} is ours: AcceptJobs is still "
            f"unanswered after {timeout:g} s (accept_timeout). The poller goes on finding "
            "out; if the job turns out to be ours it is handed out again, already accepted "
            "(do not run it now)",
            cluster=self.cluster,
            job_id=entry.job.id,
            resolving=True,
        )
        entry.holder.counts.uncertain += 1
        return error

    def _unhandled(self, entry: Entry, why: str, *, keep: bool = True) -> None:
        """An accepted job this process could not give to a consumer: it is nowhere else
        (the server deleted it), so the application gets it: ``on_unhandled``, counted,
        and raised or returned by whoever closes the poller."""
        holder = entry.holder
        holder.counts.unhandled += 1
        if keep:
            holder.unhandled.append(entry.job)
        log.error(
            "cluster %r: job %d was accepted by this process but not handled: %s "
            "(it is no longer on the server; see on_unhandled)",
            self.cluster,
            entry.job.id,
            why,
        )
        hook = holder.opts.on_unhandled
        if hook is not None:
            try:
                hook(entry.job)
            except Exception:
                log.exception(
                    "cluster %r: on_unhandled failed for job %d", self.cluster, entry.job.id
                )

    def _closed_error(self, entry: Entry) -> PollerStoppedError:
        return PollerStoppedError(
            f"job {entry.job.id} cannot be accepted: its poller is closed (the job was given back)",
            cluster=self.cluster,
        )

    # -- settling: how each AcceptJobs call ended ---------------------------------------

    def accepted_all(self, batch: list[Entry]) -> None:
        """``accepted`` for each job of one call's batch (all of one holder)."""
        entries = self.entries
        records = self.records if self.records or self.records.absent_since else None
        ids = []
        for entry in batch:
            entry.state = ACCEPTED
            job_id = entry.job.id
            ids.append(job_id)
            if entries.get(job_id) is entry:
                del entries[job_id]
            if records is not None:
                records.forget(job_id)
            if entry.waiters == 0:  # its consumers were cancelled while it was on the wire
                self._redeliver(entry)
        self.listings.settled_all(ids)
        batch[0].holder.counts.accepted += len(batch)

    def accepted(self, entry: Entry) -> None:
        """The job is ours (its call's answer says so)."""
        entry.state = ACCEPTED
        self._retire(entry)
        entry.holder.counts.accepted += 1
        if entry.waiters == 0:  # its consumers were cancelled while it was on the wire
            self._redeliver(entry)

    def lost(self, entry: Entry) -> None:
        """Someone else took the job first."""
        entry.state = LOST
        self._retire(entry)
        entry.holder.counts.lost += 1

    def uncertain(self, entry: Entry, why: str, cause: BaseException | None = None) -> None:
        """Nobody can tell who took the job: ``accept()`` raises AcceptUncertainError."""
        error = AcceptUncertainError(
            f"cannot tell whether job {entry.job.id} is ours: {why}",
            cluster=self.cluster,
            job_id=entry.job.id,
        )
        error.__cause__ = cause
        entry.state = UNCERTAIN
        entry.error = error
        self._retire(entry)
        entry.holder.counts.uncertain += 1
        log.warning("cluster %r: job %d: %s", self.cluster, entry.job.id, error.message)

    def refused(self, batch: list[Entry], error: RainbowError) -> None:
        """The server certainly did not act: the consumers still hold their jobs and
        ``accept()`` raises ``error`` (it may be called again)."""
        for entry in batch:
            entry.state = HELD
            entry.error = error
            if entry.waiters == 0:
                self._give_back(entry)

    def _redeliver(self, entry: Entry) -> None:
        """An accepted job lost its consumer: hand it out again, already owned."""
        holder = entry.holder
        if holder.closed:
            entry.redelivery = _CLAIMED
            self._unhandled(entry, "it was accepted after its consumer left and its poller closed")
            return
        entry.redelivery = _IN_QUEUE
        if holder.orphans is None:
            holder.orphans = set()
        holder.orphans.add(entry)
        holder.queue.put_owned(entry)

    def _give_back(self, entry: Entry) -> None:
        entry.state = RELEASED
        self._forget(entry)
        entry.holder.counts.released += 1

    def _failed_delivery(self, entry: Entry) -> None:
        count = self.records.failed(entry.job.id, entry.holder.opts)
        if count is not None:
            self._give_up(entry, count, owned=False)

    def _give_up(self, entry: Entry, count: int, *, owned: bool) -> None:
        """No more deliveries of ``entry``'s job: counted, logged once, ``on_give_up``."""
        job = entry.job
        entry.holder.counts.given_up += 1
        log.error(
            "cluster %r: job %d failed %d deliveries; this process no longer hands it out %s",
            self.cluster,
            job.id,
            count,
            "(this process accepted it: it is no longer on the server; see on_give_up)"
            if owned
            else "(it stays on the server for other processes)",
        )
        hook = entry.holder.opts.on_give_up
        if hook is not None:
            try:
                hook(job)
            except Exception:
                log.exception("cluster %r: on_give_up failed for job %d", self.cluster, job.id)

    def _forget(self, entry: Entry) -> None:
        """Stop tracking ``entry``'s id (if the record is still this entry's)."""
        job_id = entry.job.id
        if self.entries.get(job_id) is entry:
            del self.entries[job_id]

    def _retire(self, entry: Entry) -> None:
        """``entry`` was deleted on the server (or may have been): stop tracking it and
        hide it from the listings already running."""
        self._forget(entry)
        self.records.forget(entry.job.id)
        self.listings.settled(entry.job.id)


class _Hidden:
    """``job_id in hidden``: whether a listing must skip the id (see ``hidden()``);
    ``pick(ids)`` asks the same of a whole listing at once."""

    __slots__ = ("ledger", "left", "now", "queue", "records", "start", "stones")

    def __init__(self, ledger: AcceptLedger, start: int, queue: JobQueue[Entry] | None) -> None:
        self.ledger = ledger
        self.start = start
        self.queue = queue
        self.now: float | None = None
        # set at the first id asked (right after the answer arrived; nothing changes them
        # while the listing is read): new ids still let through, and whether there are
        # tombstones and failure records to ask at all
        self.left: int | None = None
        self.stones = False
        self.records = False

    def pick(self, ids: Sequence[int]) -> list[int]:
        """The ids of ``ids`` (ascending, asked right after the answer arrived) not to
        skip: what ``not in`` says of each, in passes over the whole listing that make no
        Python call per id unless there are tombstones or failure records to ask."""
        ledger = self.ledger
        entries = ledger.entries
        new = [job_id for job_id in ids if job_id not in entries]
        if ledger.listings and new:
            new = ledger.listings.unhidden(new, self.start)
        if ledger.records and new:
            new = ledger.records.unhidden(new, time.monotonic())
        if self.queue is not None:
            del new[max(self.queue.room, 1) :]
        return new

    def __contains__(self, job_id: object) -> bool:
        if not isinstance(job_id, int):
            return False
        ledger = self.ledger
        left = self.left
        if left is None:
            left = max(self.queue.room, 1) if self.queue is not None else -1
            self.stones = bool(ledger.listings)
            self.records = bool(ledger.records)
            self.left = left
        if job_id in ledger.entries:
            return True
        if self.stones and ledger.listings.hides(job_id, self.start):
            return True
        if self.records:
            if self.now is None:
                self.now = time.monotonic()
            if ledger.records.hides(job_id, self.now):
                return True
        if left < 0:  # no queue: every new id is parsed
            return False
        if left == 0:
            return True
        self.left = left - 1
        return False


async def _all_done(futures: list[asyncio.Future[None]], timeout: float) -> None:  # noqa: ASYNC109
    """Wait until every one of ``futures`` is done, or ``timeout`` seconds: what
    ``asyncio.wait(futures, timeout=timeout)`` does, without a task or a shield per future.
    The futures are never cancelled, also not when the caller is."""
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()
    resolve_when_all(waiter, futures)
    timer = loop.call_later(timeout, _wake, waiter)
    try:
        await waiter
    finally:
        timer.cancel()


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _again(error: AcceptUncertainError) -> AcceptUncertainError:
    """A fresh copy of an uncertain outcome, to raise once more."""
    copy = AcceptUncertainError(error.message, cluster=error.cluster or "", job_id=error.job_id)
    copy.__cause__ = error.__cause__
    return copy


# -- the registry: one ledger per (client, cluster) -------------------------------------

_ledgers: weakref.WeakKeyDictionary[Any, dict[str, AcceptLedger]] = weakref.WeakKeyDictionary()


def attach(
    client: AcceptClient,
    cluster: str,
    secret: str,
    queue: JobQueue[Entry],
    opts: PollerOptions,
    record_accept: Callable[[float], None] | None = None,
) -> Holder:
    """Join the ledger of ``cluster`` on ``client`` (made on first use)."""
    ledgers = _ledgers.get(client)
    if ledgers is None:
        ledgers = _ledgers[client] = {}
    ledger = ledgers.get(cluster)
    if ledger is None:
        ledger = ledgers[cluster] = AcceptLedger(client, cluster)
    return ledger.attach(secret, queue, opts, record_accept)


def live_ledger(client: AcceptClient, cluster: str) -> AcceptLedger | None:
    """The ledger of ``cluster`` on ``client`` while any poller is attached to it."""
    ledgers = _ledgers.get(client)
    return None if ledgers is None else ledgers.get(cluster)


def _forget_ledger(ledger: AcceptLedger) -> None:
    _accepters.leave(ledger.cluster, ledger)
    with contextlib.suppress(KeyError):
        ledgers = _ledgers[ledger.client]
        if ledgers.get(ledger.cluster) is ledger:
            del ledgers[ledger.cluster]
            if not ledgers:
                del _ledgers[ledger.client]
