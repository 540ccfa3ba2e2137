"""No duplicates and no loss: repeated listings, a large backlog, the queue bound."""

from __future__ import annotations

import asyncio

import anyio

from rainbow_aio import PolledJob, RainbowClient, RainbowServer

from .conftest import FAST, MakeCluster, wait_until, waiting


async def test_repeated_listings_hand_each_job_out_once(
    rainbow_client: RainbowClient, make_cluster: MakeCluster
) -> None:
    cluster = await make_cluster(jobs=30)
    async with rainbow_client.poller(
        cluster.name, cluster.secret, max_jobs=10, queue_size=100, **FAST
    ) as poller:
        held = [await poller.get() for _ in range(30)]
        assert sorted(j.id for j in held) == sorted(cluster.ids)
        # every further listing returns the same 30 jobs; none is handed out again
        polls = poller.stats.polls
        await wait_until(lambda: poller.stats.polls >= polls + 20, what="20 more polls")
        assert poller.qsize() == 0
        stats = poller.stats
        assert stats.handed_out == 30
        assert stats.jobs_listed >= 30 + 20 * 30
        assert all(await asyncio.gather(*(j.accept() for j in held)))
    assert await waiting(rainbow_client, cluster) == set()


async def test_a_slow_consumer_keeps_a_listings_worth_queued_not_the_whole_queue(
    rainbow_client: RainbowClient, make_cluster: MakeCluster
) -> None:
    """Every poll lists the cluster's queued jobs again (RequestJobs cannot skip ids), so
    a cluster polls only while fewer than max_jobs of its jobs wait. With a queue twenty
    times a listing and a consumer slower than the polls, the queue holds less than two
    listings' worth, and the rows the server reads stay near two per job handed out
    (filling the queue instead would list every queued job again for each new one)."""
    cluster = await make_cluster(jobs=200)
    max_jobs = 5
    most_queued = 0
    owned: list[int] = []
    async with rainbow_client.poller(
        cluster.name, cluster.secret, max_jobs=max_jobs, queue_size=100, **FAST
    ) as poller:
        while len(owned) < 200:
            job = await poller.get()
            most_queued = max(most_queued, poller.qsize())
            assert await job.accept()
            owned.append(job.id)
            await asyncio.sleep(0.002)  # the consumer's work: slower than a poll
        stats = poller.stats
    assert most_queued < 2 * max_jobs
    assert stats.jobs_listed <= 3 * stats.handed_out, stats
    assert sorted(owned) == sorted(cluster.ids)
    assert await waiting(rainbow_client, cluster) == set()


async def test_backlog_of_1000_is_fully_handed_out_with_max_jobs_10(
    rainbow_client: RainbowClient, make_cluster: MakeCluster
) -> None:
    cluster = await make_cluster(jobs=1000)
    owned: list[int] = []
    async with rainbow_client.poller(
        cluster.name, cluster.secret, max_jobs=10, queue_size=10, **FAST
    ) as poller:

        async def consume() -> None:
            while len(owned) < 1000:
                job = await poller.get()
                if await job.accept():
                    owned.append(job.id)

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for _ in range(20):
                    tg.start_soon(consume)
                await wait_until(lambda: len(owned) == 1000, within=30, what="1000 accepts")
                tg.cancel_scope.cancel()
        assert poller.stats.handed_out >= 1000
    assert sorted(owned) == sorted(cluster.ids)
    assert await waiting(rainbow_client, cluster) == set()


async def test_the_queue_never_holds_more_than_its_size(
    rainbow_client: RainbowClient, rainbow_server: RainbowServer, make_cluster: MakeCluster
) -> None:
    cluster = await make_cluster(jobs=120)
    size = 7
    seen: list[int] = []
    async with rainbow_client.poller(
        cluster.name, cluster.secret, max_jobs=5, queue_size=size, **FAST
    ) as poller:
        # a listing's worth (max_jobs) of the cluster's jobs waiting stops polling
        await wait_until(lambda: poller.qsize() == 5, what="a listing's worth queued")
        first = await poller.get()  # four wait: the next poll fills the queue's last 3 slots
        await wait_until(lambda: poller.qsize() == size, what="a full queue")
        # a full queue stops polling: nothing more is listed while nobody consumes
        polls = poller.stats.polls
        await asyncio.sleep(0.2)  # a quiet period, not a correctness wait
        assert poller.stats.polls == polls
        assert poller.qsize() == size

        async def watch() -> None:
            while True:
                seen.append(poller.qsize())
                await asyncio.sleep(0.001)

        owned: list[PolledJob] = [first] if await first.accept() else []
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch)
            while len(owned) < 120:
                job = await poller.get()
                seen.append(poller.qsize())
                if await job.accept():
                    owned.append(job)
            tg.cancel_scope.cancel()
    assert max(seen) <= size
    assert sorted(j.id for j in owned) == sorted(cluster.ids)
