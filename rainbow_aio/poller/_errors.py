"""Errors that only the poller raises (both derive from :class:`RainbowError`)."""

from __future__ import annotations

from .._exceptions import RainbowError
from .._outcome import CallOutcome

__all__ = ["AcceptUncertainError", "PollerStoppedError"]


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
    """

    default_outcome = CallOutcome.UNKNOWN

    def __init__(self, message: str, *, cluster: str, job_id: int) -> None:
        super().__init__(message, rpc="AcceptJobs", cluster=cluster)
        self.job_id = job_id


class PollerStoppedError(RainbowError):
    """The poller (or group) was stopped: nothing more will be handed out, or the job
    can no longer be accepted because its poller was closed (the job was given back)."""
