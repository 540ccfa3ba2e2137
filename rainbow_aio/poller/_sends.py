"""Sending a ledger's accepts: the AcceptJobs calls, their batches and resends, and how
each call ended.

The accept ledger (``_ledger.py``) keeps the jobs in flight and their states. It hands
the sending of their accepts to the one :class:`AcceptSender` it owns, which never
changes a job's state: once a call has ended, the sender tells the ledger, through the
small :class:`Settler` interface, which of its jobs are accepted, lost, uncertain (and
why), or certainly not taken (with the call's error), and the ledger settles them.

- **outboxes**: each holder of the ledger (a poller or a group member) sends through an
  :class:`Outbox` of its own: its secret, its options, its pending accept batch and
  window, and the tasks sending its accepts. In the batched mode an accept waits up to
  ``accept_window`` for others of the same holder and goes out with them, in one
  AcceptJobs of at most ``accept_batch_size`` ids (at once when the batch is full, or
  once the holder has stopped polling). Accepts asked for together (a
  :class:`~rainbow_aio.JobBatch`) go out at once, in calls of that size. In the shared
  mode each accept goes out alone.
- **per_id**: once another accepter of the cluster is detected in batched mode, every
  accept of the cluster goes out alone for a while (``_PER_ID_COOLDOWN``, counted again
  from each new sign).
- **sends**: one task per call, which sends it again after a lost answer. Closing a
  holder sends its pending batch, waits up to ``shutdown_timeout`` for its sends, and
  cancels what is left: an accept still unanswered then is reported uncertain, never
  "not accepted", and one whose call was never sent is given back. The poller asks
  (``wait_for_sends``) whether calls carrying a listing's worth of ids each are still
  on the wire before it lists again.

How an accept ends is decided from the call's outcome alone (``CallOutcome``): a failure
that certainly did not act gives the job back to its consumer (``accept()`` raises the
error, the job is still held); one that may have acted is sent again until an answer
comes (when the error is retryable) or is reported uncertain; an answer settles every job
of the call.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from collections.abc import Callable, Iterable
from typing import Final, Generic, Protocol, TypeVar

from .. import _accepters
from .._exceptions import DeniedError, MissingCredentialError, RainbowError
from .._models import AcceptResult, AcceptStatus, Job
from .._outcome import CallOutcome
from ._errors import PollerStoppedError
from ._job import ACCEPTING, JobState
from ._options import AcceptMode, PollerOptions

__all__ = [
    "AcceptSender",
    "CallCounts",
    "Outbox",
    "SendClient",
    "SendEntry",
    "Settler",
    "resolve_when_all",
]

log = logging.getLogger("rainbow_aio.poller")

# first wait before an AcceptJobs whose outcome is unknown is sent again (then doubling)
_RESEND_BACKOFF: Final = 0.05

# seconds the batched mode sends one id per call after it saw another accepter
_PER_ID_COOLDOWN: Final = 60.0

# answers that refuse a repeated accept before the server acts: a wrong secret, or the Go
# server's false "request denied" under load; repeated up to denied_attempts in a row
_DENIALS = (DeniedError, MissingCredentialError)


class SendClient(Protocol):
    """What the sender needs from :class:`~rainbow_aio.RainbowClient`."""

    async def accept_jobs(
        self,
        cluster: str,
        secret: str,
        job_ids: Iterable[int],
        *,
        timeout: float | None = ...,  # noqa: ASYNC109
    ) -> AcceptResult: ...


class SendEntry(Protocol):
    """What the sender needs of the ledger's record of a job whose accept it sends: the
    job, its state (read only: the sender never changes it), and ``done``, which the
    sender sets to the future of the call carrying the accept (it resolves once that
    call has settled the job)."""

    @property
    def job(self) -> Job: ...

    @property
    def state(self) -> JobState: ...

    done: asyncio.Future[None] | None


class CallCounts(Protocol):
    """The counters of a holder's AcceptJobs calls, which the sender keeps."""

    accept_calls: int
    accept_errors: int
    last_accept_error: str | None


_Entry = TypeVar("_Entry", bound=SendEntry)


