"""PollerGroup: many clusters into one queue, batching, add/remove, the handler loop."""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import pytest

from rainbow_aio import PolledJob, PollerStoppedError, RainbowClient, RainbowServer

from .conftest import FAST, MakeCluster, submit, wait_until, waiting


async def test_100_clusters_of_20_jobs_are_each_accepted_once_in_batches(
    rainbow_client: RainbowClient, rainbow_server: RainbowServer, make_cluster: MakeCluster
) -> None:
    clusters = [await make_cluster(jobs=20) for _ in range(100)]
    expected = {(c.name, i) for c in clusters for i in c.ids}
    ran: Counter[tuple[str, int]] = Counter()
    accepts_before = rainbow_server.call_counts.get("AcceptJobs", 0)

    async with rainbow_client.poll_many(
        {c.name: c.secret for c in clusters}, max_jobs=20, queue_size=200, **FAST
    ) as group:

        async def handler(job: PolledJob) -> None:
            assert job.accepted
            ran[(job.cluster, job.id)] += 1
            if len(ran) == len(expected):
                await group.stop()

        async with asyncio.timeout(30):
            await group.run(handler, concurrency=50, accept="before")
        stats = group.stats
    assert set(ran) == expected
    assert set(ran.values()) == {1}
    assert all(s.accepted == 20 for s in stats.values())
    accept_calls = rainbow_server.call_counts["AcceptJobs"] - accepts_before
    assert accept_calls == sum(s.accept_calls for s in stats.values())
    assert accept_calls < len(expected)  # batched: fewer AcceptJobs than jobs
    for c in clusters[::10]:
        assert await waiting(rainbow_client, c) == set()


async def test_clusters_can_be_added_and_removed_while_running(
    rainbow_client: RainbowClient, make_cluster: MakeCluster
) -> None:
    a = await make_cluster(jobs=5)
    b = await make_cluster(jobs=5)
    async with rainbow_client.poll_many({a.name: a.secret}, queue_size=50, **FAST) as group:
        await wait_until(lambda: group.qsize() == 5, what="a's jobs queued")
        group.add(b.name, b.secret)
        assert group.clusters == [a.name, b.name]
        await wait_until(lambda: group.qsize() == 10, what="b's jobs queued")
        # removing a gives its queued jobs back: they stay on the server
        await group.remove(a.name)
        assert group.qsize() == 5
        assert a.name not in group.stats
        jobs = [await group.get() for _ in range(5)]
        assert {j.cluster for j in jobs} == {b.name}
        assert sorted(j.id for j in jobs) == b.ids
        assert all(await asyncio.gather(*(j.accept() for j in jobs)))
        with pytest.raises(ValueError, match="does not poll"):
            await group.remove(a.name)
        with pytest.raises(ValueError, match="already polls"):
            group.add(b.name, b.secret)
    assert await waiting(rainbow_client, a) == set(a.ids)
    assert await waiting(rainbow_client, b) == set()


async def test_run_accept_after_releases_jobs_whose_handler_failed(
    rainbow_client: RainbowClient, make_cluster: MakeCluster
) -> None:
    c = await make_cluster(jobs=6)
    attempts: Counter[int] = Counter()
    done: set[int] = set()
    async with rainbow_client.poll_many({c.name: c.secret}, **FAST) as group:

        async def handler(job: PolledJob) -> None:
            assert not job.accepted
            attempts[job.id] += 1
            if attempts[job.id] == 1 and job.id % 2:
                raise RuntimeError("first run of an odd job fails")
            done.add(job.id)

        async def stop_when_done() -> None:
            await wait_until(lambda: done == set(c.ids), what="every job run")
            await wait_until(lambda: group.stats[c.name].accepted == 6, what="6 accepts")
            await group.stop()

        async with asyncio.timeout(20), asyncio.TaskGroup() as tg:
            tg.create_task(stop_when_done())
            await group.run(handler, concurrency=3, accept="after")
    assert {i for i, n in attempts.items() if n == 2} == {i for i in c.ids if i % 2}
    assert await waiting(rainbow_client, c) == set()


async def test_run_manual_releases_what_the_handler_left(
    rainbow_client: RainbowClient, make_cluster: MakeCluster
) -> None:
    c = await make_cluster(jobs=4)
    seen: Counter[int] = Counter()
    async with rainbow_client.poll_many({c.name: c.secret}, **FAST) as group:

        async def handler(job: PolledJob) -> None:
            seen[job.id] += 1
            if seen[job.id] == 2:  # leave it the first time, accept it the second
                assert await job.accept()
            if len(seen) == 4 and all(n == 2 for n in seen.values()):
                await group.stop()

        async with asyncio.timeout(20):
            await group.run(handler, concurrency=2, accept="manual")
    assert set(seen) == set(c.ids)
    assert await waiting(rainbow_client, c) == set()


async def test_stopped_group_refuses_get_and_add(
    rainbow_client: RainbowClient, make_cluster: MakeCluster
) -> None:
    c = await make_cluster()
    async with rainbow_client.poll_many({c.name: c.secret}, **FAST) as group:
        await group.stop()
        with pytest.raises(PollerStoppedError):
            await group.get()
        assert [j async for j in group] == []
        with pytest.raises(PollerStoppedError):
            group.add("other", "secret")


