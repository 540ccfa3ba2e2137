"""Two pollers of one cluster in one process share one ledger and never hand out a job
twice."""

from __future__ import annotations

import anyio

from rainbow_aio import Poller, RainbowClient
from rainbow_aio.poller._ledger import live_ledger

from .conftest import FAST, MakeCluster, wait_until, waiting


async def test_two_pollers_of_one_cluster_never_hand_out_the_same_job(
    rainbow_client: RainbowClient, make_cluster: MakeCluster
) -> None:
    cluster = await make_cluster(jobs=200)
    owned: dict[str, list[int]] = {"a": [], "b": []}
    lost = 0
    opts = {"max_jobs": 20, "queue_size": 20, **FAST}
    async with (
        rainbow_client.poller(cluster.name, cluster.secret, **opts) as pa,
        rainbow_client.poller(cluster.name, cluster.secret, **opts) as pb,
    ):
        # both see the same 200 waiting jobs; together they hold 40 distinct ones
        await wait_until(lambda: pa.qsize() + pb.qsize() == 40, what="both queues full")
        held = [await pa.get() for _ in range(20)] + [await pb.get() for _ in range(20)]
        assert len({j.id for j in held}) == 40
        for job in held:
            job.release()
        del held, job

        async def consume(name: str, poller: Poller) -> None:
            nonlocal lost
            while sum(map(len, owned.values())) < 200:
                job = await poller.get()
                if await job.accept():
                    owned[name].append(job.id)
                else:
                    lost += 1

        async with anyio.create_task_group() as tg:
            for _ in range(4):
                tg.start_soon(consume, "a", pa)
                tg.start_soon(consume, "b", pb)
            await wait_until(lambda: sum(map(len, owned.values())) == 200, what="200 accepts")
            tg.cancel_scope.cancel()
        assert pa.stats.accepted + pb.stats.accepted == 200
        assert pa.stats.lost_to_others == pb.stats.lost_to_others == 0
    assert lost == 0
    assert not set(owned["a"]) & set(owned["b"])
    assert sorted(owned["a"] + owned["b"]) == sorted(cluster.ids)
    assert owned["a"]
    assert owned["b"]
    assert await waiting(rainbow_client, cluster) == set()
    # the shared ledger went away with its last poller
    assert live_ledger(rainbow_client, cluster.name) is None