class Settler(Protocol[_Entry]):
    """What the sender reports to its ledger once a call has ended; the ledger alone
    changes the jobs' states. Every job reported was carried by that call and was not
    settled yet, and belongs to the holder whose outbox sent it.

    The ledger is also this process's accepter of the cluster (``_accepters``), by its
    identity: the sender's calls count as its accepts."""

    def __hash__(self) -> int: ...

    def accepted_all(self, batch: list[_Entry]) -> None:
        """Every job of ``batch`` (one call's) is ours."""

    def accepted(self, entry: _Entry) -> None:
        """The job is ours."""

    def lost(self, entry: _Entry) -> None:
        """Someone else took the job."""

    def uncertain(self, entry: _Entry, why: str, cause: BaseException | None = None) -> None:
        """Nobody can tell who took the job, for the reason ``why`` (caused by ``cause``)."""

    def refused(self, batch: list[_Entry], error: RainbowError) -> None:
        """The call certainly did not take the jobs of ``batch``: their consumers still
        hold them, and ``accept()`` raises ``error``."""


class Outbox(Generic[_Entry]):
    """One holder's accepts on their way: what it sends with, its pending batch and
    window, and the tasks sending its accepts (module docstring)."""

    __slots__ = (
        "counts",
        "opts",
        "pending",
        "pending_done",
        "record_accept",
        "secret",
        "sends",
        "stopping",
        "timer",
    )

    def __init__(
        self,
        secret: str,
        opts: PollerOptions,
        counts: CallCounts,
        record_accept: Callable[[float], None] | None = None,
    ) -> None:
        self.secret = secret
        self.opts = opts
        self.counts = counts
        # reports how long each AcceptJobs of this holder took (telemetry), if given
        self.record_accept = record_accept
        # accepts waiting for the window (batched mode), the future of the call that will
        # carry them, and the window's timer
        self.pending: list[_Entry] | None = None
        self.pending_done: asyncio.Future[None] | None = None
        self.timer: asyncio.TimerHandle | None = None
        # tasks sending this holder's accepts (resends included)
        self.sends: set[asyncio.Task[None]] = set()
        self.stopping = False  # no more polling: accepts go out at once


