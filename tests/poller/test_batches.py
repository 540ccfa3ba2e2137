"""Batches: several jobs of one cluster handed out and accepted together, with every
guarantee of single jobs kept for each job of a batch."""

from __future__ import annotations

import asyncio
import gc
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from support.grpc_faults import FaultInjector

from rainbow_aio import (
    AcceptUncertainError,
    CallOutcome,
    InvalidArgumentError,
    JobBatch,
    PolledJob,
    PollerStoppedError,
    RainbowClient,
    RainbowServer,
    RetryPolicy,
    ServerBusyError,
)
from rainbow_aio.poller import JobState
from rainbow_aio.testing import ServerProcess

from .conftest import FAST, Cluster, MakeCluster, submit, wait_until, waiting

IDLE = {"min_interval": 30.0, "max_interval": 30.0}


@pytest.fixture
async def other(rainbow_server: RainbowServer) -> AsyncIterator[RainbowClient]:
    """A second client: another process's accepter, as far as the poller can tell."""
    async with RainbowClient(rainbow_server.address) as client:
        yield client


async def test_a_batch_holds_up_to_max_size_jobs_and_is_accepted_in_one_call(
    rainbow_client: RainbowClient, rainbow_server: RainbowServer, make_cluster: MakeCluster
) -> None:
    cluster = await make_cluster(jobs=25)
    calls = rainbow_server.call_counts.get("AcceptJobs", 0)
    owned: list[int] = []
    async with rainbow_client.poller(
        cluster.name, cluster.secret, max_jobs=25, queue_size=25, **FAST
    ) as poller:
        await wait_until(lambda: poller.qsize() == 25, what="the backlog queued")
        sizes = []
        async for batch in poller.batches(max_size=10):
            assert isinstance(batch, JobBatch)
            assert batch.cluster == cluster.name
            assert all(job.state is JobState.HELD for job in batch)
            sizes.append(len(batch))
            owned += [job.id for job in await batch.accept()]
            if len(owned) == 25:
                await poller.stop()
        stats = poller.stats
    assert sizes == [10, 10, 5]
    assert sorted(owned) == cluster.ids
    assert rainbow_server.call_counts["AcceptJobs"] - calls == 3  # one per batch
    assert (stats.accepted, stats.accept_calls, stats.handed_out) == (25, 3, 25)
    assert await waiting(rainbow_client, cluster) == set()


async def test_shared_mode_accepts_a_batch_one_id_per_call(
    rainbow_client: RainbowClient, rainbow_server: RainbowServer, make_cluster: MakeCluster
) -> None:
    cluster = await make_cluster(jobs=4)
    calls = rainbow_server.call_counts.get("AcceptJobs", 0)
    async with rainbow_client.poller(
        cluster.name, cluster.secret, accept_mode="shared", **FAST
    ) as poller:
        await wait_until(lambda: poller.qsize() == 4, what="the jobs queued")
        batch = await poller.get_batch(10)
        assert len(await batch.accept()) == 4
    assert rainbow_server.call_counts["AcceptJobs"] - calls == 4


async def test_each_job_of_a_batch_gets_its_own_answer_when_others_take_some(
    rainbow_client: RainbowClient, other: RainbowClient, make_cluster: MakeCluster
) -> None:
    cluster = await make_cluster(jobs=4)
    async with rainbow_client.poller(
        cluster.name, cluster.secret, accept_mode="shared", **FAST
    ) as poller:
        await wait_until(lambda: poller.qsize() == 4, what="the jobs queued")
        batch = await poller.get_batch(10)
        taken = [batch[1].id, batch[3].id]
        await other.accept_jobs(cluster.name, cluster.secret, taken)
        owned = await batch.accept()
        assert [job.id for job in owned] == [batch[0].id, batch[2].id]
        assert [job.id for job in batch.lost] == taken
        assert batch.uncertain == batch.held == []
        assert await batch[1].accept() is False  # asked again, the same answer
    assert await waiting(rainbow_client, cluster) == set()


async def test_in_batched_mode_a_partly_taken_batch_is_uncertain_not_guessed(
    rainbow_client: RainbowClient, other: RainbowClient, make_cluster: MakeCluster
) -> None:
    cluster = await make_cluster(jobs=6)
    async with rainbow_client.poller(cluster.name, cluster.secret, **FAST) as poller:
        await wait_until(lambda: poller.qsize() == 6, what="the jobs queued")
        batch = await poller.get_batch(3)
        await other.accept_jobs(cluster.name, cluster.secret, [batch[1].id])
        assert await batch.accept() == []
        assert len(batch.uncertain) == 3
        with pytest.raises(AcceptUncertainError):
            await batch[0].accept()
        # another accepter exists: from now on one id per call, so answers are exact again
        rest = await poller.get_batch(3)
        assert len(await rest.accept()) == 3
    assert await waiting(rainbow_client, cluster) == set()


