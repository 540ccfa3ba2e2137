"""Errors that only the poller raises (both derive from :class:`RainbowError`)."""

from __future__ import annotations

from .._exceptions import RainbowError

__all__ = ["AcceptUncertainError", "PollerStoppedError"]


class AcceptUncertainError(RainbowError):
    """``accept()`` cannot tell whether this process took the job.

    Raised instead of guessing: either another process accepted jobs of the same cluster
    in the same AcceptJobs answer (a PARTIAL answer does not say which ids were taken), or
    the call was interrupted or retried after its answer was lost. The job is no longer
    handed out by this poller unless a later listing shows it is still waiting. When the
    cause was an RPC error, it is chained as ``__cause__``.
    """

    def __init__(self, message: str, *, cluster: str, job_id: int) -> None:
        super().__init__(message, rpc="AcceptJobs", cluster=cluster)
        self.job_id = job_id


class PollerStoppedError(RainbowError):
    """The poller (or group) was stopped: nothing more will be handed out, or the job
    can no longer be accepted because the poller's context was left."""
