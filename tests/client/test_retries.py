"""What is retried and what is not, with real faults: a TCP proxy and a restarted server.

The proxy's "down" stall lets a request reach the server and keeps its answer from the
client; dropping the connection then loses the answer. That is the ambiguous failure
the retry table is about: the server did act, the client cannot know it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
from support.proxy import TcpProxy

from rainbow_aio import (
    AcceptStatus,
    ClientClosedError,
    ClusterExistsError,
    DeniedError,
    RainbowClient,
    RainbowServer,
    Registration,
    RetryPolicy,
    UnavailableError,
)

from .conftest import FAST_RETRY, LogWatch


@pytest.fixture
async def proxy(rainbow_server: RainbowServer) -> TcpProxy:
    async with TcpProxy("127.0.0.1", rainbow_server.port) as proxy:
        yield proxy  # type: ignore[misc]


@pytest.fixture
async def client(proxy: TcpProxy) -> RainbowClient:
    async with RainbowClient(proxy.address, retry=FAST_RETRY, connect_timeout=0.3) as client:
        yield client  # type: ignore[misc]


@pytest.fixture
async def reg(client: RainbowClient, rainbow_server: RainbowServer) -> Registration:
    return await client.register("alpha", rainbow_server.secret)


async def cut_off(client: RainbowClient, proxy: TcpProxy) -> None:
    """Refuse new connections, drop the live one, and wait until the client's channel has
    seen the drop. Until then grpc may still write a call onto the dead socket, which is
    an ambiguous failure (the bytes could have left), not "no connection could be made"."""
    await proxy.refuse()
    proxy.drop_all()
    channel = client._channel  # the test needs grpc's view of the connection
    assert channel is not None
    async with asyncio.timeout(10):
        while channel.get_state() is grpc.ChannelConnectivity.READY:
            await channel.wait_for_state_change(grpc.ChannelConnectivity.READY)


async def lose_the_answer(proxy: TcpProxy) -> None:
    """Once the server has answered, drop the connection before the answer arrives."""
    await proxy.wait_answers_held()
    proxy.drop_all()
    proxy.resume()


async def test_request_jobs_recovers_when_the_server_comes_back(
    client: RainbowClient, reg: Registration, proxy: TcpProxy, log_watch: LogWatch
) -> None:
    job_id = await client.submit_job("alpha", reg.token, "echo")
    await proxy.refuse()
    proxy.drop_all()
    call = asyncio.create_task(client.request_jobs("alpha", reg.secret))
    await log_watch.wait_for_retries(1)  # refused at least once
    await proxy.accept()
    jobs = await call
    assert [job.id for job in jobs] == [job_id]


async def test_request_jobs_is_retried_after_a_lost_answer(
    client: RainbowClient, reg: Registration, proxy: TcpProxy, log_watch: LogWatch
) -> None:
    proxy.stall("down")
    call = asyncio.create_task(client.request_jobs("alpha", reg.secret))
    await lose_the_answer(proxy)
    assert await call == []
    assert len(log_watch.retries()) == 1


async def test_request_jobs_is_retried_after_a_deadline(
    reg: Registration, proxy: TcpProxy, log_watch: LogWatch
) -> None:
    async with RainbowClient(proxy.address, retry=FAST_RETRY, attempt_timeout=0.5) as client:
        await client.ping()  # connected before the stall
        proxy.stall("both")
        call = asyncio.create_task(client.request_jobs("alpha", reg.secret))
        await log_watch.wait_for_retries(1)
        assert "DEADLINE_EXCEEDED" in log_watch.retries()[0].getMessage()
        proxy.resume()
        assert await call == []


async def test_submit_is_not_retried_after_a_lost_answer(
    client: RainbowClient,
    reg: Registration,
    proxy: TcpProxy,
    rainbow_server: RainbowServer,
    log_watch: LogWatch,
) -> None:
    proxy.stall("down")
    call = asyncio.create_task(client.submit_job("alpha", reg.token, "echo once"))
    await lose_the_answer(proxy)
    with pytest.raises(UnavailableError) as info:
        await call
    assert info.value.attempts == 1
    assert "after 1 attempt" in str(info.value)
    assert log_watch.retries() == []
    # the server did store it: a retry would have stored it twice
    jobs = await client.request_jobs("alpha", reg.secret)
    assert [job.command for job in jobs] == ["echo once"]
    assert rainbow_server.call_counts["SubmitJob"] == 1


async def test_submit_at_least_once_retries_and_may_duplicate(
    rainbow_server: RainbowServer, proxy: TcpProxy
) -> None:
    async with RainbowClient(
        proxy.address, retry=FAST_RETRY, connect_timeout=0.3, submit_retry="at_least_once"
    ) as client:
        reg = await client.register("alpha", rainbow_server.secret)
        proxy.stall("down")
        call = asyncio.create_task(client.submit_job("alpha", reg.token, "echo twice"))
        await lose_the_answer(proxy)
        assert await call is not None
        jobs = await client.request_jobs("alpha", reg.secret)
        assert [job.command for job in jobs] == ["echo twice", "echo twice"]


async def test_submit_is_retried_when_no_connection_could_be_made(
    client: RainbowClient, reg: Registration, proxy: TcpProxy, log_watch: LogWatch
) -> None:
    await cut_off(client, proxy)
    call = asyncio.create_task(client.submit_job("alpha", reg.token, "echo safe"))
    await log_watch.wait_for_retries(1)
    await proxy.accept()
    assert await call is not None
    jobs = await client.request_jobs("alpha", reg.secret)
    assert [job.command for job in jobs] == ["echo safe"]  # exactly once


async def test_register_is_not_retried_after_a_lost_answer(
    client: RainbowClient, proxy: TcpProxy, rainbow_server: RainbowServer
) -> None:
    proxy.stall("down")
    call = asyncio.create_task(client.register("alpha", rainbow_server.secret))
    await lose_the_answer(proxy)
    with pytest.raises(UnavailableError):
        await call
    # the cluster exists now, and its credentials went down with the connection (asked
    # on a connection of its own: the client's may still be going down)
    async with RainbowClient(rainbow_server.address) as direct:
        with pytest.raises(ClusterExistsError):
            await direct.register("alpha", rainbow_server.secret)


async def test_register_is_retried_when_no_connection_could_be_made(
    client: RainbowClient, proxy: TcpProxy, rainbow_server: RainbowServer, log_watch: LogWatch
) -> None:
    await cut_off(client, proxy)
    call = asyncio.create_task(client.register("alpha", rainbow_server.secret))
    await log_watch.wait_for_retries(1)
    await proxy.accept()
    reg = await call
    assert reg.token


async def test_accept_after_a_lost_answer_is_uncertain(
    client: RainbowClient, reg: Registration, proxy: TcpProxy
) -> None:
    ids = [await client.submit_job("alpha", reg.token, f"echo {i}") for i in range(2)]
    proxy.stall("down")
    call = asyncio.create_task(client.accept_jobs("alpha", reg.secret, ids))  # type: ignore[arg-type]
    await lose_the_answer(proxy)
    result = await call
    # the first attempt took both jobs; the repeat found them gone
    assert result.status is AcceptStatus.UNCERTAIN
    assert result.attempts == 2
    assert await client.request_jobs("alpha", reg.secret) == []


async def test_accept_retried_without_a_connection_stays_certain(
    client: RainbowClient, reg: Registration, proxy: TcpProxy, log_watch: LogWatch
) -> None:
    job_id = await client.submit_job("alpha", reg.token, "echo")
    assert job_id is not None
    await cut_off(client, proxy)
    call = asyncio.create_task(client.accept_jobs("alpha", reg.secret, [job_id, job_id + 1000]))
    await log_watch.wait_for_retries(1)
    await proxy.accept()
    result = await call
    # no earlier attempt reached the server, so PARTIAL means what it says
    assert result.status is AcceptStatus.PARTIAL
    assert result.attempts >= 2


async def test_gives_up_naming_the_host_and_the_attempts(
    rainbow_server: RainbowServer, proxy: TcpProxy
) -> None:
    policy = RetryPolicy(max_attempts=3, initial_backoff=0.01, max_backoff=0.05)
    async with RainbowClient(proxy.address, retry=policy, connect_timeout=0.2) as client:
        await proxy.refuse()
        proxy.drop_all()
        with pytest.raises(UnavailableError) as info:
            await client.ping()
    err = info.value
    assert err.attempts == 3
    assert proxy.address in str(err)
    assert "after 3 attempts" in str(err)


async def test_denied_is_never_retried(
    client: RainbowClient, reg: Registration, rainbow_server: RainbowServer
) -> None:
    before = rainbow_server.call_counts["RequestJobs"]
    with pytest.raises(DeniedError) as info:
        await client.request_jobs("alpha", "wrong-secret")
    assert info.value.attempts == 1
    assert rainbow_server.call_counts["RequestJobs"] == before + 1


async def test_close_stops_a_retrying_call(
    rainbow_server: RainbowServer, proxy: TcpProxy, log_watch: LogWatch
) -> None:
    policy = RetryPolicy(initial_backoff=30, max_backoff=30)
    client = RainbowClient(proxy.address, retry=policy, timeout=120, connect_timeout=0.1)
    await client.connect()
    await proxy.refuse()
    proxy.drop_all()
    call = asyncio.create_task(client.ping())
    await log_watch.wait_for_retries(1)  # now sleeping before attempt 2
    await client.close()
    with pytest.raises(ClientClosedError):
        async with asyncio.timeout(5):
            await call


async def test_a_server_restarted_on_the_same_port(tmp_path: Path, log_watch: LogWatch) -> None:
    db = tmp_path / "rainbow.db"
    server = RainbowServer("127.0.0.1:0", db=db)
    await server.start()
    restarted: RainbowServer | None = None
    try:
        async with RainbowClient(server.address, retry=FAST_RETRY, connect_timeout=0.3) as client:
            reg = await client.register("alpha", server.secret)
            job_id = await client.submit_job("alpha", reg.token, "echo persisted")
            await server.stop(grace=None)
            call = asyncio.create_task(client.request_jobs("alpha", reg.secret))
            await log_watch.wait_for_retries(1)
            restarted = RainbowServer(server.address, db=db)
            await restarted.start()
            jobs = await call
            assert [job.id for job in jobs] == [job_id]
    finally:
        await server.stop(grace=None)
        if restarted is not None:
            await restarted.stop(grace=None)
