"""Channel lifecycle: connect, connect failures, close with calls in flight, reuse."""

from __future__ import annotations

import asyncio
import socket

import grpc
import pytest
from support.proxy import TcpProxy

from rainbow_aio import (
    ClientClosedError,
    KeepAliveConfig,
    RainbowClient,
    RainbowServer,
    Registration,
    UnavailableError,
)
from rainbow_aio._exceptions import NO_SERVER_HINT
from rainbow_aio.cli._common import explain


def closed_port() -> int:
    """A loopback port that nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_connect_to_a_closed_port_fails_with_the_host_named() -> None:
    host = f"127.0.0.1:{closed_port()}"
    client = RainbowClient(host, connect_timeout=0.5)
    with pytest.raises(UnavailableError) as info:
        await client.connect()
    err = info.value
    assert host in str(err)
    assert err.rpc == "connect"
    assert err.code == grpc.StatusCode.UNAVAILABLE
    assert "Connection refused" in str(err)
    # it says how to start a server, in the command line's words
    assert str(err).endswith(f"; {NO_SERVER_HINT}")
    assert "rainbow-aio serve" in NO_SERVER_HINT
    assert explain(err, host=host) == f"nothing answers at {host} — {NO_SERVER_HINT}"
    assert not client.connected
    await client.close()


async def test_connect_to_a_server_that_never_answers_fails_too(
    rainbow_server: RainbowServer,
) -> None:
    async with TcpProxy("127.0.0.1", rainbow_server.port) as proxy:
        proxy.stall("both")  # TCP connects, HTTP/2 never starts
        client = RainbowClient(proxy.address, connect_timeout=0.5)
        with pytest.raises(UnavailableError, match=r"no connection within 0\.5 s"):
            await client.connect()


async def test_calls_before_connect_and_after_close_raise_client_closed(
    rainbow_server: RainbowServer,
) -> None:
    client = RainbowClient(rainbow_server.address)
    with pytest.raises(ClientClosedError, match="not connected"):
        await client.ping()
    await client.connect()
    assert client.connected
    assert await client.ping() > 0
    await client.close()
    assert client.closed
    assert not client.connected
    with pytest.raises(ClientClosedError, match="closed") as info:
        await client.request_jobs("alpha", "secret")
    assert info.value.rpc == "RequestJobs"
    with pytest.raises(ClientClosedError):
        await client.stream_ping()
    with pytest.raises(ClientClosedError, match="create a new RainbowClient"):
        await client.connect()


async def test_close_is_idempotent_and_concurrent(rainbow_server: RainbowServer) -> None:
    client = RainbowClient(rainbow_server.address)
    await client.close()  # never connected: fine
    client = RainbowClient(rainbow_server.address)
    await client.connect()
    await client.connect()  # already connected: nothing happens
    await asyncio.gather(client.close(), client.close(grace=None))
    await client.close()


async def test_one_channel_serves_many_concurrent_calls(
    rainbow_client: RainbowClient, alpha: Registration
) -> None:
    ids = await asyncio.gather(
        *(rainbow_client.submit_job("alpha", alpha.token, f"echo {i}") for i in range(50))
    )
    jobs = await rainbow_client.request_jobs("alpha", alpha.secret)
    assert sorted(i for i in ids if i is not None) == [job.id for job in jobs]


async def test_close_lets_calls_in_flight_finish_within_grace(
    rainbow_server: RainbowServer,
) -> None:
    async with TcpProxy("127.0.0.1", rainbow_server.port) as proxy:
        client = RainbowClient(proxy.address)
        await client.connect()
        reg = await client.register("alpha", rainbow_server.secret)
        proxy.stall("down")  # the server answers, the answer waits in the proxy
        call = asyncio.create_task(client.request_jobs("alpha", reg.secret))
        await proxy.wait_answers_held()
        closing = asyncio.create_task(client.close(grace=10))
        await asyncio.sleep(0)  # one loop turn: close() starts and marks the client closed
        assert client.closed
        with pytest.raises(ClientClosedError):
            await client.ping()  # no new calls once closing
        assert not call.done()
        proxy.resume()
        assert await call == []
        await closing


async def test_close_cancels_calls_still_running_after_grace(
    rainbow_server: RainbowServer,
) -> None:
    async with TcpProxy("127.0.0.1", rainbow_server.port) as proxy:
        client = RainbowClient(proxy.address)
        await client.connect()
        proxy.stall("both")
        call = asyncio.create_task(client.ping())
        await proxy.wait_held("up")
        await client.close(grace=0.05)
        with pytest.raises(ClientClosedError, match="closed while the call was in flight"):
            await call


async def test_cancelling_the_caller_still_cancels(rainbow_server: RainbowServer) -> None:
    async with (
        TcpProxy("127.0.0.1", rainbow_server.port) as proxy,
        RainbowClient(proxy.address) as client,
    ):
        proxy.stall("both")
        call = asyncio.create_task(client.ping())
        await proxy.wait_held("up")
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        proxy.resume()
        assert await client.ping() > 0  # the channel is still fine


async def test_async_with_and_repr(rainbow_server: RainbowServer) -> None:
    client = RainbowClient(rainbow_server.address)
    assert "not connected" in repr(client)
    async with client as entered:
        assert entered is client
        assert (
            repr(client) == f"RainbowClient(host={rainbow_server.address!r}, plaintext, connected)"
        )
    assert "closed" in repr(client)


def test_keepalive_defaults_respect_the_go_servers_policy() -> None:
    options = dict(KeepAliveConfig().channel_options())
    assert options["grpc.keepalive_time_ms"] >= 300_000  # Go: at most one ping per 5 min
    assert options["grpc.keepalive_permit_without_calls"] == 0  # Go: no pings while idle
    assert options["grpc.http2.max_pings_without_data"] >= 1
    off = dict(KeepAliveConfig(time=None).channel_options())
    assert "grpc.keepalive_time_ms" not in off
