"""The bounded queue between pollers and consumers.

Unlike ``asyncio.Queue`` it lets a poller ask how much room is left and wait for room
(a poller with no room does not poll), lets jobs be dropped in place when they turn out
to be gone (an item says whether it is still ``deliverable``), and puts accepted jobs
whose consumer was cancelled at the front. It holds the ledgers' entries; it never
changes them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

__all__ = ["JobQueue", "QueueItem"]


class QueueItem(Protocol):
    """What the queue asks of an item: whether a consumer may still be given it."""

    @property
    def deliverable(self) -> bool: ...


_Item = TypeVar("_Item", bound=QueueItem)


class JobQueue(Generic[_Item]):
    """FIFO of items with at most ``maxsize`` listed jobs in it.

    Accepted jobs put back with :meth:`put_owned` may exceed the bound (there is at most
    one per cancelled ``accept()``); pollers only add listed jobs while there is room.

    ``refill`` (1 for a single poller; a group's) is the room a poll is worth once the
    queue has been full: from then on pollers wait (:meth:`wait_room`) until that many
    slots are free again, and each slot freed wakes at most one poller per ``refill``
    slots. A poll lists every job the cluster has in flight again, so with many pollers
    on one full queue, polling for each slot freed would list the same jobs over and
    over for one new job each. Likewise, each poll in flight (``listing``) counts as
    ``refill`` slots taken when deciding whether another poll may go out, so that the
    slots freed one by one by consumers do not send every waiting poller off for the
    same few slots.
    """

    __slots__ = (
        "_closed",
        "_getters",
        "_items",
        "_live",
        "_refilling",
        "_room_waiters",
        "listing",
        "maxsize",
        "refill",
    )

    def __init__(self, maxsize: int, refill: int = 1) -> None:
        self.maxsize = maxsize
        self.refill = max(1, min(refill, maxsize))
        self._refilling = False  # full since room was last >= refill
        self.listing = 0  # polls in flight (kept by the pollers)
        self._items: deque[_Item] = deque()
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
    def pollable(self) -> bool:
        """Whether a poll may go out: there is room, and ``refill`` slots of it if the
        queue has been full since there last were."""
        free = self.maxsize - self._live - self.listing * self.refill
        return free >= self.refill if self._refilling else free > 0

    @property
    def closed(self) -> bool:
        return self._closed is not None

    # producers

    def put(self, job: _Item) -> None:
        self._items.append(job)
        self._live += 1
        if self._live >= self.maxsize and self.refill > 1:
            self._refilling = True
        self._wake_getter()

    def put_owned(self, job: _Item) -> None:
        self._items.appendleft(job)
        self._live += 1
        self._wake_getter()

    def discard(self) -> None:
        """One queued job was dropped in place (its state is no longer deliverable)."""
        self._live -= 1
        # dropped entries are skipped by get(); compact when they dominate
        if len(self._items) > 2 * self._live + 64:
            self._items = deque(j for j in self._items if j.deliverable)
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
        """Return once there is room for a poll (at once if there is)."""
        if self.pollable:
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
        """Wake one room waiter per ``refill`` free slots (if a poll may go out)."""
        if not self.pollable:
            return
        self._refilling = False
        free = self.room - self.listing * self.refill
        waiters = self._room_waiters
        while free > 0 and waiters:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                free -= self.refill

    # consumers

    def get_nowait(self) -> _Item | None:
        while self._items:
            job = self._items.popleft()
            if job.deliverable:
                self._live -= 1
                self.wake_room()
                return job
        return None

    async def get(self) -> _Item:
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
