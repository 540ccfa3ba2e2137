"""Graceful shutdown: polling stops, requested accepts finish, everything else stays queued
on the server untouched."""

from __future__ import annotations

import asyncio

import pytest
from support.proxy import TcpProxy

from rainbow_aio import PollerStoppedError, RainbowClient, RainbowServer
from rainbow_aio.poller import JobState

from .conftest import FAST, MakeCluster, wait_until, waiting


async def test_jobs_in_the_queue_remain_on_the_server(
    rainbow_client: RainbowClient, make_cluster: MakeCluster
) -> None:
    cluster = await make_cluster(jobs=20)
    async with rainbow_client.poller(
        cluster.name, cluster.secret, max_jobs=20, queue_size=50, **FAST
    ) as poller:
        await wait_until(lambda: poller.qsize() == 20, what="all 20 queued")
        taken = await poller.get()
        held = await poller.get()
        assert await taken.accept()
    # the held job was released, the 18 queued ones were never touched
    assert held.state is JobState.RELEASED
    assert await waiting(rainbow_client, cluster) == set(cluster.ids) - {taken.id}
    stats = poller.stats
    assert (stats.accepted, stats.released) == (1, 19)
    with pytest.raises(PollerStoppedError):
        await held.accept()


async def test_stop_ends_iteration_and_held_jobs_can_still_be_accepted(
    rainbow_client: RainbowClient, make_cluster: MakeCluster
) -> None:
    cluster = await make_cluster(jobs=5)
    async with rainbow_client.poller(cluster.name, cluster.secret, **FAST) as poller:
        held = await poller.get()
        await wait_until(lambda: poller.qsize() == 4, what="the rest queued")
        await poller.stop()
        assert not poller.running
        assert [job async for job in poller] == []
        with pytest.raises(PollerStoppedError):
            await poller.get()
        assert await held.accept()
    assert await waiting(rainbow_client, cluster) == set(cluster.ids) - {held.id}


async def test_accepts_waiting_in_a_batch_are_sent_at_exit(
    rainbow_client: RainbowClient, make_cluster: MakeCluster
) -> None:
    cluster = await make_cluster(jobs=3)
    async with rainbow_client.poller(
        cluster.name, cluster.secret, accept_window=60, **FAST
    ) as poller:
        jobs = [await poller.get() for _ in range(3)]
        accepts = [asyncio.create_task(job.accept()) for job in jobs]
        await wait_until(
            lambda: all(j.state is JobState.ACCEPTING for j in jobs), what="accepts pending"
        )
    # leaving the context flushed the batch instead of waiting out the window
    assert await asyncio.gather(*accepts) == [True, True, True]
    assert poller.stats.accept_calls == 1
    assert await waiting(rainbow_client, cluster) == set()


async def test_stop_during_a_poll_on_the_wire_leaves_the_body_running(
    rainbow_server: RainbowServer, rainbow_client: RainbowClient, make_cluster: MakeCluster
) -> None:
    cluster = await make_cluster(jobs=1)
    async with TcpProxy("127.0.0.1", rainbow_server.port) as proxy:
        client = RainbowClient(proxy.address)
        async with client, client.poller(cluster.name, cluster.secret, **FAST) as poller:
            held = await poller.get()
            polls = poller.stats.polls
            proxy.stall("down")  # the next poll's answer is held back
            await proxy.wait_held("down")
            assert poller.stats.polls == polls
            await poller.stop()  # cancels the poll in flight
            proxy.resume()
            # the body goes on: the held job can still be accepted
            assert await held.accept()
    assert await waiting(rainbow_client, cluster) == set()


async def test_a_poller_cannot_be_entered_twice_or_used_unentered(
    rainbow_client: RainbowClient, make_cluster: MakeCluster
) -> None:
    cluster = await make_cluster()
    poller = rainbow_client.poller(cluster.name, cluster.secret, **FAST)
    with pytest.raises(RuntimeError, match="enter"):
        await poller.get()
    async with poller:
        pass
    with pytest.raises(RuntimeError, match="once"):
        await poller.__aenter__()