class AcceptSender(Generic[_Entry]):
    """The AcceptJobs calls of one ledger (module docstring)."""

    __slots__ = ("client", "cluster", "ledger", "per_id_until", "send_sizes", "sends_settled")

    def __init__(self, ledger: Settler[_Entry], client: SendClient, cluster: str) -> None:
        self.ledger = ledger
        self.client = client
        self.cluster = cluster
        # monotonic time until which the batched mode sends one id per call
        self.per_id_until = 0.0
        # the number of ids of each AcceptJobs call started and not yet settled (resends
        # included), and the future that resolves when the next of those calls settles
        self.send_sizes: list[int] = []
        self.sends_settled: asyncio.Future[None] | None = None

    @property
    def per_id(self) -> bool:
        """Whether the batched mode sends one id per call now (another accepter seen)."""
        return time.monotonic() < self.per_id_until

    def _per_id(self, outbox: Outbox[_Entry]) -> bool:
        return outbox.opts.accept_mode is AcceptMode.SHARED or time.monotonic() < self.per_id_until

    # -- what the ledger asks -----------------------------------------------------------

    def request(self, outbox: Outbox[_Entry], entry: _Entry) -> None:
        """Send ``entry``'s accept, alone or with the others of the window; its ``done``
        is the future of the call that will carry it."""
        if self._per_id(outbox):
            entry.done = self._spawn(outbox, [entry])
            return
        if outbox.pending is None or outbox.pending_done is None:
            outbox.pending = []
            outbox.pending_done = asyncio.get_running_loop().create_future()
        done = outbox.pending_done
        outbox.pending.append(entry)
        if outbox.stopping or len(outbox.pending) >= outbox.opts.accept_batch_size:
            self.flush(outbox)
        elif outbox.timer is None:
            outbox.timer = asyncio.get_running_loop().call_later(
                outbox.opts.accept_window, self.flush, outbox
            )
        entry.done = done

    def send_now(self, outbox: Outbox[_Entry], batch: list[_Entry]) -> None:
        """Send the accepts of ``batch`` at once, not through the window: in calls of
        ``accept_batch_size`` ids (one id per call in the shared mode, or after another
        accepter was seen); each entry's ``done`` is the future of its call."""
        if self._per_id(outbox):
            for entry in batch:
                entry.done = self._spawn(outbox, [entry])
        else:
            size = outbox.opts.accept_batch_size
            for start in range(0, len(batch), size):
                chunk = batch[start : start + size]
                done = self._spawn(outbox, chunk)
                for entry in chunk:
                    entry.done = done

    def withdraw(self, outbox: Outbox[_Entry], entry: _Entry) -> bool:
        """Take ``entry``'s accept out of the pending batch: True if it was there (never
        sent), False if it is on the wire already."""
        pending = outbox.pending
        if pending is not None and entry in pending:
            pending.remove(entry)
            return True
        return False

    def flush(self, outbox: Outbox[_Entry]) -> None:
        """Send the pending batch now."""
        if outbox.timer is not None:
            outbox.timer.cancel()
            outbox.timer = None
        batch, outbox.pending = outbox.pending, None
        done, outbox.pending_done = outbox.pending_done, None
        if not batch:
            if done is not None and not done.done():
                done.set_result(None)  # every accept of the window was withdrawn
            return
        if self._per_id(outbox):
            # one call per job: each its own future; the window's resolves once all did
            calls = [self._spawn(outbox, [entry]) for entry in batch]
            for entry, call in zip(batch, calls, strict=True):
                entry.done = call
            if done is not None:
                resolve_when_all(done, calls)
        else:
            self._spawn(outbox, batch, done)

    def stop(self, outbox: Outbox[_Entry]) -> None:
        """The holder stopped polling: send its pending batch now, and each accept it
        asks for from now on at once."""
        outbox.stopping = True
        self.flush(outbox)

    async def settle(self, outbox: Outbox[_Entry]) -> None:
        """Send the pending batch, and wait up to ``shutdown_timeout`` for the holder's
        sends to end, those started meanwhile included."""
        self.flush(outbox)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + outbox.opts.shutdown_timeout
        # accepts requested while this waits are sent at once and waited for too
        while outbox.sends and (remaining := deadline - loop.time()) > 0:
            await asyncio.wait(set(outbox.sends), timeout=remaining)

    async def cancel(self, outbox: Outbox[_Entry]) -> None:
        """Cancel the holder's sends still running, and wait until they have ended."""
        if outbox.sends:
            sends = set(outbox.sends)
            for task in sends:
                task.cancel()  # each reports its jobs uncertain as it ends
            await asyncio.gather(*sends, return_exceptions=True)

    def _sending_listings(self, listing: int, calls: int, ids: int) -> bool:
        """Whether at least ``calls`` AcceptJobs calls on the wire each carry a listing's
        worth of ids (``listing``, and more than one), ``ids`` or more in all."""
        big = [n for n in self.send_sizes if n > 1 and n >= listing]
        return len(big) >= calls and sum(big) >= ids

    async def wait_for_sends(self, listing: int, calls: int, ids: int, at_most: float) -> None:
        """Return once fewer than ``calls`` AcceptJobs calls carrying a listing's worth of
        ids each (``ids`` in all) are on the wire, or after ``at_most`` seconds."""
        if not self._sending_listings(listing, calls, ids):
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + at_most
        while self._sending_listings(listing, calls, ids):
            left = deadline - loop.time()
            if left <= 0:
                return
            if self.sends_settled is None:
                self.sends_settled = loop.create_future()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.sends_settled), left)

    # -- one call -----------------------------------------------------------------------

    def _spawn(
        self, outbox: Outbox[_Entry], batch: list[_Entry], done: asyncio.Future[None] | None = None
    ) -> asyncio.Future[None]:
        """Start the AcceptJobs call for ``batch``; ``done`` (made if not given) resolves
        once the call has settled every job of it.

        The jobs are settled by a callback of the send task, not by the task's own code:
        a task cancelled before its first step never runs a line of its coroutine, and its
        jobs must be settled all the same (given back if nothing was sent)."""
        loop = asyncio.get_running_loop()
        if done is None:
            done = loop.create_future()
        send = _Send(batch, done)
        task = loop.create_task(self._send(outbox, send))
        outbox.sends.add(task)
        size = len(batch)
        self.send_sizes.append(size)
        task.add_done_callback(functools.partial(self._send_ended, outbox, send, size))
        return done

    def _send_ended(
        self, outbox: Outbox[_Entry], send: _Send[_Entry], size: int, task: asyncio.Task[None]
    ) -> None:
        """The send task ended, however: report what it left unsettled, wake its waiters."""
        outbox.sends.discard(task)
        if outbox.record_accept is not None and send.began is not None:
            outbox.record_accept(time.perf_counter() - send.began)
        unsettled = [entry for entry in send.batch if entry.state is ACCEPTING]
        if unsettled and send.began is None:
            # cancelled before it sent anything: the server certainly did not act
            self.ledger.refused(
                unsettled,
                PollerStoppedError(
                    "the poller closed before this accept was sent; the job was given back",
                    cluster=self.cluster,
                ),
            )
        else:
            for entry in unsettled:
                self.ledger.uncertain(
                    entry,
                    "the accept was still unanswered when its poller closed (shutdown_timeout)",
                )
        if not send.done.done():
            send.done.set_result(None)
        self.send_sizes.remove(size)
        settled, self.sends_settled = self.sends_settled, None
        if settled is not None and not settled.done():
            settled.set_result(None)

    async def _send(self, outbox: Outbox[_Entry], send: _Send[_Entry]) -> None:
        """Accept the jobs of ``send`` with one AcceptJobs, and tell the ledger how each
        ended, from the outcome.

        A failure that certainly did not act gives the jobs back to their consumers. One
        that may have acted is sent again (with backoff): SUCCESS then proves the jobs
        ours; PARTIAL means some were already gone, which in batched mode (this process
        the only accepter) means the lost attempt took them. Without this, a job deleted
        by a lost attempt would be owned by nobody. A repeat that is refused (denied,
        busy, not connected) did not act either, so it says nothing about the lost
        attempt: it is sent again too, except after ``denied_attempts`` refusals in a row
        that repeating cannot cure (a real denial is permanent; the Go server also gives
        false ones under load), or once the client is closed. Then, and for whatever is
        still unsettled when this task ends (cancelled at shutdown), the jobs are
        uncertain (see ``_send_ended``).

        The inference "PARTIAL after a lost attempt means ours" is made only while the
        ledger has been the process's only accepter of the cluster since before the first
        attempt (``_accepters``): another client's poller, or a direct ``accept_jobs()``,
        could have taken the jobs too, and then the answer is uncertain.
        """
        batch = send.batch
        ids = [entry.job.id for entry in batch]
        accepter = self.ledger
        _accepters.current.set(accepter)  # this task's calls are the ledger's accepts
        since = _accepters.epoch(self.cluster)
        send.began = time.perf_counter()
        counts = outbox.counts
        maybe_applied = False
        refusals = 0  # repeats refused in a row with an error repeating cannot cure
        backoff = 0.0
        while True:
            try:
                result = await self.client.accept_jobs(self.cluster, outbox.secret, ids)
            except RainbowError as exc:
                counts.accept_calls += exc.attempts or 1
                counts.accept_errors += 1
                counts.last_accept_error = f"{type(exc).__name__}: {exc}"
                if exc.outcome is CallOutcome.NOT_APPLIED and not maybe_applied:
                    self.ledger.refused(batch, exc)
                    return
                maybe_applied = maybe_applied or exc.outcome.may_have_acted
                if isinstance(exc, _DENIALS):
                    refusals += 1  # real (permanent) or one of the Go server's false ones
                elif exc.retryable:
                    refusals = 0
                else:  # the client is closed, or an answer repeating cannot clear up
                    self._unknown(batch, exc)
                    return
                if refusals >= outbox.opts.denied_attempts:
                    self._unknown(batch, exc)
                    return
                log.info(
                    "cluster %r: AcceptJobs of %d job(s) may or may not have taken "
                    "them (%s); sending it again to find out",
                    self.cluster,
                    len(ids),
                    exc,
                )
                backoff = min(backoff * 2 or _RESEND_BACKOFF, outbox.opts.max_interval)
                await asyncio.sleep(backoff * (0.5 + random.random() / 2))
                continue
            except Exception as exc:  # a bug: never guess the outcome
                log.exception("cluster %r: AcceptJobs failed unexpectedly", self.cluster)
                self._unknown(batch, exc)
                return
            counts.accept_calls += result.attempts
            alone = _accepters.sole(self.cluster, accepter, since)
            self._answered(outbox, batch, result, maybe_applied=maybe_applied, alone=alone)
            return

    def _answered(
        self,
        outbox: Outbox[_Entry],
        batch: list[_Entry],
        result: AcceptResult,
        *,
        maybe_applied: bool,
        alone: bool,
    ) -> None:
        """Decide from the call's answer how each of its jobs ended, and tell the ledger."""
        ledger = self.ledger
        status = result.status
        if status is AcceptStatus.SUCCESS:
            ledger.accepted_all(batch)
        elif status is AcceptStatus.PARTIAL and not maybe_applied:
            # nothing of ours can have taken them before: someone else took some of them
            self._other_accepter(outbox, "an AcceptJobs it sent came back PARTIAL")
            if len(batch) == 1:
                ledger.lost(batch[0])
            else:
                for entry in batch:
                    ledger.uncertain(
                        entry,
                        f"AcceptJobs for {len(batch)} jobs came back PARTIAL: another "
                        "process took some of them and the answer does not say which",
                    )
        elif outbox.opts.accept_mode is AcceptMode.BATCHED and not self.per_id and alone:
            # PARTIAL after an attempt that may have acted: only this process accepts for
            # the cluster, and within it only this ledger did while the call ran, so that
            # earlier attempt took what this one did not
            for entry in batch:
                ledger.accepted(entry)
        elif outbox.opts.accept_mode is AcceptMode.BATCHED and not self.per_id:
            for entry in batch:
                ledger.uncertain(
                    entry,
                    "AcceptJobs was sent again after its answer was lost and came back "
                    "PARTIAL, and another accepter of this cluster in this process (another "
                    "client's poller, or a direct accept_jobs() call) may have taken the job",
                )
        else:
            for entry in batch:
                ledger.uncertain(
                    entry,
                    "AcceptJobs was sent again after its answer was lost and came back "
                    "PARTIAL: the earlier attempt or another process took the job",
                )

    def _unknown(self, batch: list[_Entry], exc: BaseException) -> None:
        for entry in batch:
            self.ledger.uncertain(
                entry, f"AcceptJobs failed and may have taken the job: {exc}", exc
            )

    def _other_accepter(self, outbox: Outbox[_Entry], evidence: str) -> None:
        """Another process accepts jobs of this cluster: in batched mode, that breaks the
        assumption batching relies on, so the cluster's accepts go out one id per call."""
        if outbox.opts.accept_mode is not AcceptMode.BATCHED:
            return
        quiet = time.monotonic() < self.per_id_until
        self.per_id_until = time.monotonic() + _PER_ID_COOLDOWN
        if quiet:
            return
        log.warning(
            "cluster %r: another process accepts jobs of this cluster (%s), although the "
            "batched accept mode assumes it does not; accepts go out one id per call for "
            "the next %g s (use accept_mode='shared' for clusters shared between processes)",
            self.cluster,
            evidence,
            _PER_ID_COOLDOWN,
        )


class _Send(Generic[_Entry]):
    """One AcceptJobs call (with its resends): its jobs, the future that resolves once
    they are settled, and when it began (None until it sends)."""

    __slots__ = ("batch", "began", "done")

    def __init__(self, batch: list[_Entry], done: asyncio.Future[None]) -> None:
        self.batch = batch
        self.done = done
        self.began: float | None = None


def resolve_when_all(done: asyncio.Future[None], calls: list[asyncio.Future[None]]) -> None:
    """Resolve ``done`` once every future of ``calls`` is resolved."""
    left = len(calls)

    def one_more(_: asyncio.Future[None]) -> None:
        nonlocal left
        left -= 1
        if left == 0 and not done.done():
            done.set_result(None)

    for call in calls:
        call.add_done_callback(one_more)
