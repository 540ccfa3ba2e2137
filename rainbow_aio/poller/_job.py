"""A job handed out by a poller: ``PolledJob`` and the states it moves through."""

from __future__ import annotations

import asyncio
import contextlib
import enum
from typing import TYPE_CHECKING

from .._models import Job

if TYPE_CHECKING:
    from ._poller import Poller

__all__ = ["JobState", "PolledJob"]


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


_UNSETTLED = (JobState.QUEUED, JobState.HELD)


class PolledJob:
    """One job handed out by a :class:`Poller` or :class:`PollerGroup`.

    ``job`` is the listed :class:`~rainbow_aio.Job`; ``id`` and ``cluster`` are shortcuts.
    Exactly one of these should follow:

    - ``await accept()``: True when this consumer now owns the job (run it), False when
      someone else took it first (do not run it). Raises
      :class:`AcceptUncertainError` when that cannot be known, and the RPC's error when
      the accept certainly did not happen (the job is then still held and can be
      accepted again or released). Calling it again returns the same answer.
    - ``release()``: give the job back without running it; it stays on the server and is
      handed out again by a later poll.

    A job that is dropped without either is released when it is garbage collected, so
    it can be handed out again; it is never lost, but until then it is not handed out.
    """

    __slots__ = ("__weakref__", "_done", "_found", "_poller", "_state", "_waiters", "job")

    def __init__(self, job: Job, poller: Poller, found: int) -> None:
        self.job = job
        self._poller = poller
        self._state = JobState.QUEUED
        # the view's listing counter when this job was last known to be waiting
        self._found = found
        # resolves with the outcome (a bool or the exception to raise) of the current accept
        self._done: asyncio.Future[bool | BaseException] | None = None
        # consumers currently waiting in accept()
        self._waiters = 0

    @property
    def id(self) -> int:
        """The job id on the server."""
        return self.job.id

    @property
    def cluster(self) -> str:
        """The cluster this job was polled for."""
        return self._poller.cluster

    @property
    def accepted(self) -> bool:
        """True once this process owns the job; ``accept()`` then returns True at once."""
        return self._state is JobState.ACCEPTED

    @property
    def state(self) -> JobState:
        """Where the job stands (for logs and tests)."""
        return self._state

    async def accept(self) -> bool:
        """Claim the job on the server (batched with other accepts, see :class:`Poller`).

        Returns True when this consumer owns the job, False when someone else took it.
        Cancelling the caller never loses the job: an accept not yet sent is withdrawn and
        the job released; one already sent finishes in the background and, if it took the
        job, the job is handed out again with ``accepted`` already True.
        """
        return await self._poller._accept(self)

    def release(self) -> None:
        """Give the job back without running it; a later poll hands it out again.

        Does nothing once the job is accepted, lost, being accepted or already released.
        """
        self._poller._release(self)

    def __repr__(self) -> str:
        return (
            f"PolledJob(cluster={self.cluster!r}, id={self.job.id}, "
            f"name={self.job.name!r}, state={self._state.value})"
        )

    def __del__(self) -> None:
        if self._state in _UNSETTLED:
            with contextlib.suppress(Exception):  # never raise from a finalizer
                self._poller._collected(self)
