"""A job handed out by a poller: the :class:`PolledJob` handle and the states it moves
through.

A ``PolledJob`` holds no state of its own: where the job stands is kept by the cluster's
accept ledger (``_ledger.py``), in an entry that the handle only asks and forwards to,
through the small :class:`JobEntry` interface below. So there is one place that changes a
job's state, whichever poller, group, batch or consumer is involved.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Final, Protocol, overload

from .._exceptions import InvalidArgumentError
from .._models import Job
from ._errors import AcceptUncertainError

__all__ = [
    "ACCEPTED",
    "ACCEPTING",
    "DROPPED",
    "HELD",
    "LOST",
    "QUEUED",
    "RELEASED",
    "UNCERTAIN",
    "AcceptTogether",
    "JobBatch",
    "JobEntry",
    "JobState",
    "PolledJob",
]


class JobState(enum.Enum):
    """Where a listed job stands in this process."""

    QUEUED = "queued"
    """In a poller's queue, not handed out yet."""
    HELD = "held"
    """Handed to a consumer, which has neither accepted nor released it."""
    ACCEPTING = "accepting"
    """The consumer called ``accept()``; the outcome is not known yet."""
    ACCEPTED = "accepted"
    """This process owns the job: an AcceptJobs call deleted it on the server."""
    LOST = "lost"
    """Someone else took the job first."""
    UNCERTAIN = "uncertain"
    """Nobody can tell who took the job (see :class:`AcceptUncertainError`)."""
    RELEASED = "released"
    """Given back: the job stays on the server and can be handed out again."""
    DROPPED = "dropped"
    """Taken out of the queue before anyone got it (stopped poller, or the job is gone)."""


# JobState's members as module constants, for the paths that ask them for every job: on
# Python 3.11 each ``JobState.X`` goes through EnumType.__getattr__, which costs about
# ten times a global (Python 3.12 dropped that hook)
QUEUED: Final = JobState.QUEUED
HELD: Final = JobState.HELD
ACCEPTING: Final = JobState.ACCEPTING
ACCEPTED: Final = JobState.ACCEPTED
LOST: Final = JobState.LOST
UNCERTAIN: Final = JobState.UNCERTAIN
RELEASED: Final = JobState.RELEASED
DROPPED: Final = JobState.DROPPED


class JobEntry(Protocol):
    """What a :class:`PolledJob` needs from the ledger's record of its job."""

    @property
    def job(self) -> Job: ...

    @property
    def cluster(self) -> str: ...

    @property
    def state(self) -> JobState: ...

    async def accept(self) -> bool: ...

    def release(self, *, failed: bool) -> None: ...

    def retry_later(self) -> None: ...

    def decline(self) -> None: ...

    def report_unhandled(self, why: str) -> None: ...

    def collected(self) -> None: ...


class PolledJob:
    """One job handed out by a :class:`Poller` or :class:`PollerGroup`.

    ``job`` is the listed :class:`~rainbow_aio.Job`; ``id`` and ``cluster`` are shortcuts.
    Exactly one of these should follow:

    - ``await accept()``: True when this consumer now owns the job (run it), False when
      someone else took it first (do not run it). Raises
      :class:`AcceptUncertainError` when that cannot be known, and the RPC's error when
      the accept certainly did not happen (``error.outcome`` is NOT_APPLIED; the job is
      then still held and can be accepted again or released). Calling it again returns
      the same answer.
    - ``release()``: give the job back without running it; it stays on the server and is
      handed out again by a later poll. ``release(failed=True)`` says the consumer failed
      on it: it is handed out again only after a growing delay, and after
      ``max_deliveries`` such failures no more (see :class:`PollerOptions`).

    A job that is dropped without either is released when it is garbage collected, so
    it can be handed out again; it is never lost, but until then it is not handed out.
    """

    __slots__ = ("__weakref__", "_entry", "job")

    def __init__(self, entry: JobEntry) -> None:
        self._entry = entry
        self.job: Job = entry.job

    @property
    def id(self) -> int:
        """The job id on the server."""
        return self.job.id

    @property
    def cluster(self) -> str:
        """The cluster this job was polled for."""
        return self._entry.cluster

    @property
    def accepted(self) -> bool:
        """True once this process owns the job; ``accept()`` then returns True at once."""
        return self._entry.state is ACCEPTED

    @property
    def state(self) -> JobState:
        """Where the job stands (for logs and tests)."""
        return self._entry.state

    async def accept(self) -> bool:
        """Claim the job on the server (see :class:`Poller` for how accepts are sent).

        Returns True when this consumer owns the job, False when someone else took it.
        Cancelling the caller never loses the job: an accept not yet sent is withdrawn and
        the job released; one already sent finishes in the background and, if it took the
        job, the job is handed out again with ``accepted`` already True.
        """
        return await self._entry.accept()

    def release(self, *, failed: bool = False) -> None:
        """Give the job back without running it; a later poll hands it out again.

        ``failed=True``: the consumer failed on this job; it is handed out again only
        after a delay, and no more after ``max_deliveries`` failures. Does nothing once
        the job is accepted, lost, being accepted or already released.
        """
        self._entry.release(failed=failed)

    def decline(self) -> None:
        """Give the job back for good, as far as this process goes: it stays on the server
        for others, and this process never hands it out again while the server lists it
        (for a job it can never run: too big for its nodes, say). Counted in
        ``stats.declined``. Does nothing unless the job is held."""
        self._entry.decline()

    def retry_later(self) -> None:
        """For a job this process owns (accepted) whose processing failed: hand it to a
        consumer again after ``redelivery_delay`` (doubling at each failure), in this
        process, since the server no longer has it; after ``max_deliveries`` failures it
        is given up instead (``on_give_up``, ``stats.given_up``). If the poller closes
        first, the job is reported unhandled (``on_unhandled``). Does nothing for a job
        not accepted (use ``release(failed=True)``)."""
        self._entry.retry_later()

    def report_unhandled(self, why: str) -> None:
        """For a job this process owns that its consumer will not finish (for frameworks
        built on the poller; ``run()`` uses it for handlers cut short at shutdown): pass
        it to ``on_unhandled`` and count it, so it is never lost silently. Does nothing
        for a job not accepted."""
        self._entry.report_unhandled(why)

    def __repr__(self) -> str:
        return (
            f"PolledJob(cluster={self.cluster!r}, id={self.job.id}, "
            f"name={self.job.name!r}, state={self.state.value})"
        )

    def __del__(self) -> None:
        # only a job still held needs its ledger (most are accepted by now); never
        # raise from a finalizer
        try:
            if self._entry.state is HELD:
                self._entry.collected()
        except Exception:
            pass


