"""The promise of one owner, at every edge of the poller's lifecycle.

Each test stages, through the public API against a real server, a case in which the
promise used to break: a resend outliving a removed cluster, an accept on the wire when
the client is closed, an accept requested after ``stop()``, a client closed while it
connects, a job whose handler always fails. Faults the embedded server cannot produce on
demand come from a real gRPC server in between (``support.grpc_faults``).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncIterator

import pytest
from support.grpc_faults import FaultInjector
from support.proxy import TcpProxy

from rainbow_aio import (
    AcceptUncertainError,
    CallOutcome,
    ClientClosedError,
    Job,
    PolledJob,
    PollerStoppedError,
    RainbowClient,
    RainbowServer,
    RetryPolicy,
    ServerBusyError,
)
from rainbow_aio.poller import JobState
from rainbow_aio.poller._ledger import live_ledger

from .conftest import FAST, MakeCluster, wait_until, waiting

QUICK = RetryPolicy(max_attempts=2, initial_backoff=0.01, max_backoff=0.02)
# after its first polls the poller stays idle (no poll in the middle of a test's steps)
IDLE = {"min_interval": 30.0, "max_interval": 30.0}


@pytest.fixture
async def client(faults: FaultInjector) -> AsyncIterator[RainbowClient]:
    async with RainbowClient(faults.address, retry=QUICK) as client:
        yield client


async def test_a_cluster_removed_while_its_accept_is_resent_is_settled_before_it_is_added_again(
    client: RainbowClient,
    faults: FaultInjector,
    rainbow_client: RainbowClient,
    make_cluster: MakeCluster,
) -> None:
    cluster = await make_cluster(jobs=1)
    async with client.poll_many({}, shutdown_timeout=0.5, **FAST) as group:
        group.add(cluster.name, cluster.secret)
        a = await group.get()
        # the first attempt's answer is lost (it may have acted), and every repeat meets a
        # locked database: the poller keeps sending it again, in the background
        faults.lose_before("AcceptJobs", times=1)
        faults.busy("AcceptJobs")
        accepting = asyncio.create_task(a.accept())
        await faults.wait_calls("AcceptJobs", at_least=4)
        await group.remove(cluster.name)
        # removal waited shutdown_timeout and then gave up on the accept: not owned, not
        # "not accepted", but uncertain, and nothing of it is still sending
        async with asyncio.timeout(5):
            with pytest.raises(AcceptUncertainError) as uncertain:
                await accepting
        assert uncertain.value.outcome is CallOutcome.UNKNOWN
        assert live_ledger(client, cluster.name) is None
        sent = faults.calls["AcceptJobs"]

        faults.clear("AcceptJobs")
        group.add(cluster.name, cluster.secret)
        b = await group.get()
        assert b.id == a.id  # it was never taken: handed out again
        assert await b.accept() is True
        assert faults.calls["AcceptJobs"] == sent + 1  # B's call, and no late resend of A's
        with pytest.raises(AcceptUncertainError):
            await a.accept()  # asked again, A's answer does not become a guess
    assert await waiting(rainbow_client, cluster) == set()


async def test_a_cluster_added_again_while_its_removal_waits_shares_the_ledger(
    client: RainbowClient,
    faults: FaultInjector,
    rainbow_client: RainbowClient,
    make_cluster: MakeCluster,
) -> None:
    cluster = await make_cluster(jobs=2)
    first, second = cluster.ids
    async with client.poll_many({}, shutdown_timeout=30, **FAST) as group:
        group.add(cluster.name, cluster.secret)
        a = await group.get()
        assert a.id == first
        faults.lose_before("AcceptJobs", times=1)
        faults.busy("AcceptJobs")
        accepting = asyncio.create_task(a.accept())
        await faults.wait_calls("AcceptJobs", at_least=3)
        removing = asyncio.create_task(group.remove(cluster.name))
        await wait_until(lambda: cluster.name not in group, what="the cluster removed")
        assert not removing.done()  # still waiting for A's accept
        group.add(cluster.name, cluster.secret)
        # the job A is still accepting is known to the ledger the new poller joined
        b = await group.get()
        assert b.id == second
        faults.clear("AcceptJobs")
        async with asyncio.timeout(10):
            assert await accepting is True  # the repeat got through: A owns its job
            await removing
        assert await b.accept() is True
        stats = group.stats[cluster.name]
        assert (stats.handed_out, stats.accepted) == (1, 1)
    assert await waiting(rainbow_client, cluster) == set()


async def test_an_accept_on_the_wire_when_the_client_closes_is_uncertain_not_released(
    faults: FaultInjector, rainbow_client: RainbowClient, make_cluster: MakeCluster
) -> None:
    cluster = await make_cluster(jobs=1)
    client = RainbowClient(faults.address, retry=QUICK)
    await client.connect()
    async with client.poller(cluster.name, cluster.secret, **IDLE) as poller:
        job = await poller.get()
        await wait_until(lambda: poller.stats.polls >= 2, what="the poller idle")
        faults.hold("AcceptJobs")
        accepting = asyncio.create_task(job.accept())
        await faults.wait_held("AcceptJobs")  # the server deleted the job; its answer waits
        await client.close(grace=None)
        with pytest.raises(AcceptUncertainError) as uncertain:
            await accepting
        assert isinstance(uncertain.value.__cause__, ClientClosedError)
        assert uncertain.value.__cause__.outcome is CallOutcome.UNKNOWN
        assert job.state is JobState.UNCERTAIN
    stats = poller.stats
    assert (stats.accepted, stats.uncertain, stats.released) == (0, 1, 0)
    # gone from the server: "uncertain" was the truth, "released" would have been a lie
    assert await waiting(rainbow_client, cluster) == set()


async def test_an_accept_requested_after_stop_is_sent_before_the_context_ends(
    rainbow_client: RainbowClient, make_cluster: MakeCluster
) -> None:
    cluster = await make_cluster(jobs=1)
    async with rainbow_client.poller(
        cluster.name, cluster.secret, accept_window=60, **FAST
    ) as poller:
        job = await poller.get()
        await poller.stop()
        accepting = asyncio.create_task(job.accept())
        await wait_until(lambda: job.state is not JobState.HELD, what="the accept requested")
        # the context ends at once, well inside the 60 s window
    async with asyncio.timeout(10):
        assert await accepting is True
    assert poller.stats.accept_calls == 1
    assert await waiting(rainbow_client, cluster) == set()


async def test_close_while_connect_waits_for_the_server_leaves_no_channel_open(
    rainbow_server: RainbowServer,
) -> None:
    async with TcpProxy("127.0.0.1", rainbow_server.port) as proxy:
        proxy.stall("both")  # the connection is up, but HTTP/2 cannot start yet
        client = RainbowClient(proxy.address, connect_timeout=60)
        connecting = asyncio.create_task(client.connect())
        await proxy.wait_held("up")
        async with asyncio.timeout(10):
            await client.close()
        proxy.resume()  # the server could answer now: too late for a closed client
        async with asyncio.timeout(10):
            with pytest.raises(ClientClosedError):
                await connecting
        assert not client.connected
        assert client.closed
        await wait_until(lambda: proxy.live == 0, what="the half-made connection closed")


async def test_a_failed_accept_that_certainly_did_not_act_leaves_the_job_held(
    client: RainbowClient,
    faults: FaultInjector,
    rainbow_client: RainbowClient,
    make_cluster: MakeCluster,
) -> None:
    cluster = await make_cluster(jobs=1)
    async with client.poller(cluster.name, cluster.secret, **FAST) as poller:
        job = await poller.get()
        faults.busy("AcceptJobs", times=QUICK.max_attempts)  # every attempt of one call
        with pytest.raises(ServerBusyError) as busy:
            await job.accept()
        assert busy.value.outcome is CallOutcome.NOT_APPLIED
        assert job.state is JobState.HELD  # still this consumer's, to accept or release
        assert await job.accept() is True
    assert await waiting(rainbow_client, cluster) == set()


async def test_a_job_whose_handler_always_fails_is_delayed_then_given_up(
    rainbow_client: RainbowClient, make_cluster: MakeCluster, caplog: pytest.LogCaptureFixture
) -> None:
    cluster = await make_cluster(jobs=1)
    delay, limit = 0.05, 4
    deliveries: list[float] = []
    given_up: list[Job] = []

    async def handler(job: PolledJob) -> None:
        deliveries.append(time.monotonic())
        raise RuntimeError("this job always fails")

    async with rainbow_client.poll_many(
        {cluster.name: cluster.secret},
        redelivery_delay=delay,
        max_redelivery_delay=1.0,
        max_deliveries=limit,
        on_give_up=given_up.append,
        **FAST,
    ) as group:
        running = asyncio.create_task(group.run(handler, accept="after"))
        await wait_until(lambda: bool(given_up), what="the job given up")
        polls = group.stats[cluster.name].polls
        # polling goes on, and the job is not handed out again
        await wait_until(lambda: group.stats[cluster.name].polls >= polls + 5, what="polls")
        await group.stop()
        await running
        stats = group.stats[cluster.name]
    assert len(deliveries) == limit
    # each delivery waited at least half of its (doubling) delay after the last failure
    for i, (earlier, later) in enumerate(itertools.pairwise(deliveries)):
        assert later - earlier >= 0.5 * delay * 2**i
    assert [job.id for job in given_up] == cluster.ids
    assert (stats.handed_out, stats.given_up, stats.released) == (limit, 1, limit)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR and "no longer" in r.message]
    assert len(errors) == 1
    assert str(cluster.ids[0]) in errors[0].message
    # it stays on the server, for other processes
    assert await waiting(rainbow_client, cluster) == set(cluster.ids)


async def test_a_job_that_fails_then_succeeds_is_accepted_and_its_failures_forgotten(
    rainbow_client: RainbowClient, make_cluster: MakeCluster
) -> None:
    cluster = await make_cluster(jobs=1)
    attempts = 0

    async def handler(job: PolledJob) -> None:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise RuntimeError("transient failure")
        await group.stop()

    async with rainbow_client.poll_many(
        {cluster.name: cluster.secret}, redelivery_delay=0.02, max_deliveries=5, **FAST
    ) as group:
        await group.run(handler, accept="after")
        stats = group.stats[cluster.name]
        ledger = live_ledger(rainbow_client, cluster.name)
        assert ledger is not None
        assert not ledger.records.failures  # the accepted job's failures are forgotten
    assert attempts == 3
    assert (stats.accepted, stats.given_up) == (1, 0)
    assert await waiting(rainbow_client, cluster) == set()


async def test_release_failed_delays_the_next_delivery_plain_release_does_not(
    rainbow_client: RainbowClient, make_cluster: MakeCluster
) -> None:
    cluster = await make_cluster(jobs=2)
    low, high = cluster.ids
    async with rainbow_client.poller(
        cluster.name, cluster.secret, redelivery_delay=30, **FAST
    ) as poller:
        first, second = await poller.get(), await poller.get()
        assert (first.id, second.id) == (low, high)
        first.release(failed=True)  # hidden for 15 to 30 s
        second.release()  # handed out again by the next poll
        again = await poller.get()
        assert again.id == high
        assert await again.accept() is True
        polls = poller.stats.polls
        await wait_until(lambda: poller.stats.polls >= polls + 3, what="more polls")
        assert poller.qsize() == 0  # the failed one is not handed out within its delay
    assert await waiting(rainbow_client, cluster) == {low}


async def test_a_job_released_by_a_closed_poller_cannot_be_accepted(
    rainbow_client: RainbowClient, make_cluster: MakeCluster
) -> None:
    cluster = await make_cluster(jobs=1)
    async with rainbow_client.poller(cluster.name, cluster.secret, **FAST) as poller:
        job = await poller.get()
    assert job.state is JobState.RELEASED
    with pytest.raises(PollerStoppedError):
        await job.accept()
    assert await waiting(rainbow_client, cluster) == set(cluster.ids)


async def test_a_resend_refused_by_false_denials_keeps_going_until_answered(
    client: RainbowClient,
    faults: FaultInjector,
    rainbow_client: RainbowClient,
    make_cluster: MakeCluster,
) -> None:
    cluster = await make_cluster(jobs=1)
    async with client.poller(cluster.name, cluster.secret, **IDLE) as poller:
        job = await poller.get()
        await wait_until(lambda: poller.stats.polls >= 2, what="the poller idle")
        # the first attempt takes the job but its answer is lost; the repeats meet the Go
        # server's false denials (fewer than denied_attempts in a row), then get through
        faults.lose_after("AcceptJobs", times=1)
        faults.deny("AcceptJobs", times=poller.options.denied_attempts - 1)
        assert await job.accept() is True  # PARTIAL after the lost attempt: ours
        assert faults.calls["AcceptJobs"] == 1 + poller.options.denied_attempts
    assert await waiting(rainbow_client, cluster) == set()


async def test_a_resend_denied_again_and_again_ends_uncertain_not_refused(
    client: RainbowClient,
    faults: FaultInjector,
    rainbow_client: RainbowClient,
    make_cluster: MakeCluster,
) -> None:
    cluster = await make_cluster(jobs=1)
    async with client.poller(cluster.name, cluster.secret, denied_attempts=2, **IDLE) as poller:
        job = await poller.get()
        await wait_until(lambda: poller.stats.polls >= 2, what="the poller idle")
        faults.lose_after("AcceptJobs", times=1)
        faults.deny("AcceptJobs")
        with pytest.raises(AcceptUncertainError):  # the lost attempt did take it
            await job.accept()
        assert faults.calls["AcceptJobs"] == 1 + 2
    assert await waiting(rainbow_client, cluster) == set()


async def test_a_listing_that_misses_rows_neither_loses_jobs_nor_suspects_others(
    client: RainbowClient,
    faults: FaultInjector,
    rainbow_client: RainbowClient,
    rainbow_server: RainbowServer,
    make_cluster: MakeCluster,
) -> None:
    cluster = await make_cluster(jobs=4)
    # max_jobs 5: with fewer than a listing's worth queued, the cluster keeps polling
    async with client.poller(cluster.name, cluster.secret, max_jobs=5, **FAST) as poller:
        await wait_until(lambda: poller.qsize() == 4, what="the jobs queued")
        faults.truncate("RequestJobs", times=1)  # the server "forgets" its rows once
        await wait_until(lambda: poller.stats.vanished == 4, what="the queue emptied")
        ledger = live_ledger(client, cluster.name)
        assert ledger is not None
        assert not ledger.per_id  # a short listing is no proof of another accepter
        calls = rainbow_server.call_counts.get("AcceptJobs", 0)
        batch = await poller.get_batch(4)  # listed again, handed out again
        assert sorted(batch.ids) == cluster.ids
        assert len(await batch.accept()) == 4
        assert rainbow_server.call_counts["AcceptJobs"] - calls == 1  # still batched
    assert await waiting(rainbow_client, cluster) == set()


async def test_a_listing_that_misses_rows_does_not_reset_a_given_up_job(
    client: RainbowClient,
    faults: FaultInjector,
    rainbow_client: RainbowClient,
    make_cluster: MakeCluster,
) -> None:
    # a short listing that misses a given-up job says nothing of it (the Go server's can
    # miss rows under load): when the next listings show it again it stays given up
    cluster = await make_cluster(jobs=1)
    async with client.poller(
        cluster.name, cluster.secret, max_deliveries=2, redelivery_delay=0.01, **FAST
    ) as poller:
        for _ in range(2):
            job = await poller.get()
            job.release(failed=True)
        assert poller.stats.given_up == 1
        faults.truncate("RequestJobs", times=1)
        polls = poller.stats.polls
        await wait_until(lambda: poller.stats.polls >= polls + 4, what="the polls after it")
        assert poller.stats.handed_out == 2
        assert poller.qsize() == 0
        assert poller.stats.given_up == 1
    assert await waiting(rainbow_client, cluster) == set(cluster.ids)


async def test_the_record_of_a_given_up_job_taken_elsewhere_is_forgotten(
    client: RainbowClient,
    rainbow_client: RainbowClient,
    make_cluster: MakeCluster,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # bookkeeping stays bounded: once complete listings have not shown a given-up job
    # for the grace period (shortened here), the job is gone and its record too
    monkeypatch.setattr("rainbow_aio.poller._failures.FORGET_AFTER", 2.0)
    cluster = await make_cluster(jobs=1)
    async with client.poller(cluster.name, cluster.secret, max_deliveries=1, **FAST) as poller:
        (await poller.get()).release(failed=True)
        ledger = live_ledger(client, cluster.name)
        assert ledger is not None
        assert ledger.records.given_up == set(cluster.ids)
        result = await rainbow_client.accept_jobs(cluster.name, cluster.secret, cluster.ids)
        assert result.all_accepted  # another process owns it now
        polls = poller.stats.polls
        await wait_until(lambda: poller.stats.polls >= polls + 1, what="a listing without it")
        assert ledger.records.given_up == set(cluster.ids)  # not at once: a listing may miss rows
        await wait_until(lambda: not ledger.records.given_up, what="the record forgotten")
        assert not ledger.records.absent_since
