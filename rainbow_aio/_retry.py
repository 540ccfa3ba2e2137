"""Which failed calls the client repeats, and how.

Every failure of an attempt is first sorted into one :class:`Fault` (or none), then
looked up in ``RETRY_TABLE``. Anything not in the table is raised at once: denied,
missing credentials, invalid arguments, TLS handshake failures, every other UNKNOWN
details string (including the Go server's occasional false ``request denied``).

=============  =============  ============  =============  ==================
RPC            not connected  conn. lost    deadline       database is locked
=============  =============  ============  =============  ==================
Register       retried        no            no             retried
SubmitJob      retried        no [1]_       no [1]_        retried
RequestJobs    retried        retried       retried        retried
AcceptJobs     retried        retried [2]_  no             retried [2]_
Serial (ping)  retried        retried       retried        retried
Stream         no             no            no             no
=============  =============  ============  =============  ==================

- *not connected*: UNAVAILABLE before any connection existed for the call (grpc says
  ``failed to connect to all addresses``): the request never left the client, so every
  RPC may repeat it. (A failed TLS handshake also never sends the call, but repeating it
  cannot help: it is raised at once.)
- *conn. lost*: any other UNAVAILABLE (reset, dropped, server shutting down): the
  server may or may not have run the call.
- *deadline*: the attempt's deadline passed; the server may still have run the call.
- *database is locked*: the server says it wrote nothing.

Register is never repeated once the request may have reached the server: if the first
answer (with the only copy of the credentials) was lost, a retry would answer "exists"
and the credentials would be gone for good.

.. [1] With ``submit_retry="at_least_once"`` SubmitJob is also retried after a lost
   connection or a deadline; a job whose first answer was lost is then stored twice.
.. [2] AcceptJobs deletes the accepted jobs, so repeating it is harmless, but the answer
   of a repeat is weaker: when an earlier attempt may have reached the server and the
   repeat says PARTIAL, the result is ``AcceptStatus.UNCERTAIN`` (the earlier attempt
   may have taken the jobs), never plainly PARTIAL.

Every attempt also ends with a :class:`~rainbow_aio.CallOutcome` (``attempt_outcome``):
not connected, database is locked and every refusal (denied, missing credential, invalid
argument, TLS) are NOT_APPLIED; a lost connection, a deadline and any other server error
are UNKNOWN. A call's outcome is UNKNOWN as soon as one of its attempts was, so an error
raised after a retry never claims that nothing happened when an earlier attempt may have
acted.

Timing comes from :class:`~rainbow_aio.RetryPolicy`: exponential backoff with full
jitter, at most ``max_attempts`` attempts, nothing started after the call's time budget
(its ``timeout``). Each call builds its own ``AsyncRetrying``; none is shared between calls
or tasks.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Final

import tenacity
from tenacity import AsyncRetrying

from ._config import RetryPolicy, SubmitRetry
from ._exceptions import (
    DeadlineExceededError,
    RainbowError,
    ServerBusyError,
    UnavailableError,
    never_sent,
)
from ._outcome import CallOutcome

__all__ = [
    "RETRY_TABLE",
    "Fault",
    "attempt_outcome",
    "build_retrying",
    "classify",
    "should_retry",
]

_log = logging.getLogger(__name__)


class Fault(enum.Enum):
    """What kind of failure an attempt ended with, as far as retrying is concerned."""

    NOT_CONNECTED = "not connected"
    CONNECTION_LOST = "connection lost"
    DEADLINE = "deadline exceeded"
    BUSY = "database is locked"


_ALL: Final = frozenset(Fault)
_NOTHING_WRITTEN: Final = frozenset({Fault.NOT_CONNECTED, Fault.BUSY})

RETRY_TABLE: Final[Mapping[str, frozenset[Fault]]] = {
    "Register": _NOTHING_WRITTEN,
    "SubmitJob": _NOTHING_WRITTEN,
    "SubmitJob/at_least_once": _ALL,
    "RequestJobs": _ALL,
    "AcceptJobs": frozenset({Fault.NOT_CONNECTED, Fault.CONNECTION_LOST, Fault.BUSY}),
    "Serial": _ALL,
    "Stream": frozenset(),
}
"""RPC name -> the faults after which it is repeated (see the table above)."""


def classify(error: BaseException) -> Fault | None:
    """Sort an attempt's error into a :class:`Fault`; None means "never retry"."""
    if isinstance(error, UnavailableError):
        return Fault.NOT_CONNECTED if never_sent(error.details) else Fault.CONNECTION_LOST
    if isinstance(error, DeadlineExceededError):
        return Fault.DEADLINE
    if isinstance(error, ServerBusyError):
        return Fault.BUSY
    return None


def should_retry(rpc: str, error: BaseException, *, submit_retry: SubmitRetry = "safe") -> bool:
    """Whether ``rpc`` may be repeated after an attempt failed with ``error``."""
    fault = classify(error)
    if fault is None:
        return False
    key = "SubmitJob/at_least_once" if rpc == "SubmitJob" and submit_retry != "safe" else rpc
    return fault in RETRY_TABLE.get(key, frozenset())


def attempt_outcome(error: BaseException) -> CallOutcome:
    """Whether the server may have acted on one attempt that failed with ``error``.

    Read off the error's own ``outcome`` (set by ``error_from_status`` from the status
    and details); anything that is not a :class:`RainbowError` (a bug, a cancellation)
    is UNKNOWN.
    """
    if isinstance(error, RainbowError):
        return error.outcome
    return CallOutcome.UNKNOWN


def build_retrying(
    policy: RetryPolicy,
    *,
    rpc: str,
    budget: float,
    retry_if: Callable[[BaseException], bool],
    sleep: Callable[[float], Awaitable[None]],
) -> AsyncRetrying:
    """A fresh ``AsyncRetrying`` for one call of ``rpc``.

    ``budget`` is the call's total time in seconds: no sleep or attempt starts that would
    end after it. ``sleep`` lets the client cut a backoff short when it is closed. The
    last error is re-raised as is (never wrapped in ``tenacity.RetryError``).
    """
    return AsyncRetrying(
        stop=tenacity.stop_after_attempt(policy.max_attempts) | tenacity.stop_before_delay(budget),
        wait=tenacity.wait_random_exponential(
            multiplier=policy.initial_backoff, max=policy.max_backoff
        ),
        retry=tenacity.retry_if_exception(retry_if),
        sleep=sleep,
        before_sleep=_log_retry(rpc),
        reraise=True,
    )


def _log_retry(rpc: str) -> Callable[[tenacity.RetryCallState], None]:
    def log(state: tenacity.RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        # Only the error's code and details: never the request, which holds credentials.
        code = getattr(getattr(error, "code", None), "name", None)
        cluster = error.cluster if isinstance(error, RainbowError) else None
        _log.info(
            "%s failed (attempt %d, %s: %s), retrying in %.2f s",
            rpc + (f" cluster={cluster!r}" if cluster else ""),
            state.attempt_number,
            code or type(error).__name__,
            getattr(error, "details", None) or "",
            state.upcoming_sleep,
        )

    return log
