"""Servers that are not there, never answer, or answer too slowly.

Whatever the fault, every client call must end by its deadline with a typed error
(``UnavailableError`` or ``DeadlineExceededError``), never hang; and once the server is
back, the same client works again. Pollers back off while the server fails (their error
count grows at a bounded rate, not in a hot loop) and deliver jobs again once it returns.

The bounds checked here are about hangs, not speed: each call gets a budget of a few
seconds and must be over within that budget plus a generous margin.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from support.chaos import BlackHoleServer, ChaosProxy

from rainbow_aio import (
    DeadlineExceededError,
    RainbowClient,
    RainbowError,
    RainbowServer,
    RetryPolicy,
    UnavailableError,
)

BUDGET = 1.0  # each call's total time budget, retries included
MARGIN = 10.0  # generous: a hang is what we look for, not slowness
TYPED = (UnavailableError, DeadlineExceededError)
RETRY = RetryPolicy(max_attempts=4, initial_backoff=0.05, max_backoff=0.3)


def free_port() -> int:
    """A loopback port with nothing listening on it (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def ends_in_time(call: Awaitable[Any], budget: float = BUDGET) -> BaseException:
    """Run ``call`` expecting a typed failure; it must end within budget + margin."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    error: BaseException | None = None
    try:
        async with asyncio.timeout(budget + MARGIN):
            await call
    except TYPED as exc:
        error = exc
    except TimeoutError:
        pytest.fail(f"the call hung past its {budget} s budget + {MARGIN} s margin")
    elapsed = loop.time() - started
    assert error is not None, "the call succeeded against a server that cannot answer"
    assert elapsed < budget + MARGIN, f"{error!r} took {elapsed:.1f} s"
    return error


async def all_end_in_time(calls: list[tuple[str, Callable[[], Awaitable[Any]]]]) -> None:
    """Every call (run concurrently) ends with a typed error naming its RPC, in time."""
    errors = await asyncio.gather(*(ends_in_time(call()) for _, call in calls))
    for (name, _), error in zip(calls, errors, strict=True):
        assert isinstance(error, RainbowError), (name, error)
        assert error.rpc, (name, error)


async def recovered(client: RainbowClient) -> None:
    """Wait (bounded) until the client gets an answer again."""
    async with asyncio.timeout(30):
        while True:
            with contextlib.suppress(*TYPED):
                await client.ping(timeout=BUDGET)
                return


def every_call(
    client: RainbowClient, cluster: str = "c", token: str = "t" * 36, secret: str = "s" * 36
) -> list[tuple[str, Callable[[], Awaitable[Any]]]]:
    """One of each call the client makes; register's budget is the policy's (BUDGET)."""
    return [
        ("register", lambda: client.register(cluster + "-new", "chocolate-cookies")),
        ("submit_job", lambda: client.submit_job(cluster, token, "echo", timeout=BUDGET)),
        ("request_jobs", lambda: client.request_jobs(cluster, secret, timeout=BUDGET)),
        ("accept_jobs", lambda: client.accept_jobs(cluster, secret, [1, 2], timeout=BUDGET)),
        ("ping", lambda: client.ping(timeout=BUDGET)),
    ]


@contextlib.asynccontextmanager
async def connected_via_proxy(
    **proxy_options: Any,
) -> AsyncIterator[tuple[RainbowServer, ChaosProxy, RainbowClient]]:
    async with (
        RainbowServer("127.0.0.1:0") as server,
        ChaosProxy(server.address, chaos=False, **proxy_options) as proxy,
        RainbowClient(proxy.address, retry=RETRY, timeout=BUDGET, connect_timeout=BUDGET) as client,
    ):
        yield server, proxy, client


# -- nothing listening -------------------------------------------------------------------


async def test_connect_to_a_closed_port_fails_in_time() -> None:
    port = free_port()
    client = RainbowClient(f"127.0.0.1:{port}", connect_timeout=1.0, retry=RETRY, timeout=BUDGET)
    try:
        error = await ends_in_time(client.connect(), 1.0)
        assert isinstance(error, UnavailableError)
        assert f"127.0.0.1:{port}" in str(error)
    finally:
        await client.close()


async def test_every_call_fails_in_time_when_the_server_goes_away_and_works_when_it_is_back() -> (
    None
):
    server = RainbowServer("127.0.0.1:0")
    await server.start()
    port = server.port
    client = RainbowClient(server.address, retry=RETRY, timeout=BUDGET, connect_timeout=BUDGET)
    try:
        await client.connect()
        await client.ping(timeout=BUDGET)
        await server.stop(grace=None)
        await all_end_in_time(every_call(client))
        # the server returns on the same port: the same client recovers on its own
        server = RainbowServer(f"127.0.0.1:{port}")
        await server.start()
        await recovered(client)
        reg = await client.register("back", "chocolate-cookies")
        job_id = await client.submit_job("back", reg.token, "echo back", timeout=BUDGET)
        assert [j.id for j in await client.request_jobs("back", reg.secret)] == [job_id]
    finally:
        await client.close()
        await server.stop(grace=None)


# -- a server that accepts connections and never answers ----------------------------------


async def test_connect_to_a_black_hole_fails_in_time() -> None:
    async with BlackHoleServer() as hole:
        client = RainbowClient(hole.address, connect_timeout=1.0, retry=RETRY, timeout=BUDGET)
        try:
            error = await ends_in_time(client.connect(), 1.0)
            assert isinstance(error, UnavailableError)
            assert hole.connections >= 1
        finally:
            await client.close()


async def test_every_call_fails_in_time_when_the_server_turns_into_a_black_hole() -> None:
    async with connected_via_proxy() as (server, proxy, client), BlackHoleServer() as hole:
        reg = await client.register("hole", "chocolate-cookies")
        proxy.target = hole.address  # new connections now reach a server that never answers
        proxy.drop_all()
        await all_end_in_time(every_call(client, "hole", reg.token, reg.secret))
        proxy.target = server.address  # and back: the client recovers
        proxy.drop_all()
        await recovered(client)
        assert await client.request_jobs("hole", reg.secret, timeout=BUDGET) == []


# -- a server that answers too slowly ----------------------------------------------------


async def test_every_call_on_a_stalled_connection_ends_by_its_deadline() -> None:
    async with connected_via_proxy() as (_server, proxy, client):
        reg = await client.register("slow", "chocolate-cookies")
        proxy.stall_all(BUDGET + MARGIN)  # much longer than any call's budget
        await all_end_in_time(every_call(client, "slow", reg.token, reg.secret))
        proxy.resume()
        await recovered(client)
        job_id = await client.submit_job("slow", reg.token, "echo", timeout=BUDGET + MARGIN)
        listed = await client.request_jobs("slow", reg.secret, timeout=BUDGET + MARGIN)
        assert job_id in [j.id for j in listed]


async def test_a_slow_link_with_latency_below_the_deadline_still_works() -> None:
    async with connected_via_proxy(latency=0.05) as (_server, _proxy, client):
        reg = await client.register("laggy", "chocolate-cookies")
        ids = [await client.submit_job("laggy", reg.token, f"echo {i}") for i in range(5)]
        listed = await client.request_jobs("laggy", reg.secret)
        assert [j.id for j in listed] == ids
        result = await client.accept_jobs("laggy", reg.secret, ids)
        assert result.all_accepted


async def test_a_slow_link_with_latency_above_the_deadline_fails_each_call_in_time() -> None:
    async with connected_via_proxy() as (_server, proxy, client):
        reg = await client.register("tar", "chocolate-cookies")
        proxy.latency = BUDGET + 1.0  # new connections only; drop the current one
        proxy.drop_all()
        await all_end_in_time(every_call(client, "tar", reg.token, reg.secret))


# -- pollers back off while the server fails, and recover --------------------------------

POLL_INTERVALS = {"min_interval": 0.05, "max_interval": 0.4}


async def errors_over(poller: Any, seconds: float) -> int:
    """How many failed polls the poller counts during ``seconds``."""
    before = poller.stats.errors
    await asyncio.sleep(seconds)
    return int(poller.stats.errors - before)


async def wait_for_errors(poller: Any, count: int) -> None:
    async with asyncio.timeout(30):
        while poller.stats.errors < count:  # noqa: ASYNC110 - the stats are a snapshot
            await asyncio.sleep(0.02)


@pytest.mark.parametrize("fault", ["refused", "stalled"])
async def test_poller_backs_off_while_the_server_fails_and_recovers(fault: str) -> None:
    # no client-side retries: every failed poll reaches the poller at once, so only the
    # poller's own backoff stands between a dead server and a hot loop
    async with (
        RainbowServer("127.0.0.1:0") as server,
        ChaosProxy(server.address, chaos=False) as proxy,
        RainbowClient(server.address) as admin,
        RainbowClient(
            proxy.address, retry=RetryPolicy.disabled(), timeout=BUDGET, connect_timeout=BUDGET
        ) as client,
    ):
        reg = await admin.register("flaky", "chocolate-cookies")
        async with client.poller("flaky", reg.secret, **POLL_INTERVALS) as poller:
            first = await admin.submit_job("flaky", reg.token, "echo before")
            job = await asyncio.wait_for(poller.get(), 30)
            assert job.id == first
            assert await job.accept()

            if fault == "refused":
                proxy.refuse_for(3600)
                proxy.drop_all()
            else:
                proxy.stall_all(3600)
            await wait_for_errors(poller, 1)
            window = 2.0
            failed = await errors_over(poller, window)
            # a hot loop fails thousands of times in 2 s; polling at min_interval (0.05 s)
            # without backing off would fail 40 times; backing off to max_interval (0.4 s)
            # fails about 5 times. The bound only has to tell a loop from a backoff.
            assert 0 < failed <= 40, failed
            assert poller.stats.last_error

            # the server comes back: the same poller delivers new jobs again
            proxy.stop_refusing()
            proxy.resume()
            proxy.drop_all()
            second = await admin.submit_job("flaky", reg.token, "echo after")
            job = await asyncio.wait_for(poller.get(), 30)
            assert job.id == second
            assert await job.accept()
