"""Options and statistics of pollers, as small frozen dataclasses.

:class:`PollerOptions` holds every knob of a poller; :class:`PollerKwargs` names the same
fields for the keyword form (``client.poller(c, s, max_jobs=20)``), so that a type checker
rejects a misspelt option. A test keeps the two in step.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import Literal, TypedDict

from .. import _protocol as P
from .._exceptions import InvalidArgumentError
from .._models import Job

__all__ = [
    "DEFAULTS",
    "UnhandledHook",
    "GROUP_QUEUE_SIZE",
    "AcceptMode",
    "AcceptModeName",
    "GiveUpHook",
    "PollerKwargs",
    "PollerOptions",
    "PollerStats",
    "parse_accept_mode",
]


class AcceptMode(enum.StrEnum):
    """How a poller turns ``accept()`` calls into AcceptJobs calls."""

    BATCHED = "batched"
    """Accepts made within ``accept_window`` go out as one AcceptJobs call. Assumes that
    only this process accepts jobs for the cluster (the secret is the cluster's own): a
    call sent again after its answer was lost that comes back PARTIAL then means the lost
    attempt took the jobs. If another accepter shows up anyway, the affected accepts raise
    :class:`AcceptUncertainError` and the cluster switches to one id per call."""
    SHARED = "shared"
    """One id per AcceptJobs call, for clusters whose jobs several processes accept: a
    PARTIAL answer then means someone else took the job (``accept()`` returns False), and
    a call sent again after a lost answer that comes back PARTIAL raises
    :class:`AcceptUncertainError`."""


AcceptModeName = Literal["batched", "shared"]
"""The accept modes by name, as the keyword form of the options takes them."""

GiveUpHook = Callable[[Job], object]
"""Called with a job this process stopped handing out after ``max_deliveries`` failed
deliveries (see :class:`PollerOptions`); what it returns is ignored, what it raises is
logged."""

UnhandledHook = Callable[[Job], object]
"""Called with each job this process accepted but could not give to a consumer before
its poller closed (see :class:`PollerOptions`); what it returns is ignored, what it
raises is logged."""


@dataclass(frozen=True, slots=True)
class PollerOptions:
    """The knobs of a :class:`Poller` or :class:`PollerGroup` (for a group, per cluster,
    except ``queue_size``, which bounds the group's one merged queue).

    Polling:

    - ``max_jobs`` (10): new jobs to ask for per poll (on top of those in flight). A
      cluster polls only while fewer than ``max_jobs`` of its jobs wait in the queue:
      each listing shows the queued jobs again, so keeping more of them queued would
      make the server read them over and over. So each cluster keeps fewer than
      ``2 * max_jobs`` jobs queued; raise it to keep more at hand.
    - ``queue_size`` (100; a group's default is 1,000): listed jobs that may wait for a
      consumer, all clusters together. While the queue is full, nothing is polled.
    - ``min_interval`` / ``max_interval`` (0.25 s / 5 s): after an empty poll (or an
      error) the wait doubles from ``min_interval`` up to ``max_interval``, each wait
      randomised to between half and all of it; a poll that finds new jobs is followed
      at once by another (as soon as the queue has room).
    - ``denied_attempts`` (5): consecutive denied polls that stop the cluster's poller,
      each followed by a wait of at least a second (doubling up to ``max_interval``), so
      a wrong secret stops it within about 12 s by default; the Go server answers a false
      "request denied" under load, several in a row at times. An accept sent again
      after a lost answer gives up (as uncertain) after as many refusals in a row.

    Accepting:

    - ``accept_mode`` (``"batched"``): see :class:`AcceptMode`.
    - ``accept_window`` (0.005 s) / ``accept_batch_size`` (1,000): in batched mode, the
      accepts requested within the window (up to the size) go out as one AcceptJobs, and
      a batch's accept goes out in calls of at most that many ids.
    - ``accept_timeout`` (None: twice the client's ``timeout``): how long ``accept()``
      waits for its answer. Past it, ``accept()`` raises :class:`AcceptUncertainError`
      with ``resolving=True`` while the poller goes on finding out; a job that turns out
      to be this process's is then handed out again, already accepted.
    - ``shutdown_timeout`` (10 s): how long leaving a poller (or removing a cluster from a
      group, or stopping ``run()``) waits for accepts already requested, and for the
      handlers of jobs already accepted, before it reports them as uncertain (accepts)
      or unhandled (jobs).
    - ``max_hold`` (3,600 s; None: no limit): how long a consumer may hold a handed-out
      job without ``accept()`` or ``release()``. Past it the job is given back (counted
      in ``stats.hold_expired``, logged once) and a late ``accept()`` raises
      :class:`JobReleasedError`. Under ``run(accept="after")`` the handler runs while the
      job is held: keep handlers shorter than this.
    - ``on_unhandled`` (None): called with each job this process accepted (the server no
      longer has it) but could not give to a consumer or finish a handler for before it
      closed. Such jobs are also counted (``stats.unhandled``) and raised in an
      :class:`UnhandledJobsError` when the poller or group is left normally.

    Failed deliveries (a handler that raised, ``release(failed=True)``, or
    ``retry_later()`` on an accepted job):

    - ``redelivery_delay`` / ``max_redelivery_delay`` (1 s / 60 s): the job is handed out
      again only after this delay, doubled at each failure up to the maximum, randomised
      to between half and all of it.
    - ``max_deliveries`` (5): after this many failed deliveries this process stops
      handing the job out, logs it once at ERROR, counts it in ``stats.given_up`` and
      calls ``on_give_up(job)``. A job not accepted stays on the server for other
      processes; an accepted one is this process's alone, so ``on_give_up`` is where the
      application keeps it.
    - ``on_give_up`` (None): see above.
    """

    max_jobs: int = 10
    queue_size: int = 100
    min_interval: float = 0.25
    max_interval: float = 5.0
    accept_mode: AcceptMode = AcceptMode.BATCHED
    accept_window: float = 0.005
    accept_batch_size: int = 1000
    shutdown_timeout: float = 10.0
    denied_attempts: int = 5
    max_deliveries: int = 5
    redelivery_delay: float = 1.0
    max_redelivery_delay: float = 60.0
    on_give_up: GiveUpHook | None = None
    accept_timeout: float | None = None
    max_hold: float | None = 3600.0
    on_unhandled: UnhandledHook | None = None

    def __post_init__(self) -> None:
        for name in (
            "max_jobs",
            "queue_size",
            "accept_batch_size",
            "denied_attempts",
            "max_deliveries",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidArgumentError(f"{name} must be a positive int, not {value!r}")
        if self.max_jobs > P.INT32_MAX:
            raise InvalidArgumentError("max_jobs must fit in int32")
        for name in (
            "min_interval",
            "max_interval",
            "shutdown_timeout",
            "redelivery_delay",
            "max_redelivery_delay",
        ):
            if not _seconds(getattr(self, name)):
                raise InvalidArgumentError(
                    f"{name} must be a positive, finite number, not {getattr(self, name)!r}"
                )
        for name in ("accept_timeout", "max_hold"):
            value = getattr(self, name)
            if value is not None and not _seconds(value):
                raise InvalidArgumentError(
                    f"{name} must be a positive, finite number or None, not {value!r}"
                )
        window = self.accept_window
        if not (_seconds(window) or window == 0):
            raise InvalidArgumentError(f"accept_window must be >= 0, not {window!r}")
        if self.max_interval < self.min_interval:
            raise InvalidArgumentError("max_interval must be >= min_interval")
        if self.max_redelivery_delay < self.redelivery_delay:
            raise InvalidArgumentError("max_redelivery_delay must be >= redelivery_delay")
        for name in ("on_give_up", "on_unhandled"):
            if getattr(self, name) is not None and not callable(getattr(self, name)):
                raise InvalidArgumentError(f"{name} must be callable or None")
        object.__setattr__(self, "accept_mode", parse_accept_mode(self.accept_mode))

    def updated(self, **changes: object) -> PollerOptions:
        """A copy with ``changes`` applied (checked like the constructor's arguments); an
        unknown name is a ``TypeError``, as for any unexpected keyword argument."""
        unknown = set(changes) - _FIELDS
        if unknown:
            raise TypeError(f"unknown poller option(s): {', '.join(sorted(unknown))}")
        return replace(self, **changes)  # type: ignore[arg-type]


def _seconds(value: object) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return math.isfinite(value) and value > 0


_FIELDS = frozenset(f.name for f in fields(PollerOptions))


class PollerKwargs(TypedDict, total=False):
    """The fields of :class:`PollerOptions` as keyword arguments (all optional)."""

    max_jobs: int
    queue_size: int
    min_interval: float
    max_interval: float
    accept_mode: AcceptMode | AcceptModeName
    accept_window: float
    accept_batch_size: int
    shutdown_timeout: float
    denied_attempts: int
    max_deliveries: int
    redelivery_delay: float
    max_redelivery_delay: float
    on_give_up: GiveUpHook | None
    accept_timeout: float | None
    max_hold: float | None
    on_unhandled: UnhandledHook | None


@dataclass(frozen=True, slots=True)
class PollerStats:
    """A snapshot of one poller's counters (``poller.stats``, ``group.stats[cluster]``).

    Counters since the poller started (every field but the last five is one):

    ================== ==================================================================
    polls              RequestJobs calls that returned
    empty_polls        polls that brought nothing new to hand out
    jobs_listed        jobs returned by all polls, counting repeats
    handed_out         jobs given to consumers (``get()``, iteration, batches)
    accepted           jobs this process now owns
    lost_to_others     jobs someone else took first (``accept()`` returned False)
    vanished           queued jobs a complete listing no longer showed, taken out of the
                       queue before a consumer got them (most likely taken elsewhere; one
                       still waiting is handed out again by a later listing)
    released           jobs given back (``release()``, a withdrawn accept, shutdown, or the
                       hold limit)
    uncertain          accepts that raised :class:`AcceptUncertainError`
    given_up           jobs no longer handed out after ``max_deliveries`` failures
    hold_expired       jobs given back because a consumer held them past ``max_hold``
    declined           jobs a consumer declined (``decline()``): never handed out here
                       again while the server lists them
    unhandled          accepted jobs no consumer or handler finished before the poller
                       closed (``on_unhandled``, :class:`UnhandledJobsError`)
    errors             failed polls (RequestJobs); failed accepts are counted apart
    accept_calls       AcceptJobs RPCs sent (the client's retries included)
    accept_errors      AcceptJobs calls that failed (after the client's own retries),
                       whether or not a resend later settled their jobs
    ================== ==================================================================

    State now: ``held`` (jobs handed out and neither accepted nor given back),
    ``queued`` (jobs waiting in the queue for a consumer: listed ones, and accepted ones
    to be handed out again),
    ``last_error`` (the latest poll error), ``last_accept_error`` (the latest accept
    error), ``last_poll_latency`` (seconds the latest successful RequestJobs took) and
    ``cluster``. Errors are shown as type and message, never with a secret.
    """

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
    """Jobs someone else took first (accept() returned False)."""
    vanished: int = 0
    """Queued jobs a complete listing no longer showed (see the class docstring)."""
    released: int = 0
    """Jobs given back (``release()``, a withdrawn accept, shutdown, or ``max_hold``)."""
    uncertain: int = 0
    """Accepts that raised :class:`AcceptUncertainError`."""
    given_up: int = 0
    """Jobs no longer handed out after ``max_deliveries`` failed deliveries."""
    errors: int = 0
    """Failed polls."""
    last_error: str | None = None
    """The latest poll error (type and message; never a secret)."""
    last_poll_latency: float | None = None
    """Seconds the latest successful RequestJobs took."""
    accept_calls: int = 0
    """AcceptJobs RPCs sent (retries included)."""
    accept_errors: int = 0
    """AcceptJobs calls that failed (after the client's own retries)."""
    last_accept_error: str | None = None
    """The latest accept error (type and message; never a secret)."""
    held: int = 0
    """Jobs consumers hold now: handed out, neither accepted nor given back."""
    queued: int = 0
    """Jobs waiting in the queue for a consumer now: listed ones, and accepted ones whose
    consumer left before the answer came (handed out again, already owned)."""
    hold_expired: int = 0
    """Jobs given back because a consumer held them longer than ``max_hold``."""
    unhandled: int = 0
    """Accepted jobs no consumer or handler finished before the poller closed."""
    declined: int = 0
    """Jobs a consumer declined: never handed out again here while the server lists them."""


def parse_accept_mode(value: AcceptMode | AcceptModeName | str) -> AcceptMode:
    """``value`` as an :class:`AcceptMode` ("batched" or "shared")."""
    try:
        return AcceptMode(value)
    except ValueError:
        raise InvalidArgumentError(
            f"accept_mode must be 'batched' or 'shared', not {value!r}"
        ) from None


DEFAULTS: PollerOptions = PollerOptions()
"""The default options of a single :class:`Poller`."""

GROUP_QUEUE_SIZE = 1000
"""The default ``queue_size`` of a :class:`PollerGroup`, whose clusters share one queue.

A single poller keeps fewer than two polls' worth of jobs (``2 * max_jobs``) queued, so
its 100 slots leave room for a larger ``max_jobs``. Shared by tens of clusters, 100
slots are two or three jobs per cluster: polls then
bring back a job or two each (listing the cluster's in-flight jobs again every time),
and a backlog drains at the pace of consumers waiting for room rather than at the pace
of the server. A thousand slots keep a poll's worth per cluster for up to a hundred
clusters at the default ``max_jobs``. What it costs is memory: a queued job is one
parsed :class:`Job` (a few hundred bytes plus its command), so about a megabyte for
ordinary commands. Lower it when commands are large or when jobs should stay on the
server (visible to other processes) until a consumer is free."""
