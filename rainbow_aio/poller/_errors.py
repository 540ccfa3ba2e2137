"""Errors that only the poller raises (both derive from :class:`RainbowError`)."""

from __future__ import annotations

from collections.abc import Sequence

from .._exceptions import RainbowError
from .._models import Job
from .._outcome import CallOutcome

__all__ = ["AcceptUncertainError", "JobReleasedError", "PollerStoppedError", "UnhandledJobsError"]


class AcceptUncertainError(RainbowError):
    """``accept()`` cannot tell whether this process took the job.

    Raised instead of guessing: another process accepted jobs of the same cluster in the
    same AcceptJobs answer (a PARTIAL answer does not say which ids were taken), or the
    call may have acted but its answer never came (a lost answer that could not be
    resolved by sending it again, the client closed with the call on the wire, or the
    poller's ``shutdown_timeout`` ran out). The server may have deleted the job: decide
    what that means for your application. The job is handed out again only if a later
    listing shows it still waiting. When the cause was an RPC error, it is chained as
    ``__cause__``. ``outcome`` is always UNKNOWN.

    ``resolving`` is True when ``accept()`` stopped waiting at ``accept_timeout`` while
    the poller goes on finding out: if the job turns out to be this process's, it is
    handed out again, already accepted, so do not run it on the strength of this error.
    """

    default_outcome = CallOutcome.UNKNOWN

    def __init__(self, message: str, *, cluster: str, job_id: int, resolving: bool = False) -> None:
        super().__init__(message, rpc="AcceptJobs", cluster=cluster)
        self.job_id = job_id
        self.resolving = resolving


class JobReleasedError(RainbowError):
    """``accept()`` on a job that was given back before it was called: released by its
    consumer, withdrawn by a cancelled accept, or held longer than ``max_hold``. Nothing
    was sent: the job stays on the server (``outcome`` is NOT_APPLIED), and a later poll
    hands it out again."""

    def __init__(self, message: str, *, cluster: str, job_id: int) -> None:
        super().__init__(message, rpc="AcceptJobs", cluster=cluster)
        self.job_id = job_id


class UnhandledJobsError(RainbowError):
    """Jobs this process accepted (so the server no longer has them) but could not give to
    a consumer or a handler before its poller or group closed. ``jobs`` holds them: they
    exist nowhere else, so run them, store them or resubmit them. Raised when a poller or
    group is left normally (each job was also given to ``on_unhandled``, if set) and by
    ``run()`` when a forced stop cut handlers short."""

    default_outcome = CallOutcome.APPLIED

    def __init__(self, message: str, *, jobs: Sequence[Job], cluster: str | None = None) -> None:
        super().__init__(message, cluster=cluster)
        self.jobs: tuple[Job, ...] = tuple(jobs)


class PollerStoppedError(RainbowError):
    """The poller (or group) was stopped: nothing more will be handed out, or the job
    can no longer be accepted because its poller was closed (the job was given back)."""
