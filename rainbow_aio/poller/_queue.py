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
from collections.abc import Callable, Hashable
from typing import Generic, Protocol, TypeVar

__all__ = ["JobQueue", "QueueItem"]


class QueueItem(Protocol):
    """What the queue asks of an item: whether a consumer may still be given it, and
    which lane (cluster) it belongs to."""

    @property
    def deliverable(self) -> bool: ...

    @property
    def lane(self) -> Hashable: ...


_Item = TypeVar("_Item", bound=QueueItem)


class JobQueue(Generic[_Item]):
    """Items in lanes, one lane per cluster, with at most ``maxsize`` listed jobs in all.

    Each lane is first in, first out; consumers take from the lanes in turn, so one
    cluster's big listing does not make the others wait behind it, and :meth:`take` (a
    batch) gives jobs of one cluster. A lane keeps its turn for single takes while its
    next job came from the same poll as the one just taken (:meth:`begin_run` marks where
    a poll's jobs begin): consumers that take one job at a time then take a poll's jobs
    together, and their accepts, made together, go out in one call, while no cluster
    waits behind more than one poll's jobs of another; a batch ends its lane's turn.
    Accepted jobs put back with :meth:`put_owned` go to
    the front, and may exceed the bound (there is at most one per cancelled ``accept()``);
    pollers only add listed jobs while there is room.

    Each lane also counts its deliverable jobs (:meth:`waiting`), and a lane's poller
    can wait until fewer than some number of them wait (:meth:`wait_lane`): a poll lists
    every job of its cluster still queued again, so a cluster polls only while less than
    a listing's worth of its jobs waits for a consumer.

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
        "_lane_live",
        "_lane_waiters",
        "_lanes",
        "_live",
        "_order",
        "_refilling",
        "_room_waiters",
        "_run",
        "_stored",
        "_woken",
        "listing",
        "maxsize",
        "refill",
    )

    def __init__(self, maxsize: int, refill: int = 1) -> None:
        self.maxsize = maxsize
        self.refill = max(1, min(refill, maxsize))
        self._refilling = False  # full since room was last >= refill
        self.listing = 0  # polls in flight (kept by the pollers)
        self._lanes: dict[Hashable, _Lane[_Item]] = {}
        self._run = 0
        self._order: deque[Hashable] = deque()  # lanes with items, in turn order
        self._live = 0  # items that will be handed out (dropped ones excluded)
        self._lane_live: dict[Hashable, int] = {}  # the same, per lane (lanes with items)
        # pollers waiting for a lane to go below a count (a lane's poller, as a rule)
        self._lane_waiters: dict[Hashable, list[tuple[int, asyncio.Future[None]]]] = {}
        self._stored = 0  # items in the lanes, dropped ones included
        # consumers waiting for items: each one's future, and how many it takes at most
        self._getters: deque[tuple[asyncio.Future[None], int]] = deque()
        # how many items the consumers woken and not yet back will take, at most: a
        # consumer is woken only for items these will not take
        self._woken = 0
        self._room_waiters: deque[asyncio.Future[None]] = deque()
        self._closed: Callable[[], BaseException] | None = None

    def __len__(self) -> int:
        return self._live

    @property
    def room(self) -> int:
        return self.maxsize - self._live

    def waiting(self, lane: Hashable) -> int:
        """How many deliverable jobs of ``lane`` the queue holds."""
        return self._lane_live.get(lane, 0)

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

    def begin_run(self) -> None:
        """The jobs put from now on (until the next call) are the new jobs of one poll."""
        self._run += 1

    def put_all(self, jobs: list[_Item]) -> None:
        """``put`` each of ``jobs`` (all of one lane), in order."""
        if not jobs:
            return
        key = jobs[0].lane
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = _Lane()
            self._order.append(key)
        lane.items.extend(jobs)
        lane.runs.extend([self._run] * len(jobs))
        self._stored += len(jobs)
        self._live += len(jobs)
        self._lane_live[key] = self._lane_live.get(key, 0) + len(jobs)
        if self._live >= self.maxsize and self.refill > 1:
            self._refilling = True
        self._wake_enough()

    def put_owned(self, job: _Item) -> None:
        key = job.lane
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = _Lane()
        else:
            self._order.remove(key)
        self._order.appendleft(key)
        lane.items.appendleft(job)
        lane.runs.appendleft(-1)
        self._stored += 1
        self._live += 1
        self._lane_live[key] = self._lane_live.get(key, 0) + 1
        self._wake_enough()

    def discard(self, item: _Item) -> None:
        """``item``, queued, was dropped in place (its state is no longer deliverable)."""
        self._live -= 1
        self._left_lane(item.lane, 1)
        # dropped entries are skipped when taken; compact when they dominate
        if self._stored > 2 * self._live + 64:
            for key in list(self._order):
                lane = self._lanes[key]
                kept = lane.kept()
                self._stored -= len(lane.items) - len(kept.items)
                if kept.items:
                    self._lanes[key] = kept
                else:
                    del self._lanes[key]
                    self._order.remove(key)
        self.wake_room()

    def close(self, error: Callable[[], BaseException]) -> None:
        """After the queued jobs, ``get()`` raises ``error()``."""
        self._closed = error
        self.wake_consumers()

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

    async def wait_lane(self, lane: Hashable, below: int) -> None:
        """Return once fewer than ``below`` deliverable jobs of ``lane`` are queued (at
        once if they are)."""
        if self.waiting(lane) < below:
            return
        fut = asyncio.get_running_loop().create_future()
        self._lane_waiters.setdefault(lane, []).append((below, fut))
        try:
            await fut
        finally:  # woken (and removed already), or cancelled: remove it
            waiters = self._lane_waiters.get(lane)
            if waiters is not None:
                waiters[:] = [waiter for waiter in waiters if waiter[1] is not fut]
                if not waiters:
                    del self._lane_waiters[lane]

    def _left_lane(self, lane: Hashable, count: int) -> None:
        """``count`` jobs of ``lane`` were taken or dropped: wake its pollers that may
        poll now."""
        live = self._lane_live[lane] - count
        if live:
            self._lane_live[lane] = live
        else:
            del self._lane_live[lane]
        waiters = self._lane_waiters.get(lane)
        if waiters is None:
            return
        waiting = [(below, fut) for below, fut in waiters if live >= below and not fut.done()]
        for below, fut in waiters:
            if live < below and not fut.done():
                fut.set_result(None)
        if waiting:
            self._lane_waiters[lane] = waiting
        else:
            del self._lane_waiters[lane]

    # consumers

    def take(self, most: int = 1, allowed: Callable[[_Item], bool] | None = None) -> list[_Item]:
        """Up to ``most`` deliverable items of the lane whose turn it is (none: ``[]``);
        with ``allowed``, of the first lane in turn whose next item it allows (lanes it
        refuses keep their place)."""
        if allowed is not None:
            return self._take_allowed(most, allowed)
        order, lanes = self._order, self._lanes
        while order:
            key = order[0]
            lane = lanes[key]
            items, runs = lane.items, lane.runs
            out: list[_Item] = []
            run = -1
            while items and len(out) < most:
                job = items.popleft()
                run = runs.popleft()
                self._stored -= 1
                if job.deliverable:
                    out.append(job)
            if not items:
                del lanes[key]
                order.popleft()
            elif out and (most > 1 or run < 0 or runs[0] != run):
                order.rotate(-1)  # the next lane's turn
            if out:
                self._live -= len(out)
                self._left_lane(key, len(out))
                self.wake_room()
                return out
        return []

    def _take_allowed(self, most: int, allowed: Callable[[_Item], bool]) -> list[_Item]:
        order, lanes = self._order, self._lanes
        index = 0
        while index < len(order):
            key = order[index]
            lane = lanes[key]
            items, runs = lane.items, lane.runs
            while items and not items[0].deliverable:  # dropped in place: skip them now
                items.popleft()
                runs.popleft()
                self._stored -= 1
            if not items:
                del lanes[key]
                del order[index]
                continue
            if not allowed(items[0]):
                index += 1
                continue
            out: list[_Item] = []
            while items and len(out) < most:
                job = items.popleft()
                runs.popleft()
                self._stored -= 1
                if job.deliverable:
                    out.append(job)
            del order[index]
            if items:
                order.append(key)  # its turn is over
            else:
                del lanes[key]
            if out:
                self._live -= len(out)
                self._left_lane(key, len(out))
                self.wake_room()
                return out
        return []

    def wake_consumers(self) -> None:
        """Wake every waiting consumer to look again (what it may take has changed)."""
        while self._getters:
            self._wake_getter()

    async def get(
        self, most: int = 1, allowed: Callable[[_Item], bool] | None = None
    ) -> list[_Item]:
        """Wait until there is an item (one ``allowed`` allows, if given), then take up to
        ``most`` of one lane."""
        while True:
            out = self.take(most, allowed)
            if out:
                self._wake_enough()  # more left than the others woken will take
                return out
            if self._closed is not None:
                raise self._closed()
            fut = asyncio.get_running_loop().create_future()
            waiter = (fut, most)
            self._getters.append(waiter)
            try:
                await fut
            except asyncio.CancelledError:
                if fut.done() and not fut.cancelled():  # woken: pass it on
                    self._woken -= most
                    self._wake_enough()
                else:
                    _remove(self._getters, waiter)
                raise
            self._woken -= most

    def _wake_enough(self) -> None:
        """Wake waiting consumers, longest-waiting first, until those woken will take
        every deliverable item: one per job for consumers of single jobs, one for a
        poll's worth when a consumer takes batches that large (waking each consumer
        once per job put sent most of them back to wait with nothing)."""
        while self._live > self._woken and self._getters:
            self._wake_getter()

    def _wake_getter(self) -> None:
        while self._getters:
            fut, most = self._getters.popleft()
            if not fut.done():
                fut.set_result(None)
                self._woken += most
                return


class _Lane(Generic[_Item]):
    """One cluster's queued items, first in first out, and beside each the run (poll)
    that put it (-1 for one put back by ``put_owned``). Two deques in step rather than a
    tuple per item: a poll's jobs share one run number, and a tuple per job was one more
    object per job for the garbage collector."""

    __slots__ = ("items", "runs")

    def __init__(self) -> None:
        self.items: deque[_Item] = deque()
        self.runs: deque[int] = deque()

    def kept(self) -> _Lane[_Item]:
        """A lane of the items still deliverable, in order, with their runs."""
        lane: _Lane[_Item] = _Lane()
        for item, run in zip(self.items, self.runs, strict=True):
            if item.deliverable:
                lane.items.append(item)
                lane.runs.append(run)
        return lane


_Waiter = TypeVar("_Waiter")


def _remove(waiters: deque[_Waiter], waiter: _Waiter) -> None:
    with contextlib.suppress(ValueError):
        waiters.remove(waiter)
