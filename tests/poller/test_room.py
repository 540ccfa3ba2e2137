"""A poll that finds new jobs when the shared queue has no room left, and the listing
that parses only new jobs."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable, Container

import pytest

from rainbow_aio import (
    DeniedError,
    PolledJob,
    PollerOptions,
    RainbowClient,
    RainbowServer,
    _accepters,
)
from rainbow_aio._models import JobListing
from rainbow_aio.poller._ledger import AcceptLedger, Entry, live_ledger
from rainbow_aio.poller._queue import JobQueue

from .conftest import FAST, MakeCluster, waiting


class OrderedListings(RainbowClient):
    """A real client whose first two listings are put in order.

    The first listing of ``late`` is sent, then the first listing of ``early`` may go
    out; ``late``'s answer is handed to its poller only once ``release_late`` is set.
    So ``late``'s poll finds new jobs after ``early``'s jobs have filled the queue.
    """

    def __init__(self, host: str, early: str, late: str) -> None:
        super().__init__(host)
        self.early, self.late = early, late
        self.late_sent = asyncio.Event()
        self.release_late = asyncio.Event()
        self.gated: set[str] = set()

    async def request_listing(
        self,
        cluster: str,
        secret: str,
        max_jobs: int | None = None,
        *,
        skip: Container[int] = (),
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> JobListing:
        first = cluster not in self.gated
        self.gated.add(cluster)
        if first and cluster == self.early:
            await self.late_sent.wait()
        if not (first and cluster == self.late):
            return await super().request_listing(
                cluster, secret, max_jobs, skip=skip, timeout=timeout
            )
        self.late_sent.set()
        listing = await super().request_listing(
            cluster, secret, max_jobs, skip=skip, timeout=timeout
        )
        await self.release_late.wait()
        return listing


async def test_poll_finding_jobs_without_room_is_not_empty_and_polls_again_when_room_appears(
    rainbow_server: RainbowServer,
    rainbow_client: RainbowClient,
    make_cluster: MakeCluster,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    early = await make_cluster(jobs=2)
    late = await make_cluster(jobs=3)
    client = OrderedListings(rainbow_server.address, early.name, late.name)
    # a long interval: a poller that backed off would not poll again within the test
    group = client.poll_many(
        {early.name: early.secret, late.name: late.secret},
        queue_size=2,
        max_jobs=10,
        min_interval=60,
        max_interval=60,
    )
    got: list[PolledJob] = []
    async with client, contextlib.AsyncExitStack() as stack:
        with monkeypatch.context() as patch:
            patch.setattr(random, "random", lambda: 0.0)  # first polls at once
            await stack.enter_async_context(group)
        async with asyncio.timeout(20):
            while group.qsize() < 2:  # noqa: ASYNC110 - no event announces a full queue
                await asyncio.sleep(0.002)
            client.release_late.set()
            while group.stats[late.name].polls < 1:  # noqa: ASYNC110
                await asyncio.sleep(0.002)
        stats = group.stats[late.name]
        # it found new jobs (as many as there was room when it asked) and none fitted:
        # not an empty poll, and nothing handed out
        assert (stats.polls, stats.empty_polls, stats.jobs_listed) == (1, 0, 2)
        assert group.qsize() == 2
        # the two queued are early's; none of late's was tracked
        early_ledger = live_ledger(client, early.name)
        assert early_ledger is not None
        assert {e.job.id for e in early_ledger.entries.values()} == set(early.ids)
        late_ledger = live_ledger(client, late.name)
        assert late_ledger is not None
        assert not late_ledger.entries

        # each job taken makes room, and the late cluster's poller polls again at once
        # (a backoff would wait 30 to 60 s, beyond this timeout)
        async with asyncio.timeout(20):
            while len(got) < 5:
                got.append(await group.get())
        stats = group.stats[late.name]
        assert stats.handed_out == 3
        assert stats.polls >= 2
        assert stats.empty_polls <= 1  # the poll that found it drained, if it came
        for job in got:
            assert await job.accept()
    assert sorted((j.cluster, j.id) for j in got) == sorted(
        [(early.name, i) for i in early.ids] + [(late.name, i) for i in late.ids]
    )
    assert await waiting(rainbow_client, early) == set()
    assert await waiting(rainbow_client, late) == set()


async def test_request_listing_parses_only_ids_not_skipped_and_fails_like_request_jobs(
    rainbow_client: RainbowClient, make_cluster: MakeCluster
) -> None:
    cluster = await make_cluster(jobs=5)
    everything = await rainbow_client.request_jobs(cluster.name, cluster.secret)
    ids = tuple(job.id for job in everything)
    known = {ids[0], ids[3]}
    listing = await rainbow_client.request_listing(cluster.name, cluster.secret, 4, skip=known)
    assert listing.ids == ids[:4]
    assert listing.jobs == [job for job in everything[:4] if job.id not in known]
    listing = await rainbow_client.request_listing(cluster.name, cluster.secret)
    assert (listing.jobs, listing.ids) == (everything, ids)

    with pytest.raises(DeniedError) as listing_error:
        await rainbow_client.request_listing(cluster.name, "wrong", skip=known)
    with pytest.raises(DeniedError) as request_error:
        await rainbow_client.request_jobs(cluster.name, "wrong")
    assert str(listing_error.value) == str(request_error.value)


async def test_a_listing_parses_only_the_new_jobs_its_queue_has_room_for(
    rainbow_client: RainbowClient, make_cluster: MakeCluster
) -> None:
    cluster = await make_cluster(jobs=6)
    ids = tuple(sorted(cluster.ids))
    ledger = AcceptLedger(rainbow_client, cluster.name)
    try:
        queue: JobQueue[Entry] = JobQueue(4)
        skip = ledger.hidden(ledger.begin_listing(), queue)
        listing = await rainbow_client.request_listing(cluster.name, cluster.secret, skip=skip)
        # every id is listed, but only as many new jobs as there is room for are parsed
        assert listing.ids == ids
        assert [job.id for job in listing.jobs] == list(ids[:4])

        full: JobQueue[Entry] = JobQueue(1)
        holder = ledger.attach(cluster.secret, full, PollerOptions())
        ledger.track(holder, listing.jobs[:1], ledger.seq)  # the queue is full now
        assert full.room == 0
        skip = ledger.hidden(ledger.begin_listing(), full)
        listing = await rainbow_client.request_listing(cluster.name, cluster.secret, skip=skip)
        # one new job even without room: the poll found jobs, and is not an empty one
        assert [job.id for job in listing.jobs] == [ids[1]]
    finally:
        _accepters.leave(cluster.name, ledger)


async def test_a_full_shared_queue_refills_in_polls_of_max_jobs(
    rainbow_client: RainbowClient, make_cluster: MakeCluster
) -> None:
    clusters = [await make_cluster(jobs=40) for _ in range(8)]
    total = sum(len(c.ids) for c in clusters)
    got: list[PolledJob] = []
    async with rainbow_client.poll_many(
        {c.name: c.secret for c in clusters}, queue_size=20, max_jobs=10, **FAST
    ) as group:
        async with asyncio.timeout(30):
            while len(got) < total:
                job = await group.get()
                got.append(job)
                assert await job.accept()
        stats = group.stats.values()
    assert sorted((j.cluster, j.id) for j in got) == sorted(
        (c.name, i) for c in clusters for i in c.ids
    )
    # a poll re-lists the cluster's in-flight jobs, so one per freed slot would be
    # wasteful: polls in flight count against the room, and a full queue waits for
    # max_jobs free slots, so polls that found jobs bring several each (about 10)
    finding = sum(s.polls - s.empty_polls for s in stats)
    assert finding <= total / 4


async def test_a_listing_skips_the_same_ids_asked_one_by_one_or_all_at_once(
    rainbow_client: RainbowClient, make_cluster: MakeCluster
) -> None:
    cluster = await make_cluster(jobs=12)
    everything = await rainbow_client.request_jobs(cluster.name, cluster.secret)
    ids = tuple(job.id for job in everything)
    ledger = AcceptLedger(rainbow_client, cluster.name)
    try:
        queue: JobQueue[Entry] = JobQueue(6)
        opts = PollerOptions(redelivery_delay=60.0, max_redelivery_delay=60.0)
        holder = ledger.attach(cluster.secret, queue, opts)
        ledger.track(holder, [everything[0], everything[4]], ledger.seq)  # in flight
        running = ledger.begin_listing()
        ledger.listings.settled(ids[2])  # a tombstone, hiding it from `running`
        ledger.records.failed(ids[6], opts)  # hidden for a minute
        ledger.records.declined.add(ids[8])  # hidden while listed
        for start in (running, ledger.begin_listing()):  # the tombstone hides from the first
            picked = ledger.hidden(start, queue).pick(ids)
            asked = ledger.hidden(start, queue)
            assert picked == [job_id for job_id in ids if job_id not in asked]
            shown = [i for i in ids if i not in (ids[0], ids[4], ids[6], ids[8])]
            if start == running:
                shown.remove(ids[2])
            assert picked == shown[: queue.room]  # as many new ones as there is room for
    finally:
        _accepters.leave(cluster.name, ledger)


class _Item:
    """A queue item of a lane, deliverable until dropped."""

    def __init__(self, lane: str) -> None:
        self.lane = lane
        self.deliverable = True


async def test_a_lane_counts_its_waiting_jobs_and_wakes_its_pollers_below_a_count() -> None:
    queue: JobQueue[_Item] = JobQueue(100)
    a = [_Item("a") for _ in range(5)]
    queue.put_all(a)
    queue.put_all([_Item("b") for _ in range(3)])
    assert (queue.waiting("a"), queue.waiting("b"), queue.waiting("c")) == (5, 3, 0)
    await asyncio.wait_for(queue.wait_lane("a", 6), 1)  # below already: at once
    below_4 = asyncio.create_task(queue.wait_lane("a", 4))
    below_3 = asyncio.create_task(queue.wait_lane("a", 3))
    cancelled = asyncio.create_task(queue.wait_lane("a", 4))
    await asyncio.sleep(0)
    cancelled.cancel()
    assert queue.take(2) == a[:2]  # a's turn first: 3 left
    await asyncio.sleep(0)
    assert below_4.done()
    assert not below_3.done()
    a[2].deliverable = False  # dropped in place: 2 left
    queue.discard(a[2])
    await asyncio.sleep(0)
    assert below_3.done()
    assert queue.waiting("a") == 2
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert queue.waiting("b") == 3
    assert len(queue.take(10)) == 3  # b's turn
    assert queue.take(10) == a[3:]
    assert (queue.waiting("a"), queue.waiting("b")) == (0, 0)


def test_dropping_most_queued_jobs_keeps_their_order_and_each_polls_turn() -> None:
    """Jobs dropped in place are skipped, and once they outnumber the live ones the lanes
    are rebuilt without them: the jobs left come out in order, and a consumer of single
    jobs still keeps a lane's turn exactly while the next job is of the same poll."""
    queue: JobQueue[_Item] = JobQueue(1000)
    queue.begin_run()
    first = [_Item("a") for _ in range(100)]
    queue.put_all(first)
    queue.begin_run()
    second = [_Item("a") for _ in range(100)]
    queue.put_all(second)
    queue.begin_run()
    other = [_Item("b") for _ in range(5)]
    queue.put_all(other)
    dropped = [item for n, item in enumerate(first + second) if n % 10]  # 180 of 200
    for item in dropped:
        item.deliverable = False
        queue.discard(item)
    assert len(queue) == 25
    taken = [queue.take(1)[0] for _ in range(25)]
    assert queue.take(1) == []
    # a's first poll, then b's (a's next job is of another poll), then a's second poll
    assert taken == first[::10] + other + second[::10]