async def test_releasing_a_batch_gives_every_job_back_and_some_can_be_kept(
    rainbow_client: RainbowClient, make_cluster: MakeCluster
) -> None:
    cluster = await make_cluster(jobs=5)
    async with rainbow_client.poller(cluster.name, cluster.secret, **FAST) as poller:
        await wait_until(lambda: poller.qsize() == 5, what="the jobs queued")
        batch = await poller.get_batch(5)
        assert await batch[0].accept() is True  # one on its own
        batch[1].release()
        owned = await batch.accept()  # the others: accepted, owned, released, held
        assert [job.id for job in owned] == [batch[0].id, *batch.ids[2:]]
        assert batch[1].state is JobState.RELEASED
        again = await poller.get_batch(5)
        assert again.ids == [batch[1].id]  # the released one comes back
        again.release()
        assert again[0].state is JobState.RELEASED
        final = await poller.get_batch(5)
        assert await final.accept() == list(final)
    assert await waiting(rainbow_client, cluster) == set()


async def test_a_dropped_batch_is_released_when_collected(
    rainbow_client: RainbowClient, make_cluster: MakeCluster
) -> None:
    cluster = await make_cluster(jobs=3)
    async with rainbow_client.poller(cluster.name, cluster.secret, **FAST) as poller:
        await wait_until(lambda: poller.qsize() == 3, what="the jobs queued")
        batch = await poller.get_batch(3)
        ids = batch.ids
        del batch
        gc.collect()
        again = await poller.get_batch(3)
        assert again.ids == ids
        assert len(await again.accept()) == 3
        assert poller.stats.released == 3
    assert await waiting(rainbow_client, cluster) == set()


async def test_cancelled_in_the_middle_of_batch_accept_loses_no_job(
    rainbow_server: RainbowServer, rainbow_client: RainbowClient, make_cluster: MakeCluster
) -> None:
    cluster = await make_cluster(jobs=3)
    async with (
        FaultInjector(rainbow_server.address) as faults,
        RainbowClient(faults.address) as client,
        client.poller(cluster.name, cluster.secret, **IDLE) as poller,
    ):
        await wait_until(lambda: poller.stats.polls >= 2, what="the poller idle")
        batch = await poller.get_batch(3)
        faults.hold("AcceptJobs")
        accepting = asyncio.create_task(batch.accept())
        await faults.wait_held("AcceptJobs")  # the server took them; the answer waits
        accepting.cancel()
        await asyncio.gather(accepting, return_exceptions=True)
        faults.release("AcceptJobs")
        # taken by the call the consumer walked away from: handed out again, owned
        again = await poller.get_batch(3)
        assert sorted(again.ids) == sorted(batch.ids)
        assert all(job.accepted for job in again)
        assert await again.accept() == list(again)
        assert (poller.stats.accepted, poller.stats.accept_calls) == (3, 1)
    assert await waiting(rainbow_client, cluster) == set()


async def test_a_refused_batch_stays_held_and_raises_the_calls_error(
    rainbow_server: RainbowServer, rainbow_client: RainbowClient, make_cluster: MakeCluster
) -> None:
    cluster = await make_cluster(jobs=2)
    async with (
        FaultInjector(rainbow_server.address) as faults,
        RainbowClient(faults.address, retry=RetryPolicy.disabled()) as client,
        client.poller(cluster.name, cluster.secret, **FAST) as poller,
    ):
        await wait_until(lambda: poller.qsize() == 2, what="the jobs queued")
        batch = await poller.get_batch(2)
        faults.busy("AcceptJobs", times=1)
        with pytest.raises(ServerBusyError) as busy:
            await batch.accept()
        assert busy.value.outcome is CallOutcome.NOT_APPLIED
        assert batch.held == list(batch)
        assert await batch.accept() == list(batch)
    assert await waiting(rainbow_client, cluster) == set()


async def test_leaving_the_poller_with_batches_held(
    rainbow_client: RainbowClient, make_cluster: MakeCluster
) -> None:
    cluster = await make_cluster(jobs=6)
    async with rainbow_client.poller(
        cluster.name, cluster.secret, accept_window=60, **FAST
    ) as poller:
        await wait_until(lambda: poller.qsize() == 6, what="the jobs queued")
        kept, left = await poller.get_batch(3), await poller.get_batch(3)
        accepting = asyncio.create_task(kept.accept())
        await wait_until(lambda: kept[0].state is not JobState.HELD, what="the accept sent")
    assert len(await accepting) == 3
    assert all(job.state is JobState.RELEASED for job in left)
    with pytest.raises(PollerStoppedError):
        await left.accept()
    assert await waiting(rainbow_client, cluster) == set(left.ids)


