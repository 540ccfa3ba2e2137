"""The bounded queue between pollers and consumers.

Unlike ``asyncio.Queue`` it lets a poller ask how much room is left and wait for room
(a poller with no room does not poll), lets jobs be dropped in place when they turn out
to be gone, and puts accepted jobs whose consumer was cancelled at the front.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable

from ._job import JobState, PolledJob

__all__ = ["JobQueue"]

_DELIVERABLE = (JobState.QUEUED, JobState.ACCEPTED)


class JobQueue:
    """FIFO of :class:`PolledJob` with at most ``maxsize`` listed jobs in it.

    Accepted jobs put back with :meth:`put_owned` may exceed the bound (there is at most
    one per cancelled ``accept()``); pollers only add listed jobs while there is room.
    """

    __slots__ = ("_closed", "_getters", "_items", "_live", "_room_waiters", "maxsize")

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._items: deque[PolledJob] = deque()
        self._live = 0  # items that will be handed out (dropped ones excluded)
        self._getters: deque[asyncio.Future[None]] = deque()
        self._room_waiters: deque[asyncio.Future[None]] = deque()
        self._closed: Callable[[], BaseException] | None = None

    def __len__(self) -> int:
        return self._live

    @property
    def room(self) -> int:
        return self.maxsize - self._live

    @property
    def closed(self) -> bool:
        return self._closed is not None

    # producers

    def put(self, job: PolledJob) -> None:
        self._items.append(job)
        self._live += 1
        self._wake_getter()

    def put_owned(self, job: PolledJob) -> None:
        self._items.appendleft(job)
        self._live += 1
        self._wake_getter()

    def discard(self) -> None:
        """One queued job was dropped in place (its state is no longer deliverable)."""
        self._live -= 1
        # dropped entries are skipped by get(); compact when they dominate
        if len(self._items) > 2 * self._live + 64:
            self._items = deque(j for j in self._items if j._state in _DELIVERABLE)
        self.wake_room()

    def close(self, error: Callable[[], BaseException]) -> None:
        """After the queued jobs, ``get()`` raises ``error()``."""
        self._closed = error
        while self._getters:
            fut = self._getters.popleft()
            if not fut.done():
                fut.set_result(None)

    def reopen(self) -> None:
        self._closed = None

    async def wait_room(self) -> None:
        """Return once there is room (at once if there is)."""
        if self.room > 0:
            return
        fut = asyncio.get_running_loop().create_future()
        self._room_waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.wake_room()  # pass the wake-up on
            else:
                _remove(self._room_waiters, fut)
            raise

    def wake_room(self) -> None:
        """Wake as many room waiters as there are free slots."""
        free = self.room
        waiters = self._room_waiters
        while free > 0 and waiters:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                free -= 1

    # consumers

    def get_nowait(self) -> PolledJob | None:
        while self._items:
            job = self._items.popleft()
            if job._state in _DELIVERABLE:
                self._live -= 1
                self.wake_room()
                return job
        return None

    async def get(self) -> PolledJob:
        while True:
            job = self.get_nowait()
            if job is not None:
                return job
            if self._closed is not None:
                raise self._closed()
            fut = asyncio.get_running_loop().create_future()
            self._getters.append(fut)
            try:
                await fut
            except asyncio.CancelledError:
                if fut.done() and not fut.cancelled():
                    self._wake_getter()
                else:
                    _remove(self._getters, fut)
                raise

    def _wake_getter(self) -> None:
        while self._getters:
            fut = self._getters.popleft()
            if not fut.done():
                fut.set_result(None)
                return


def _remove(waiters: deque[asyncio.Future[None]], fut: asyncio.Future[None]) -> None:
    with contextlib.suppress(ValueError):
        waiters.remove(fut)
