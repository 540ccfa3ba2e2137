"""How much the server takes on at once, and what it answers past that.

A server with no bound grows its memory with every call a flood of clients opens, until
the process dies and takes every waiting call with it. This one bounds, in calls and in
bytes:

- the calls in flight, every RPC (Serial and Stream included), each counted from the
  moment its handler starts until its answer has been sent (or the call has ended),
  not merely until the handler returns: an answer the client does not read still
  holds memory;
- the bytes those calls hold: each request's size, and each RequestJobs answer's size
  from the moment it is built until it has been sent;
- the writes queued for the database thread.

Past a bound the server answers at once, before doing anything, with the Go server's
own signal for "try again": gRPC status UNKNOWN, details ``database is locked``.
rainbow-aio's client repeats every RPC on that answer (nothing was written), as other
clients of the Go server already had to. A call that is alone in holding bytes is
never refused for its size (it is bounded by the message limits instead), so one large
answer can always get through.

Transport bounds (``_server.py``): HTTP/2 streams per connection
(``grpc.max_concurrent_streams``), so one connection cannot park thousands of
half-sent calls; gRPC's receive limit bounds one request.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Final

from .. import _protocol as P
from .._exceptions import InvalidArgumentError

__all__ = ["CallGate", "ServerLimits", "Ticket"]

log = logging.getLogger("rainbow_aio.server")

_BUSY_LOG_EVERY: Final = 10.0
"""Seconds between two warnings that calls are being refused."""


LIMIT_NAMES: Final = (
    "max_calls_in_flight",
    "max_queued_writes",
    "max_response_bytes",
    "max_held_bytes",
    "max_accept_ids",
    "max_streams_per_connection",
)
"""Every field of :class:`ServerLimits`, in the order ``rainbow-aio serve`` lists them."""


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """Bounds of the embedded server (``rainbow-aio serve --max-...``).

    - ``max_calls_in_flight``: calls of any RPC being served at once, each counted until
      its answer is sent; one more is answered ``database is locked``.
    - ``max_held_bytes``: bytes of requests being served and of answers not sent yet; a
      call that would pass it is answered ``database is locked`` (unless nothing else
      holds bytes).
    - ``max_queued_writes``: writes (submits, accepts, registrations) waiting for the
      database thread, including those whose caller has given up; one more is answered
      ``database is locked``.
    - ``max_response_bytes``: the largest RequestJobs answer. A listing that would be
      larger fails with gRPC status RESOURCE_EXHAUSTED and says to ask for fewer jobs;
      it is never cut short. The default matches ``RainbowClient``'s receive limit; a
      client on gRPC's own default (4 MiB) needs a smaller ``maxJobs`` anyway.
    - ``max_accept_ids``: job ids in one AcceptJobs call; a longer list is refused with
      gRPC status INVALID_ARGUMENT (nothing deleted), so that no cluster can keep the
      database thread busy for seconds with one call. Accepts are deleted in short
      transactions of at most ``ACCEPT_CHUNK`` ids, between which other calls run.
    - ``max_streams_per_connection``: HTTP/2 streams (calls) one connection may have
      open at once, advertised to clients (``grpc.max_concurrent_streams``); a client
      past it waits for a stream of its own, the server holds nothing for it.

    Every value is a whole number from 1 to 2**31 - 1; anything else raises
    :class:`~rainbow_aio.InvalidArgumentError`.
    """

    max_calls_in_flight: int = 500
    max_queued_writes: int = 1000
    max_response_bytes: int = 256 << 20
    max_held_bytes: int = 128 << 20
    max_accept_ids: int = 100_000
    max_streams_per_connection: int = 1000

    def __post_init__(self) -> None:
        for name in LIMIT_NAMES:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidArgumentError(
                    f"ServerLimits.{name} must be a whole number of at least 1, not {value!r}"
                )
            if value > P.INT32_MAX:
                raise InvalidArgumentError(
                    f"ServerLimits.{name} must be at most {P.INT32_MAX} (gRPC's largest "
                    f"message and setting), not {value}"
                )


class Ticket:
    """One admitted call: the bytes it holds, until :meth:`CallGate.leave`."""

    __slots__ = ("held", "left")

    def __init__(self, held: int) -> None:
        self.held = held
        self.left = False


class CallGate:
    """Counts the calls in flight and the bytes they hold; refuses those past a bound.

    Also counts every call answered ``database is locked`` (for any bound) and warns
    in the log, at most every few seconds, while that happens. Used on the event loop
    only.
    """

    def __init__(self, limit: int, max_bytes: int) -> None:
        self._limit = limit
        self._max_bytes = max_bytes
        self._in_flight = 0
        self._held = 0
        self._refused = 0
        self._last_log = -_BUSY_LOG_EVERY

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def held_bytes(self) -> int:
        """Bytes of requests being served and answers not yet sent."""
        return self._held

    @property
    def refused(self) -> int:
        """Calls answered ``database is locked`` since the server started."""
        return self._refused

    def _fits(self, size: int) -> bool:
        return self._held == 0 or self._held + size <= self._max_bytes

    def enter(self, size: int = 0) -> Ticket | None:
        """Admit one call whose request is ``size`` bytes (its ticket), or count it as
        refused (None) when at a bound."""
        if self._in_flight >= self._limit:
            self.refuse("calls in flight")
            return None
        if not self._fits(size):
            self.refuse("bytes held")
            return None
        self._in_flight += 1
        self._held += size
        return Ticket(size)

    def hold(self, ticket: Ticket, size: int) -> bool:
        """Let an admitted call hold ``size`` more bytes (its answer) until it leaves;
        False (and counted as refused) when that would pass the bound while other calls
        hold bytes too."""
        if ticket.left:
            return True
        if self._held > ticket.held and self._held + size > self._max_bytes:
            self.refuse("bytes held")
            return False
        ticket.held += size
        self._held += size
        return True

    def leave(self, ticket: Ticket) -> None:
        """The call has ended: its answer was sent, or it failed or was cancelled.
        Idempotent."""
        if ticket.left:
            return
        ticket.left = True
        self._in_flight -= 1
        self._held -= ticket.held

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
