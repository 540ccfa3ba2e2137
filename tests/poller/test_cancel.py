"""Cancelling a consumer inside accept() never loses a job."""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import anyio
from support.proxy import TcpProxy

from rainbow_aio import RainbowClient, RainbowServer
from rainbow_aio.poller import JobState
from rainbow_aio.poller._ledger import live_ledger

from .conftest import FAST, MakeCluster, wait_until, waiting


async def test_cancelled_before_the_batch_is_sent_the_job_is_released(
    rainbow_client: RainbowClient, rainbow_server: RainbowServer, make_cluster: MakeCluster
) -> None:
    cluster = await make_cluster(jobs=1)
    calls = rainbow_server.call_counts.get("AcceptJobs", 0)
    async with rainbow_client.poller(
        cluster.name, cluster.secret, accept_window=60, **FAST
    ) as poller:
        job = await poller.get()
        accepting = asyncio.create_task(job.accept())
        await wait_until(lambda: job.state is JobState.ACCEPTING, what="the accept queued")
        accepting.cancel()
        await asyncio.gather(accepting, return_exceptions=True)
        assert job.state is JobState.RELEASED
        # withdrawn before it was sent: handed out again by a later poll
        again = await poller.get()
        assert again.id == job.id
        accepting = asyncio.create_task(again.accept())
        await wait_until(lambda: again.state is JobState.ACCEPTING, what="the accept queued")
        await poller.stop()  # sends the pending batch now
        assert await accepting
    assert rainbow_server.call_counts["AcceptJobs"] - calls == 1
    assert await waiting(rainbow_client, cluster) == set()


async def test_cancelled_while_the_accept_is_on_the_wire_the_job_comes_back_owned(
    rainbow_client: RainbowClient, rainbow_server: RainbowServer, make_cluster: MakeCluster
) -> None:
    cluster = await make_cluster(jobs=1)
    async with TcpProxy("127.0.0.1", rainbow_server.port) as proxy:
        client = RainbowClient(proxy.address)
        # after the first two polls the poller stays idle for at least 15 s
        async with (
            client,
            client.poller(cluster.name, cluster.secret, min_interval=30, max_interval=30) as poller,
        ):
            job = await poller.get()
            await wait_until(lambda: poller.stats.polls >= 2, what="the poller idle")
            proxy.stall("down")
            accepting = asyncio.create_task(job.accept())
            await proxy.wait_held("down")  # the server took the job; the answer is held
            accepting.cancel()
            await asyncio.gather(accepting, return_exceptions=True)
            assert job.state is JobState.ACCEPTING
            proxy.resume()
            again = await poller.get()
            assert again is job
            assert again.accepted
            assert await again.accept()
            assert poller.stats.accepted == 1
            assert poller.stats.accept_calls == 1
    assert await waiting(rainbow_client, cluster) == set()


async def test_consumers_cancelled_at_random_points_lose_no_job(
    rainbow_client: RainbowClient, make_cluster: MakeCluster
) -> None:
    cluster = await make_cluster(jobs=60)
    owned: Counter[int] = Counter()
    rng = random.Random(7)
    async with rainbow_client.poller(
        cluster.name, cluster.secret, accept_window=0.002, max_jobs=10, **FAST
    ) as poller:

        async def consume() -> None:
            while True:
                job = await poller.get()
                if job.accepted:  # accepted for a consumer that was cancelled
                    owned[job.id] += 1
                    continue
                accepting = asyncio.create_task(job.accept())
                if rng.random() < 0.6:
                    await asyncio.sleep(rng.random() * 0.004)
                    accepting.cancel()
                try:
                    if await accepting:
                        owned[job.id] += 1
                except asyncio.CancelledError:
                    pass

        async with anyio.create_task_group() as tg:
            for _ in range(4):
                tg.start_soon(consume)
            await wait_until(lambda: len(owned) == 60, within=30, what="every job owned")
            tg.cancel_scope.cancel()
        stats = poller.stats
        ledger = live_ledger(rainbow_client, cluster.name)
        assert ledger is not None
        orphans_left = sum(len(h.orphans or ()) for h in ledger.holders)
    assert set(owned) == set(cluster.ids)
    assert set(owned.values()) == {1}
    assert stats.accepted == 60
    # accepted jobs handed out again are no longer kept once a consumer took them
    assert orphans_left == 0
    assert stats.uncertain == stats.lost_to_others == 0
    assert await waiting(rainbow_client, cluster) == set()