async def test_merged_queue_is_bounded_across_clusters(
    rainbow_client: RainbowClient, make_cluster: MakeCluster
) -> None:
    clusters = [await make_cluster(jobs=10) for _ in range(5)]
    async with rainbow_client.poll_many(
        {c.name: c.secret for c in clusters}, max_jobs=4, queue_size=12, **FAST
    ) as group:
        await wait_until(lambda: group.qsize() == 12, what="a full merged queue")
        got: list[PolledJob] = []
        while len(got) < 50:
            assert group.qsize() <= 12
            job = await group.get()
            assert await job.accept()
            got.append(job)
    assert sorted((j.cluster, j.id) for j in got) == sorted(
        (c.name, i) for c in clusters for i in c.ids
    )


async def test_submitted_later_jobs_are_picked_up(
    rainbow_client: RainbowClient, make_cluster: MakeCluster
) -> None:
    c = await make_cluster()
    async with rainbow_client.poll_many({c.name: c.secret}, **FAST) as group:
        await wait_until(lambda: group.stats[c.name].empty_polls >= 3, what="idle polls")
        ids = await submit(rainbow_client, c, 3)
        jobs = [await group.get() for _ in range(3)]
        assert sorted(j.id for j in jobs) == ids
        for job in jobs:
            job.release()


async def test_single_takes_give_a_polls_worth_of_one_cluster_before_the_next(
    rainbow_client: RainbowClient, make_cluster: MakeCluster
) -> None:
    # max_jobs=4: a lane keeps its turn for 4 single takes, so jobs taken one by one come
    # in runs of one cluster (their accepts can share a call), and no cluster waits
    # behind more than one run of another's. Each cluster polls again once fewer than 4
    # of its jobs wait, so the queue holds a listing's worth of each between rounds.
    a = await make_cluster(jobs=12)
    b = await make_cluster(jobs=12)
    async with rainbow_client.poll_many(
        {a.name: a.secret, b.name: b.secret}, max_jobs=4, queue_size=24, **FAST
    ) as group:
        for _ in range(3):
            await wait_until(lambda: group.qsize() == 8, what="both clusters' jobs queued")
            # taken with no pause between them: no poll lands in the middle of a round
            jobs = [await group.get() for _ in range(8)]
            order = [j.cluster for j in jobs]
            runs = [order[i : i + 4] for i in range(0, 8, 4)]
            assert all(len(set(run)) == 1 for run in runs), order
            assert runs[0][0] != runs[1][0], order
            assert all(await asyncio.gather(*(j.accept() for j in jobs)))
    assert await waiting(rainbow_client, a) == set()
    assert await waiting(rainbow_client, b) == set()


async def test_single_takes_give_all_of_one_polls_jobs_together(
    rainbow_client: RainbowClient, make_cluster: MakeCluster
) -> None:
    # a poll may bring more new jobs than the queue's refill (here 5: half the queue);
    # consumers taking one job at a time still get all six of a's poll before b's
    a = await make_cluster(jobs=6)
    b = await make_cluster(jobs=4)
    async with rainbow_client.poll_many(
        {a.name: a.secret}, max_jobs=6, queue_size=10, **FAST
    ) as group:
        await wait_until(lambda: group.qsize() == 6, what="a's poll queued")
        group.add(b.name, b.secret)
        await wait_until(lambda: group.qsize() == 10, what="b's poll queued")
        jobs = [await group.get() for _ in range(10)]
        assert [j.cluster for j in jobs] == [a.name] * 6 + [b.name] * 4
        assert all(await asyncio.gather(*(j.accept() for j in jobs)))


async def test_a_small_group_polls_at_once_when_entered(
    rainbow_client: RainbowClient, make_cluster: MakeCluster
) -> None:
    """The first polls of a small group are not spread: with min_interval 30 s a spread
    would hold them for up to 30 s; the jobs come at once, as from a single poller."""
    clusters = [await make_cluster(jobs=3) for _ in range(3)]
    async with rainbow_client.poll_many(
        {c.name: c.secret for c in clusters}, min_interval=30, max_interval=30
    ) as group:
        async with asyncio.timeout(10):
            taken = {(await group.get()).cluster for _ in range(9)}
    assert taken == {c.name for c in clusters}


async def test_the_first_max_concurrent_polls_clusters_poll_at_once_and_the_rest_wait(
    rainbow_client: RainbowClient, make_cluster: MakeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When a group is entered, its first ``max_concurrent_polls`` clusters poll at once,
    waiting neither for a spread nor for the idle budget (here one poll a minute); the
    first polls of the others are spread (here: all of min_interval, 60 s)."""
    clusters = [await make_cluster(jobs=2) for _ in range(12)]
    group = rainbow_client.poll_many(
        {c.name: c.secret for c in clusters},
        max_concurrent_polls=8,
        idle_polls_per_second=1 / 60,
        min_interval=60,
        max_interval=60,
    )
    with monkeypatch.context() as patch:
        patch.setattr(random, "random", lambda: 1.0)  # a spread first poll waits it all out
        await group.__aenter__()
    try:
        async with asyncio.timeout(10):
            taken = [await group.get() for _ in range(16)]
        assert {j.cluster for j in taken} == {c.name for c in clusters[:8]}
        assert all(await asyncio.gather(*(j.accept() for j in taken)))
        assert [group.stats[c.name].polls for c in clusters[8:]] == [0] * 4
    finally:
        await group.__aexit__(None, None, None)