class _CountingQueue(JobQueue[_Item]):
    """A queue that counts its consumers' looks (a look that finds nothing is a wasted
    wake-up)."""

    looks = 0

    def take(self, most: int = 1, allowed: Callable[[_Item], bool] | None = None) -> list[_Item]:
        self.looks += 1
        return super().take(most, allowed)


async def _put_before_waiting_consumers(
    queue: _CountingQueue, consumers: int, most: int, jobs: int
) -> list[list[_Item] | None]:
    """``consumers`` consumers wait for up to ``most`` items each; ``jobs`` items of one
    lane are put at once, the loop turns a few times: what each consumer got (None:
    still waiting, then cancelled). ``queue.looks`` counts the looks after the put."""
    waiting = [asyncio.create_task(queue.get(most)) for _ in range(consumers)]
    await asyncio.sleep(0)
    queue.looks = 0
    queue.put_all([_Item("a") for _ in range(jobs)])
    for _ in range(3):
        await asyncio.sleep(0)
    got = [task.result() if task.done() else None for task in waiting]
    for task in waiting:
        task.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)
    return got


async def test_a_poll_wakes_as_many_waiting_consumers_as_its_jobs_can_serve() -> None:
    """A hundred jobs put at once go to one consumer asking for a hundred: the nine others
    waiting are not woken to find nothing (they were, one per job, before). Consumers of
    single jobs are still woken one per job."""
    queue = _CountingQueue(1000)
    got = await _put_before_waiting_consumers(queue, consumers=10, most=100, jobs=100)
    assert [len(items) for items in got if items is not None] == [100]
    assert queue.looks == 1

    got = await _put_before_waiting_consumers(queue, consumers=5, most=1, jobs=3)
    assert [len(items) for items in got if items is not None] == [1, 1, 1]
    assert queue.looks == 3
    assert len(queue) == 0