async def test_a_trickle_of_jobs_is_yielded_one_at_a_time_without_waiting(
    rainbow_client: RainbowClient, make_cluster: MakeCluster
) -> None:
    cluster = await make_cluster()
    seen: list[list[int]] = []
    async with rainbow_client.poller(cluster.name, cluster.secret, **FAST) as poller:
        batches = poller.batches(max_size=100)
        for _ in range(5):
            [job_id] = await submit(rainbow_client, cluster, 1)
            async with asyncio.timeout(10):  # a batch waiting to fill would never come
                batch = await anext(batches)
            seen.append(batch.ids)
            assert batch.ids == [job_id]
            assert len(await batch.accept()) == 1
    assert seen == [[i] for i in cluster.ids]


async def test_group_batches_are_of_one_cluster_and_drain_every_job_once(
    rainbow_client: RainbowClient, make_cluster: MakeCluster
) -> None:
    clusters = [await make_cluster(jobs=40) for _ in range(5)]
    owned: Counter[int] = Counter()
    by_cluster = {c.name: set(c.ids) for c in clusters}
    async with rainbow_client.poll_many(
        {c.name: c.secret for c in clusters}, max_jobs=20, **FAST
    ) as group:
        async for batch in group.batches(max_size=15):
            assert len(batch) <= 15
            assert set(batch.ids) <= by_cluster[batch.cluster]
            for job in await batch.accept():
                owned[job.id] += 1
            if sum(owned.values()) == 200:
                await group.stop()
    assert set(owned.values()) == {1}
    assert sorted(owned) == sorted(i for c in clusters for i in c.ids)
    for c in clusters:
        assert await waiting(rainbow_client, c) == set()


@pytest.mark.parametrize("accept", ["before", "after", "manual"])
async def test_run_with_batch_size_hands_batches_to_the_handler(
    accept: str, rainbow_client: RainbowClient, make_cluster: MakeCluster
) -> None:
    clusters = [await make_cluster(jobs=30) for _ in range(3)]
    ran: Counter[int] = Counter()
    sizes: list[int] = []

    async def handler(batch: JobBatch) -> None:
        sizes.append(len(batch))
        if accept == "before":
            assert all(job.accepted for job in batch)
        if accept == "manual":
            await batch.accept()
        ran.update(batch.ids)
        if sum(ran.values()) == 90:
            await group.stop()

    async with rainbow_client.poll_many(
        {c.name: c.secret for c in clusters}, max_jobs=30, **FAST
    ) as group:
        await group.run(handler, batch_size=8, concurrency=2, accept=accept)  # type: ignore[arg-type]
        accepted = sum(s.accepted for s in group.stats.values())
    assert set(ran.values()) == {1}
    assert max(sizes) <= 8
    assert accepted == 90
    for c in clusters:
        assert await waiting(rainbow_client, c) == set()


async def test_a_failing_batch_handler_releases_its_jobs_as_failed(
    rainbow_client: RainbowClient, make_cluster: MakeCluster
) -> None:
    cluster = await make_cluster(jobs=3)
    failed_once: list[int] = []
    ran: set[int] = set()

    async def handler(batch: JobBatch) -> None:
        if not failed_once:
            failed_once.extend(batch.ids)
            raise RuntimeError("the batch system is down")
        ran.update(batch.ids)  # each failed job comes back after its own delay
        if ran == set(cluster.ids):
            await group.stop()

    async with rainbow_client.poll_many(
        {cluster.name: cluster.secret}, redelivery_delay=0.05, **FAST
    ) as group:
        await group.run(handler, batch_size=10, accept="after")
        stats = group.stats[cluster.name]
    assert sorted(failed_once) == cluster.ids
    assert (stats.released, stats.accepted) == (3, 3)
    assert await waiting(rainbow_client, cluster) == set()


async def test_a_subset_takes_jobs_of_its_own_batch_only(
    rainbow_client: RainbowClient, make_cluster: MakeCluster
) -> None:
    cluster = await make_cluster(jobs=4)
    async with rainbow_client.poller(cluster.name, cluster.secret, **FAST) as poller:
        await wait_until(lambda: poller.qsize() == 4, what="the jobs queued")
        one, other = await poller.get_batch(2), await poller.get_batch(2)
        with pytest.raises(InvalidArgumentError):
            one.subset([one[0], other[0]])
        assert len(await one.subset([one[1]]).accept()) == 1
        one.release()
        other.release()


