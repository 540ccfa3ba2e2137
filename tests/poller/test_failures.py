"""Failure isolation: a denied cluster stops only its own poller, and the error is reported."""

from __future__ import annotations

import asyncio
import logging

import pytest
from support.proxy import TcpProxy

from rainbow_aio import DeniedError, PolledJob, RainbowClient, RainbowServer, RetryPolicy

from .conftest import FAST, MakeCluster, submit, wait_until, waiting

WRONG = "not-the-secret-0123456789"


async def test_a_denied_cluster_next_to_healthy_ones(
    rainbow_client: RainbowClient,
    make_cluster: MakeCluster,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="rainbow_aio")
    healthy = [await make_cluster(jobs=10) for _ in range(3)]
    bad = await make_cluster(jobs=5)
    secrets = {c.name: c.secret for c in healthy} | {bad.name: WRONG}
    accepted: set[tuple[str, int]] = set()

    async def poll() -> None:
        async with rainbow_client.poll_many(secrets, **FAST) as group:

            async def handler(job: PolledJob) -> None:
                accepted.add((job.cluster, job.id))

            async def stop_when_done() -> None:
                await wait_until(lambda: len(accepted) == 30, what="healthy jobs accepted")
                await wait_until(lambda: bad.name in group.errors, what="the denial")
                await group.stop()

            async with asyncio.timeout(20), asyncio.TaskGroup() as tg:
                tg.create_task(stop_when_done())
                await group.run(handler, concurrency=4)
            assert isinstance(group.errors[bad.name], DeniedError)
            stats = group.stats
            # denied_attempts (5) denials in a row before the poller gives up
            assert stats[bad.name].errors == 5
            assert "DeniedError" in (stats[bad.name].last_error or "")
            assert all(stats[c.name].errors == 0 for c in healthy)

    with pytest.raises(ExceptionGroup) as raised:
        await poll()
    [error] = raised.value.exceptions
    assert isinstance(error, DeniedError)
    assert error.cluster == bad.name
    assert accepted == {(c.name, i) for c in healthy for i in c.ids}
    assert await waiting(rainbow_client, bad) == set(bad.ids)
    for text in [str(raised.value), repr(error), caplog.text]:
        assert WRONG not in text
        assert bad.secret not in text


async def test_a_denied_poller_raises_from_iteration_once(
    rainbow_client: RainbowClient, make_cluster: MakeCluster
) -> None:
    cluster = await make_cluster(jobs=1)
    poller = rainbow_client.poller(cluster.name, WRONG, denied_attempts=1, **FAST)
    assert WRONG not in repr(poller)

    async def consume() -> None:
        async with poller:
            async for _ in poller:
                pytest.fail("a denied poller handed out a job")

    with pytest.raises(DeniedError):
        await consume()
    assert not poller.running
    assert isinstance(poller.error, DeniedError)
    assert poller.stats.errors == 1


async def test_a_denied_poller_raises_at_exit_when_nobody_consumed(
    rainbow_client: RainbowClient, make_cluster: MakeCluster
) -> None:
    cluster = await make_cluster(jobs=1)
    with pytest.raises(DeniedError):
        async with rainbow_client.poller(cluster.name, WRONG, denied_attempts=2, **FAST) as poller:
            await wait_until(lambda: poller.error is not None, what="the denial")


async def test_run_raises_once_every_cluster_of_the_group_failed(
    rainbow_client: RainbowClient, make_cluster: MakeCluster
) -> None:
    a = await make_cluster()
    b = await make_cluster()

    async def handler(job: PolledJob) -> None:
        pytest.fail("no job can come from denied clusters")

    async with rainbow_client.poll_many(
        {a.name: WRONG, b.name: WRONG}, denied_attempts=1, **FAST
    ) as group:
        with pytest.raises(ExceptionGroup) as raised:
            async with asyncio.timeout(20):
                await group.run(handler)
    assert {e.cluster for e in raised.value.exceptions} == {a.name, b.name}


async def test_transient_errors_back_off_and_recover(
    rainbow_client: RainbowClient, rainbow_server: RainbowServer, make_cluster: MakeCluster
) -> None:
    cluster = await make_cluster(jobs=1)
    async with TcpProxy("127.0.0.1", rainbow_server.port) as proxy:
        client = RainbowClient(
            proxy.address,
            retry=RetryPolicy.disabled(),
            timeout=0.5,
            connect_timeout=0.5,
            channel_options=[
                ("grpc.initial_reconnect_backoff_ms", 50),
                ("grpc.min_reconnect_backoff_ms", 50),
                ("grpc.max_reconnect_backoff_ms", 200),
            ],
        )
        async with client, client.poller(cluster.name, cluster.secret, **FAST) as poller:
            first = await poller.get()
            await proxy.refuse()
            proxy.drop_all()
            errors = poller.stats.errors
            await wait_until(lambda: poller.stats.errors >= errors + 2, what="failed polls")
            assert poller.running
            assert "UnavailableError" in (poller.stats.last_error or "")
            await proxy.accept()
            later = await submit(rainbow_client, cluster, 2)
            rest = [await poller.get(), await poller.get()]
            assert sorted(j.id for j in rest) == later
            assert all([await j.accept() for j in [first, *rest]])
    assert await waiting(rainbow_client, cluster) == set()
