"""When another accepter takes jobs: exact outcomes, uncertain ones reported as such, and
bookkeeping that stays bounded."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from support.proxy import TcpProxy

from rainbow_aio import (
    AcceptStatus,
    AcceptUncertainError,
    RainbowClient,
    RainbowServer,
    RetryPolicy,
)
from rainbow_aio.poller import JobState
from rainbow_aio.poller._ledger import AcceptLedger, live_ledger

from .conftest import FAST, Cluster, MakeCluster, submit, wait_until, waiting


@pytest.fixture
async def other(rainbow_server: RainbowServer) -> AsyncIterator[RainbowClient]:
    """A second client: another process's accepter, as far as the poller can tell."""
    async with RainbowClient(rainbow_server.address) as client:
        yield client


def ledger_of(client: RainbowClient, cluster: Cluster) -> AcceptLedger:
    ledger = live_ledger(client, cluster.name)
    assert ledger is not None
    return ledger


def ledger_sizes(client: RainbowClient, cluster: Cluster) -> tuple[int, int]:
    """How many ids the cluster's ledger tracks in flight, and how many tombstones."""
    ledger = ledger_of(client, cluster)
    return len(ledger.entries), len(ledger.listings)


async def test_partial_in_a_batch_is_uncertain_and_switches_to_one_id_per_call(
    rainbow_client: RainbowClient,
    other: RainbowClient,
    make_cluster: MakeCluster,
    caplog: pytest.LogCaptureFixture,
) -> None:
    cluster = await make_cluster(jobs=6)
    async with rainbow_client.poller(
        cluster.name, cluster.secret, accept_window=60, accept_batch_size=3, **FAST
    ) as poller:
        jobs = [await poller.get() for _ in range(3)]
        taken = await other.accept_jobs(cluster.name, cluster.secret, [jobs[1].id])
        assert taken.status is AcceptStatus.SUCCESS
        # one AcceptJobs for the three (the batch is full) comes back PARTIAL
        outcomes = await asyncio.gather(*(j.accept() for j in jobs), return_exceptions=True)
        assert all(isinstance(o, AcceptUncertainError) for o in outcomes)
        assert {o.job_id for o in outcomes if isinstance(o, AcceptUncertainError)} == {
            j.id for j in jobs
        }
        assert all(j.state is JobState.UNCERTAIN for j in jobs)
        with pytest.raises(AcceptUncertainError):
            await jobs[0].accept()  # asking again does not turn it into a guess
        stats = poller.stats
        assert (stats.uncertain, stats.accept_calls) == (3, 1)
        assert "another process accepts" in caplog.text
        # from now on each accept goes out alone, so each outcome is exact
        rest = [await poller.get() for _ in range(3)]
        assert await asyncio.gather(*(j.accept() for j in rest)) == [True, True, True]
        assert poller.stats.accept_calls == 1 + 3
    assert await waiting(rainbow_client, cluster) == set()


async def test_a_job_taken_by_someone_else_is_lost_not_owned(
    rainbow_client: RainbowClient, other: RainbowClient, make_cluster: MakeCluster
) -> None:
    cluster = await make_cluster(jobs=4)
    for mode in ("shared", "batched"):
        async with rainbow_client.poller(
            cluster.name, cluster.secret, accept_mode=mode, **FAST
        ) as poller:
            mine, theirs = await poller.get(), await poller.get()
            await other.accept_jobs(cluster.name, cluster.secret, [theirs.id])
            assert await theirs.accept() is False
            assert await mine.accept() is True
            stats = poller.stats
            assert (stats.accepted, stats.lost_to_others, stats.uncertain) == (1, 1, 0)
    assert await waiting(rainbow_client, cluster) == set()


@pytest.mark.parametrize("mode", ["batched", "shared"])
async def test_a_retried_accept_after_a_lost_answer(
    mode: str,
    rainbow_client: RainbowClient,
    rainbow_server: RainbowServer,
    make_cluster: MakeCluster,
) -> None:
    cluster = await make_cluster(jobs=1)
    async with TcpProxy("127.0.0.1", rainbow_server.port) as proxy:
        client = RainbowClient(
            proxy.address,
            retry=RetryPolicy(max_attempts=5, initial_backoff=0.02, max_backoff=0.1),
            channel_options=[
                ("grpc.initial_reconnect_backoff_ms", 50),
                ("grpc.min_reconnect_backoff_ms", 50),
                ("grpc.max_reconnect_backoff_ms", 200),
            ],
        )
        async with (
            client,
            client.poller(
                cluster.name, cluster.secret, accept_mode=mode, min_interval=30, max_interval=30
            ) as poller,
        ):
            job = await poller.get()
            await wait_until(lambda: poller.stats.polls >= 2, what="the poller idle")
            proxy.stall("down")
            accepting = asyncio.create_task(job.accept())
            await proxy.wait_held("down")  # the server took the job; the answer is lost:
            proxy.drop_all()
            proxy.resume()
            # the client retries, and the retry answers PARTIAL (the job is gone)
            if mode == "batched":
                # only this process accepts for the cluster: the first attempt took it
                assert await accepting is True
                assert poller.stats.accepted == 1
            else:
                with pytest.raises(AcceptUncertainError):
                    await accepting
                assert poller.stats.uncertain == 1
            assert poller.stats.accept_calls == 2
    assert await waiting(rainbow_client, cluster) == set()