AcceptTogether = Callable[[list[JobEntry]], Awaitable[list[bool | BaseException | None]]]
"""Accepts the jobs of one batch together, given their ledger entries; per job: True
(owned), False (taken by someone else), the exception ``accept()`` would raise, or None
(given back before, skipped)."""


class JobBatch(Sequence[PolledJob]):
    """Up to ``max_size`` jobs of one cluster, handed out together (``poller.batches()``).

    A batch is a sequence of :class:`PolledJob`: each job can be accepted or released on
    its own, and every guarantee of single jobs holds for each of them. Or, together:

    - ``await accept()``: accepts every job of the batch not given back yet, with one
      AcceptJobs call in the batched mode (one per job in the shared mode), and returns
      the jobs this process now owns. The others are reported per job, with the meaning
      of :meth:`PolledJob.accept`: :attr:`lost` (someone else took them),
      :attr:`uncertain` (``await job.accept()`` raises the reason), :attr:`held` (the call
      certainly did not act: still yours to accept again or release). When the call
      certainly did not act for any of them, ``accept()`` raises that error instead.
    - ``release()``: gives back every job not accepted (``failed=True``: as for a job).
    """

    __slots__ = ("_accept_together", "_all_owned", "_jobs", "cluster")

    def __init__(
        self, cluster: str, jobs: Sequence[PolledJob], accept_together: AcceptTogether
    ) -> None:
        self.cluster = cluster
        self._jobs = list(jobs)
        self._accept_together = accept_together
        # set once accept() found every job owned: ACCEPTED is final, so no job of the
        # batch can be lost, uncertain or held any more
        self._all_owned = False

    def __len__(self) -> int:
        return len(self._jobs)

    @overload
    def __getitem__(self, index: int) -> PolledJob: ...

    @overload
    def __getitem__(self, index: slice) -> list[PolledJob]: ...

    def __getitem__(self, index: int | slice) -> PolledJob | list[PolledJob]:
        return self._jobs[index]

    def __iter__(self) -> Iterator[PolledJob]:
        return iter(self._jobs)

    @property
    def ids(self) -> list[int]:
        """The job ids, in the order of the batch (ascending within a listing)."""
        return [job.id for job in self._jobs]

    async def accept(self) -> list[PolledJob]:
        """Claim the jobs still held, together; return those this process now owns.

        Cancelling the caller never loses a job (see :meth:`PolledJob.accept`)."""
        outcomes = await self._accept_together([job._entry for job in self._jobs])
        owned = [job for job, outcome in zip(self._jobs, outcomes, strict=True) if outcome is True]
        if len(owned) == len(self._jobs):
            self._all_owned = True
            return owned
        refused = [
            outcome
            for outcome in outcomes
            if isinstance(outcome, BaseException) and not isinstance(outcome, AcceptUncertainError)
        ]
        answered = [outcome for outcome in outcomes if outcome is not None]
        if refused and len(refused) == len(answered):
            raise refused[0]
        return owned

    def release(self, *, failed: bool = False) -> None:
        """Give back every job of the batch still held (see :meth:`PolledJob.release`)."""
        if self._all_owned:
            return  # nothing is held any more
        for job in self._jobs:
            if job.state is HELD:
                job.release(failed=failed)

    def subset(self, jobs: Sequence[PolledJob]) -> JobBatch:
        """A batch of some of these jobs (for example those a handler should see)."""
        mine = {id(job) for job in self._jobs}
        if any(id(job) not in mine for job in jobs):
            raise InvalidArgumentError("subset() takes jobs of this batch only")
        return JobBatch(self.cluster, jobs, self._accept_together)

    @property
    def lost(self) -> list[PolledJob]:
        """The jobs someone else took first."""
        if self._all_owned:
            return []
        return [job for job in self._jobs if job.state is LOST]

    @property
    def uncertain(self) -> list[PolledJob]:
        """The jobs whose accept had an unknown outcome (``job.accept()`` says why)."""
        if self._all_owned:
            return []
        return [job for job in self._jobs if job.state is UNCERTAIN]

    @property
    def held(self) -> list[PolledJob]:
        """The jobs still held by this consumer: neither accepted nor given back."""
        if self._all_owned:
            return []
        return [job for job in self._jobs if job.state is HELD]

    def __repr__(self) -> str:
        return f"JobBatch(cluster={self.cluster!r}, ids={self.ids})"
