"""The idle-poll budget of a group: how many idle clusters may be listed per second.

The protocol has no way to wait for jobs: an idle cluster is only found busy again by
listing it. A group of ten thousand idle clusters, each polling at its own idle interval,
would send thousands of RequestJobs a second for nothing, and wake the event loop as
often. :class:`IdleBudget` caps the idle polls of a whole group at ``rate`` a second,
however many clusters it has; polls that follow a poll which found jobs (a backlog being
drained) do not wait for it. Waiting polls are served by priority, then in order of
arrival: clusters that recently had jobs first.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools

__all__ = ["IdleBudget"]


class IdleBudget:
    """A token bucket of ``rate`` idle polls a second (bursts of up to a tenth of a
    second's worth), handed out by priority (lower first), then first come first served."""

    __slots__ = ("_burst", "_order", "_rate", "_stamp", "_timer", "_tokens", "_waiters")

    def __init__(self, rate: float) -> None:
        self._rate = rate
        self._burst = max(1.0, rate / 10)
        self._tokens = self._burst
        self._stamp: float | None = None  # loop time of the last refill
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []  # a heap
        self._order = itertools.count()
        self._timer: asyncio.TimerHandle | None = None

    @property
    def rate(self) -> float:
        return self._rate

    @property
    def waiting(self) -> int:
        """Polls waiting for their turn (cancelled ones may still be counted)."""
        return len(self._waiters)

    async def acquire(self, priority: int) -> None:
        """Wait for one idle poll's token (at once while the budget has some)."""
        loop = asyncio.get_running_loop()
        self._refill(loop.time())
        if not self._waiters and self._tokens >= 1:
            self._tokens -= 1
            return
        turn = loop.create_future()
        heapq.heappush(self._waiters, (priority, next(self._order), turn))
        self._schedule(loop)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self._tokens += 1  # granted just as it was cancelled: give the token back
            raise

    def _refill(self, now: float) -> None:
        if self._stamp is not None:
            self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._timer is None:
            wait = max(0.0, (1 - self._tokens) / self._rate)
            self._timer = loop.call_later(wait, self._grant, loop)

    def _grant(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        self._refill(loop.time())
        waiters = self._waiters
        while waiters and self._tokens >= 1:
            _, _, turn = heapq.heappop(waiters)
            if turn.done():  # its poll was cancelled
                continue
            turn.set_result(None)
            self._tokens -= 1
        if waiters:
            self._schedule(loop)