async def test_queued_jobs_taken_by_others_are_dropped_and_bookkeeping_stays_bounded(
    rainbow_client: RainbowClient,
    other: RainbowClient,
    make_cluster: MakeCluster,
) -> None:
    cluster = await make_cluster(jobs=10)
    async with rainbow_client.poller(
        cluster.name, cluster.secret, max_jobs=10, queue_size=10, **FAST
    ) as poller:
        await wait_until(lambda: poller.qsize() == 10, what="a full queue")
        # the other accepter takes all ten while they wait in our queue
        await accept_all(other, cluster)
        # a full queue polls again once a poll's worth (half of it) is free; that listing
        # shows the five still queued gone
        held = [await poller.get() for _ in range(5)]
        await wait_until(lambda: poller.qsize() == 0, what="the vanished jobs dropped")
        assert poller.stats.vanished == 5
        assert ledger_sizes(rainbow_client, cluster) == (5, 0)  # only the held jobs
        # the five held make one batched call, which comes back PARTIAL: uncertain, and
        # from then on one id per call
        outcomes = await asyncio.gather(*(job.accept() for job in held), return_exceptions=True)
        assert all(isinstance(o, AcceptUncertainError) for o in outcomes)
        # tombstones live only while a listing that started before them runs
        await wait_until(
            lambda: ledger_sizes(rainbow_client, cluster) == (0, 0), what="empty bookkeeping"
        )
        assert ledger_of(rainbow_client, cluster).per_id  # batched mode saw the other accepter

        # then a long race: both take jobs as they come, 300 more of them
        ours: list[int] = []
        theirs: list[int] = []
        sizes: list[tuple[int, int]] = []

        async def consume() -> None:
            while True:
                job = await poller.get()
                sizes.append(ledger_sizes(rainbow_client, cluster))
                if await job.accept():
                    ours.append(job.id)

        async def compete() -> None:
            for _ in range(30):
                await submit(rainbow_client, cluster, 10)
                theirs.extend(await accept_all(other, cluster, one_by_one=True))
                sizes.append(ledger_sizes(rainbow_client, cluster))

        async with asyncio.timeout(30), asyncio.TaskGroup() as tg:
            consumers = [tg.create_task(consume()) for _ in range(3)]
            await compete()
            await wait_until(lambda: len(ours) + len(theirs) == 300, what="300 settled")
            for task in consumers:
                task.cancel()
        assert not set(ours) & set(theirs)
        assert sorted(ours + theirs) == sorted(cluster.ids[10:])
        # never more than the queue plus the three held jobs, whatever others took
        assert max(n for n, _ in sizes) <= 10 + 3
        assert max(t for _, t in sizes) <= 10 + 3
    assert await waiting(rainbow_client, cluster) == set()


async def accept_all(
    client: RainbowClient, cluster: Cluster, *, one_by_one: bool = False
) -> list[int]:
    """Accept every waiting job of ``cluster``; return the ids this call certainly took."""
    ids = [j.id for j in await client.request_jobs(cluster.name, cluster.secret)]
    if not one_by_one:
        if ids:
            result = await client.accept_jobs(cluster.name, cluster.secret, ids)
            assert result.status is AcceptStatus.SUCCESS
        return ids
    took = []
    for job_id in ids:
        result = await client.accept_jobs(cluster.name, cluster.secret, [job_id])
        if result.status is AcceptStatus.SUCCESS:
            took.append(job_id)
    return took


@pytest.mark.parametrize("mode", ["batched", "shared"])
async def test_an_accept_whose_answer_missed_its_deadline_is_sent_again(
    mode: str,
    rainbow_client: RainbowClient,
    rainbow_server: RainbowServer,
    make_cluster: MakeCluster,
) -> None:
    cluster = await make_cluster(jobs=1)
    async with TcpProxy("127.0.0.1", rainbow_server.port) as proxy:
        # the client never repeats an AcceptJobs after a deadline; the poller does
        client = RainbowClient(proxy.address, timeout=0.3)
        async with (
            client,
            client.poller(
                cluster.name, cluster.secret, accept_mode=mode, min_interval=30, max_interval=30
            ) as poller,
        ):
            job = await poller.get()
            await wait_until(lambda: poller.stats.polls >= 2, what="the poller idle")
            proxy.stall("down")
            accepting = asyncio.create_task(job.accept())
            await proxy.wait_held("down")  # the server took the job; the answer is late
            await wait_until(lambda: poller.stats.accept_calls >= 1, what="the deadline")
            proxy.resume()
            # sent again, it comes back PARTIAL: the late attempt took the job
            if mode == "batched":
                assert await accepting is True  # and nobody else accepts for the cluster
            else:
                with pytest.raises(AcceptUncertainError):
                    await accepting
            assert poller.stats.accept_calls >= 2
    assert await waiting(rainbow_client, cluster) == set()
