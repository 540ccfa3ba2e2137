"""The idle-poll budget of a group: how many idle clusters may be listed per second.

The protocol has no way to wait for jobs: an idle cluster is only found busy again by
listing it. A group of ten thousand idle clusters, each polling at its own idle interval,
would send thousands of RequestJobs a second for nothing, and wake the event loop as
often. :class:`IdleBudget` caps the idle polls of a whole group at ``rate`` a second,
however many clusters it has; polls that follow a poll which found jobs (a backlog being
drained) do not wait for it.

Waiting polls are served first come first served within two classes: clusters that
recently had jobs, served first, and the others. Whenever both classes wait, every
``IDLE_SHARE``-th token goes to the idle class, so idle clusters keep a share of the
budget even when busy ones alone ask for more than all of it (strict priority would let
them starve: a cluster that never had jobs would never be listed).
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Final

__all__ = ["IDLE_SHARE", "IdleBudget"]

IDLE_SHARE: Final = 5
"""While both classes wait, one token in this many goes to the idle class."""


class IdleBudget:
    """A token bucket of ``rate`` idle polls a second (bursts of up to a tenth of a
    second's worth), handed out to waiting polls as the module docstring says."""

    __slots__ = ("_burst", "_passed_over", "_queues", "_rate", "_stamp", "_timer", "_tokens")

    def __init__(self, rate: float) -> None:
        self._rate = rate
        self._burst = max(1.0, rate / 10)
        self._tokens = self._burst
        self._stamp: float | None = None  # loop time of the last refill
        # waiting polls: those of clusters that recently had jobs, then the others
        self._queues: tuple[deque[asyncio.Future[None]], deque[asyncio.Future[None]]] = (
            deque(),
            deque(),
        )
        self._passed_over = 0  # tokens given to the busy class while idle ones waited
        self._timer: asyncio.TimerHandle | None = None

    @property
    def rate(self) -> float:
        return self._rate

    @property
    def waiting(self) -> int:
        """Polls waiting for their turn (cancelled ones may still be counted)."""
        return len(self._queues[0]) + len(self._queues[1])

    async def acquire(self, recent: bool) -> None:
        """Wait for one idle poll's token (at once while the budget has some and nobody
        waits); ``recent``: the cluster had jobs lately, and goes first."""
        loop = asyncio.get_running_loop()
        self._refill(loop.time())
        if not self.waiting and self._tokens >= 1:
            self._tokens -= 1
            return
        turn = loop.create_future()
        self._queues[0 if recent else 1].append(turn)
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
        busy, idle = self._queues
        while self._tokens >= 1:
            _drop_cancelled(busy)
            _drop_cancelled(idle)
            if not busy and not idle:
                break
            if busy and (not idle or self._passed_over < IDLE_SHARE - 1):
                turn = busy.popleft()
                self._passed_over = self._passed_over + 1 if idle else 0
            else:
                turn = idle.popleft()
                self._passed_over = 0
            turn.set_result(None)
            self._tokens -= 1
        if self.waiting:
            self._schedule(loop)


def _drop_cancelled(queue: deque[asyncio.Future[None]]) -> None:
    while queue and queue[0].done():  # their polls were cancelled
        queue.popleft()