def test_bad_batch_sizes_are_refused(rainbow_client: RainbowClient) -> None:
    poller = rainbow_client.poller("alpha", "secret")
    for size in (0, -1, 1.5, True):
        with pytest.raises(InvalidArgumentError):
            poller.batches(max_size=size)  # type: ignore[arg-type]


async def test_batches_carry_on_across_a_server_restart(tmp_path: Path) -> None:
    async with ServerProcess(tmp_path / "restart.db") as server:
        retry = RetryPolicy(max_attempts=20, initial_backoff=0.05, max_backoff=0.5)
        async with RainbowClient(server.address, retry=retry, connect_timeout=10) as client:
            reg = await client.register("restarts", server.secret)
            cluster = Cluster("restarts", reg.token, reg.secret)
            await submit(client, cluster, 30)
            owned: Counter[int] = Counter()
            async with client.poller(cluster.name, cluster.secret, max_jobs=10, **FAST) as poller:
                batches = poller.batches(max_size=10)
                for job in await (await anext(batches)).accept():
                    owned[job.id] += 1
                await server.kill()
                await server.start()  # same database, same port
                while sum(owned.values()) < 30:
                    async with asyncio.timeout(30):
                        batch = await anext(batches)
                    for job in await batch.accept():
                        owned[job.id] += 1
            assert set(owned.values()) == {1}
            assert sorted(owned) == cluster.ids
            assert await waiting(client, cluster) == set()


@pytest.mark.parametrize(
    ("size", "queue_size"),
    [(100, 1000), (99, 1000), (100, 100)],
    ids=["listings-idle-poller", "smaller-accepts", "listings-poller-waiting-for-room"],
)
async def test_no_poll_lists_again_two_listings_worth_of_jobs_being_accepted(
    size: int,
    queue_size: int,
    faults: FaultInjector,
    rainbow_client: RainbowClient,
    make_cluster: MakeCluster,
) -> None:
    """A listing shows every job whose accept is still on the wire. While two accepts of a
    listing's worth of ids each (max_jobs, 200 in all) are, the poller waits for one to
    settle before it lists again, for at most a second; smaller accepts (here 99 ids each)
    never hold a poll back. With a queue of 100, the poller is waiting for room when each
    batch is taken: the room a batch makes must not start a poll either.

    A cluster polls while fewer than max_jobs of its jobs wait in the queue, so each
    batch taken here is followed by one poll that refills the queue, and then quiet."""
    cluster = await make_cluster(jobs=600)
    async with (
        RainbowClient(faults.address) as client,
        client.poller(
            cluster.name, cluster.secret, max_jobs=100, queue_size=queue_size, **FAST
        ) as poller,
    ):
        queued = 100

        async def polls_settled() -> int:
            """The poller's count of polls once no poll runs and the queue holds what the
            polls so far put in it."""
            await wait_until(lambda: poller.qsize() == queued, what=f"{queued} queued")
            await wait_until(
                lambda: poller.stats.polls == faults.calls["RequestJobs"], what="no poll running"
            )
            return faults.calls["RequestJobs"]

        await polls_settled()
        faults.stall("AcceptJobs")  # on the wire: the server still lists the jobs

        async def consume() -> list[PolledJob]:
            batch = await poller.get_batch(size)
            return await batch.accept()  # sent before the poller runs again, as in a loop

        accepts = [asyncio.create_task(consume())]
        await faults.wait_held("AcceptJobs", 1)
        # one accept on the wire holds no poll back: the room is refilled
        queued = queued - size + 100
        listed = await polls_settled()
        accepts.append(asyncio.create_task(consume()))
        await faults.wait_held("AcceptJobs", 2)
        if size == 100:
            # FAST polls an idle cluster every 50 ms at most; the wait under test lasts 1 s
            await asyncio.sleep(0.25)
            assert faults.calls["RequestJobs"] == listed
        # ... but not for ever: with the accepts still unanswered, polling goes on (at
        # once for the smaller accepts)
        async with asyncio.timeout(10):
            await faults.wait_calls("RequestJobs", listed + 1)
        faults.clear("AcceptJobs")
        faults.release("AcceptJobs")
        owned = [job.id for batch in await asyncio.gather(*accepts) for job in batch]
        async for batch in poller.batches(max_size=250):
            owned += [job.id for job in await batch.accept()]
            if len(owned) == 600:
                await poller.stop()
    assert sorted(owned) == cluster.ids
    assert await waiting(rainbow_client, cluster) == set()
