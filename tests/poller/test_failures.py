"""Failure isolation: a denied cluster stops only its own poller, and the error is reported."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest
from support.grpc_faults import FaultInjector
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
            # no poll of it ever succeeded: 3 quick denials in a row stop it
            assert stats[bad.name].errors == 3
            assert stats[bad.name].polls == 0
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


async def test_a_wrong_secret_never_listed_fails_after_a_few_quick_polls(
    rainbow_client: RainbowClient,
    rainbow_server: RainbowServer,
    make_cluster: MakeCluster,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="rainbow_aio")
    cluster = await make_cluster(jobs=1)
    before = rainbow_server.call_counts.get("RequestJobs", 0)
    # the default options: denied_attempts (5) with a second or more between denials
    poller = rainbow_client.poller(cluster.name, WRONG)
    with pytest.raises(DeniedError) as raised:
        async with asyncio.timeout(20), poller:
            await poller.get()
    # 3 denials in a row, none after a success: stopped well before denied_attempts
    assert poller.stats.errors == 3 < poller.options.denied_attempts
    assert poller.stats.polls == 0
    assert rainbow_server.call_counts["RequestJobs"] - before == 3
    assert "first polls denied, trying again" in caplog.text
    assert "backing off" not in caplog.text
    message = str(raised.value)
    assert "the secret is wrong" in message
    assert "not registered on this server" in message
    for text in [message, repr(raised.value), caplog.text]:
        assert WRONG not in text
        assert cluster.secret not in text
    assert await waiting(rainbow_client, cluster) == set(cluster.ids)


@pytest.fixture
async def faulty_client(faults: FaultInjector) -> AsyncIterator[RainbowClient]:
    """A client whose calls go through the fault injector."""
    async with RainbowClient(faults.address) as client:
        yield client


async def test_false_denials_before_the_first_listing_are_stepped_past(
    faulty_client: RainbowClient, faults: FaultInjector, make_cluster: MakeCluster
) -> None:
    cluster = await make_cluster(jobs=1)
    faults.deny("RequestJobs", times=2)  # the Go server's false denials, under load
    async with asyncio.timeout(20), faulty_client.poller(cluster.name, cluster.secret) as poller:
        job = await poller.get()
        assert job.id == cluster.ids[0]
        assert poller.running
        assert poller.stats.errors == 2
        assert await job.accept()


async def test_after_a_success_denials_back_off_and_do_not_stop_the_poller_early(
    faulty_client: RainbowClient,
    faults: FaultInjector,
    rainbow_client: RainbowClient,
    make_cluster: MakeCluster,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="rainbow_aio")
    cluster = await make_cluster()
    async with faulty_client.poller(cluster.name, cluster.secret, **FAST) as poller:
        await wait_until(lambda: poller.stats.polls >= 1, what="a successful poll")
        # as many denials as stop a poller that never listed, fewer than denied_attempts
        faults.deny("RequestJobs", times=3)
        await wait_until(lambda: poller.stats.errors == 3, what="the denials")
        [later] = await submit(rainbow_client, cluster, 1)
        async with asyncio.timeout(20):
            job = await poller.get()
        assert job.id == later
        assert poller.running
        assert poller.stats.errors == 3
        assert "DeniedError" in (poller.stats.last_error or "")
        assert caplog.text.count("poll failed, backing off") == 3
        assert "first polls denied" not in caplog.text
        assert await job.accept()


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
