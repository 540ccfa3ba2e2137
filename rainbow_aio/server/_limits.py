"""How much the server takes on at once, and what it answers past that.

A server with no bound grows its memory with every call a flood of clients opens, until
the process dies and takes every waiting call with it. This one bounds the calls that
use the database (Register, SubmitJob, RequestJobs, AcceptJobs) and the writes queued
for the database thread. Past either bound it answers at once, before doing anything,
with the Go server's own signal for "try again": gRPC status UNKNOWN, details
``database is locked``. rainbow-aio's client repeats every RPC on that answer (nothing
was written), as other clients of the Go server already had to.

Serial and Stream do not touch the database and are never refused.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Final

from .. import _protocol as P
from .._exceptions import InvalidArgumentError

__all__ = ["CallGate", "ServerLimits"]

log = logging.getLogger("rainbow_aio.server")

_BUSY_LOG_EVERY: Final = 10.0
"""Seconds between two warnings that calls are being refused."""


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """Bounds of the embedded server (``rainbow-aio serve --max-...``).

    - ``max_calls_in_flight``: Register, SubmitJob, RequestJobs and AcceptJobs calls
      being served at once; one more is answered ``database is locked``.
    - ``max_queued_writes``: writes (submits, accepts, registrations) waiting for the
      database thread, including those whose caller has given up; one more is answered
      ``database is locked``.
    - ``max_response_bytes``: the largest RequestJobs answer. A listing that would be
      larger fails with gRPC status RESOURCE_EXHAUSTED and says to ask for fewer jobs;
      it is never cut short. The default matches ``RainbowClient``'s receive limit; a
      client on gRPC's own default (4 MiB) needs a smaller ``maxJobs`` anyway.

    Every value is a whole number of at least 1 (``max_response_bytes`` at most
    2**31 - 1); anything else raises :class:`~rainbow_aio.InvalidArgumentError`.
    """

    max_calls_in_flight: int = 500
    max_queued_writes: int = 1000
    max_response_bytes: int = 256 << 20

    def __post_init__(self) -> None:
        for name in ("max_calls_in_flight", "max_queued_writes", "max_response_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidArgumentError(
                    f"ServerLimits.{name} must be a whole number of at least 1, not {value!r}"
                )
        if self.max_response_bytes > P.INT32_MAX:
            raise InvalidArgumentError(
                f"ServerLimits.max_response_bytes must be at most {P.INT32_MAX} (gRPC's "
                f"largest message), not {self.max_response_bytes}"
            )


class CallGate:
    """Counts the database calls in flight and refuses those past the bound.

    Also counts every call answered ``database is locked`` (for either bound) and warns
    in the log, at most every few seconds, while that happens.
    """

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._in_flight = 0
        self._refused = 0
        self._last_log = -_BUSY_LOG_EVERY

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def refused(self) -> int:
        """Calls answered ``database is locked`` since the server started."""
        return self._refused

    def enter(self) -> bool:
        """Admit one call (True), or count it as refused (False) when at the bound."""
        if self._in_flight >= self._limit:
            self.refuse("calls in flight")
            return False
        self._in_flight += 1
        return True

    def leave(self) -> None:
        self._in_flight -= 1

    def refuse(self, bound: str) -> None:
        """Count a call answered ``database is locked`` because of ``bound``."""
        self._refused += 1
        now = time.monotonic()
        if now - self._last_log >= _BUSY_LOG_EVERY:
            log.warning(
                "busy (%s at the limit): answering 'database is locked' (%d calls so far)",
                bound,
                self._refused,
            )
            self._last_log = now
