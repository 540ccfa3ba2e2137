"""Release: a job given back (or dropped) is handed out again, and can then be accepted."""

from __future__ import annotations

import asyncio
import gc

from rainbow_aio import RainbowClient
from rainbow_aio.poller import JobState

from .conftest import FAST, MakeCluster, waiting


async def test_a_released_job_is_handed_out_again(
    rainbow_client: RainbowClient, make_cluster: MakeCluster
) -> None:
    cluster = await make_cluster(jobs=1)
    async with rainbow_client.poller(cluster.name, cluster.secret, **FAST) as poller:
        first = await poller.get()
        first.release()
        assert first.state is JobState.RELEASED
        again = await poller.get()
        assert again.id == first.id
        assert again is not first
        assert await again.accept()
        assert again.accepted
        stats = poller.stats
        assert (stats.handed_out, stats.released, stats.accepted) == (2, 1, 1)
        first.release()  # releasing twice, or after the job moved on, does nothing
        again.release()
        assert await again.accept()  # the answer stays the same
    assert await waiting(rainbow_client, cluster) == set()


async def test_a_job_dropped_without_accept_or_release_is_handed_out_again(
    rainbow_client: RainbowClient, make_cluster: MakeCluster
) -> None:
    cluster = await make_cluster(jobs=2)
    async with rainbow_client.poller(cluster.name, cluster.secret, **FAST) as poller:
        dropped = (await poller.get()).id
        gc.collect()
        ids = {(await poller.get()).id, (await poller.get()).id}
        assert dropped in ids
        assert ids == set(cluster.ids)


async def test_the_last_job_listed_is_released_when_its_consumer_drops_it(
    rainbow_client: RainbowClient, make_cluster: MakeCluster
) -> None:
    cluster = await make_cluster(jobs=1)
    async with rainbow_client.poller(cluster.name, cluster.secret, **FAST) as poller:
        dropped = (await poller.get()).id  # nothing in the poller may keep it alive
        async with asyncio.timeout(10):
            again = await poller.get()
        assert again.id == dropped
        assert await again.accept()
    assert await waiting(rainbow_client, cluster) == set()


async def test_iterating_without_settling_sees_every_job_again(
    rainbow_client: RainbowClient, make_cluster: MakeCluster
) -> None:
    cluster = await make_cluster(jobs=3)
    seen: list[int] = []
    async with rainbow_client.poller(cluster.name, cluster.secret, **FAST) as poller:
        async for job in poller:
            seen.append(job.id)
            if len(seen) > 3:
                break
    # the fourth job handed out is one of the three, given back when the loop moved on
    assert seen[3] in seen[:3]
    assert await waiting(rainbow_client, cluster) == set(cluster.ids)
