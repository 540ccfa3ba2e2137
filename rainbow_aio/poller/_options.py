"""Options and statistics of pollers, as small frozen dataclasses."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .. import _protocol as P
from .._exceptions import InvalidArgumentError

__all__ = [
    "DEFAULTS",
    "GROUP_QUEUE_SIZE",
    "AcceptMode",
    "PollerOptions",
    "PollerStats",
    "parse_accept_mode",
]


class AcceptMode(enum.StrEnum):
    """How a poller turns ``accept()`` calls into AcceptJobs calls."""

    BATCHED = "batched"
    """Accepts made within ``accept_window`` go out as one AcceptJobs call. Assumes that
    only this process accepts jobs for the cluster (the secret is the cluster's own): a
    retried call that comes back PARTIAL then means an earlier attempt took the jobs. If
    another accepter shows up anyway, the affected accepts raise
    :class:`AcceptUncertainError` and the cluster switches to one id per call."""
    SHARED = "shared"
    """One id per AcceptJobs call, for clusters whose jobs several processes accept: a
    PARTIAL answer then means someone else took the job (``accept()`` returns False), and
    a retried call that comes back PARTIAL raises :class:`AcceptUncertainError`."""


@dataclass(frozen=True, slots=True)
class PollerOptions:
    """The knobs of a :class:`Poller` (see its docstring); one instance is shared by all
    the pollers of a group."""

    max_jobs: int = 10
    queue_size: int = 100
    min_interval: float = 0.25
    max_interval: float = 5.0
    accept_mode: AcceptMode = AcceptMode.BATCHED
    accept_window: float = 0.005
    accept_batch_size: int = 256
    shutdown_timeout: float = 10.0
    denied_attempts: int = 3

    def __post_init__(self) -> None:
        for name in ("max_jobs", "queue_size", "accept_batch_size", "denied_attempts"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidArgumentError(f"{name} must be a positive int, not {value!r}")
        if self.max_jobs > P.INT32_MAX:
            raise InvalidArgumentError("max_jobs must fit in int32")
        for name in ("min_interval", "max_interval", "shutdown_timeout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise InvalidArgumentError(f"{name} must be a positive number, not {value!r}")
        window = self.accept_window
        if isinstance(window, bool) or not isinstance(window, int | float) or window < 0:
            raise InvalidArgumentError(f"accept_window must be >= 0, not {window!r}")
        if self.max_interval < self.min_interval:
            raise InvalidArgumentError("max_interval must be >= min_interval")
        object.__setattr__(self, "accept_mode", parse_accept_mode(self.accept_mode))


@dataclass(frozen=True, slots=True)
class PollerStats:
    """A snapshot of one poller's counters (``poller.stats``, ``group.stats[cluster]``)."""

    cluster: str
    polls: int = 0
    """RequestJobs calls that returned."""
    empty_polls: int = 0
    """Polls that brought nothing new to hand out."""
    jobs_listed: int = 0
    """Jobs returned by all polls, counting repeats."""
    handed_out: int = 0
    """Jobs given to consumers by ``get()`` / iteration."""
    accepted: int = 0
    """Jobs this process now owns."""
    lost_to_others: int = 0
    """Jobs someone else took first (accept() returned False, or seen gone from the queue)."""
    released: int = 0
    """Jobs given back (by ``release()``, a cancelled accept, or shutdown)."""
    uncertain: int = 0
    """Accepts that raised :class:`AcceptUncertainError`."""
    errors: int = 0
    """Failed polls."""
    last_error: str | None = None
    """The latest poll error (type and message; never a secret)."""
    last_poll_latency: float | None = None
    """Seconds the latest successful RequestJobs took."""
    accept_calls: int = 0
    """AcceptJobs RPCs sent (retries included)."""


def parse_accept_mode(value: AcceptMode | str) -> AcceptMode:
    """``value`` as an :class:`AcceptMode` ("batched" or "shared")."""
    try:
        return AcceptMode(value)
    except ValueError:
        raise InvalidArgumentError(
            f"accept_mode must be 'batched' or 'shared', not {value!r}"
        ) from None


DEFAULTS: PollerOptions = PollerOptions()
"""The default options (``PollerOptions.max_jobs`` is a slot, not the default)."""

GROUP_QUEUE_SIZE = 1000
"""The default ``queue_size`` of a :class:`PollerGroup`, whose clusters share one queue.

A single poller's 100 slots hold ten polls' worth of jobs at the default ``max_jobs``.
Shared by tens of clusters, 100 slots are two or three jobs per cluster: polls then
bring back a job or two each (listing the cluster's in-flight jobs again every time),
and a backlog drains at the pace of consumers waiting for room rather than at the pace
of the server. A thousand slots keep a poll's worth per cluster for up to a hundred
clusters at the default ``max_jobs``. What it costs is memory: a queued job is one
parsed :class:`Job` (a few hundred bytes plus its command), so about a megabyte for
ordinary commands. Lower it when commands are large or when jobs should stay on the
server (visible to other processes) until a consumer is free."""
