"""The in-process RainbowServer API: addresses, start-up refusals, stop and restart."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import grpc
import pytest

from rainbow_aio import _protocol as P
from rainbow_aio._proto import rainbow_pb2 as pb
from rainbow_aio._proto import rainbow_pb2_grpc as pb_grpc
from rainbow_aio.server import RainbowServer, ServerStartError

from ._helpers import SECRET, listed, register, submit


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


async def test_port_zero_gives_the_real_port() -> None:
    server = RainbowServer("127.0.0.1:0")
    assert server.port == 0
    assert dict(server.call_counts) == dict.fromkeys(server.call_counts, 0)
    async with server:
        assert server.port > 0
        assert server.address == f"127.0.0.1:{server.port}"
        assert "chocolate" not in repr(server)


@pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback")
async def test_ipv6_loopback() -> None:
    async with (
        RainbowServer("[::1]:0", secret=SECRET) as server,
        grpc.aio.insecure_channel(server.address) as channel,
    ):
        assert server.address.startswith("[::1]:")
        await register(pb_grpc.RainbowSchedulerStub(channel), "alpha")


@pytest.mark.parametrize("address", ["0.0.0.0:0", "[::]:0", "example.org:0", ":0"])
async def test_default_secret_is_refused_beyond_loopback(address: str) -> None:
    server = RainbowServer(address)
    with pytest.raises(ServerStartError) as info:
        await server.start()
    assert P.DEFAULT_REGISTRATION_SECRET not in str(info.value)
    assert not server.running


@pytest.mark.parametrize("address", ["127.0.0.1:0", "localhost:0", "[::1]:0"])
def test_loopback_addresses_pass_the_default_secret_rule(address: str) -> None:
    from rainbow_aio.server._server import is_loopback, split_address

    assert is_loopback(split_address(address)[0])


def test_empty_secret_is_refused() -> None:
    with pytest.raises(ServerStartError):
        asyncio.run(RainbowServer(secret="").start())


@pytest.mark.parametrize("address", ["nonsense", "1.2.3.4", "host:port", "::1:5", "h:70000"])
def test_bad_addresses_are_refused(address: str) -> None:
    with pytest.raises(ServerStartError):
        RainbowServer(address)


async def test_port_in_use_is_refused() -> None:
    async with RainbowServer() as first:
        second = RainbowServer(first.address)
        with pytest.raises(ServerStartError, match="in use"):
            await second.start()
        assert not second.running


async def test_corrupt_file_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "bad.db"
    db.write_bytes(b"not sqlite" * 500)
    with pytest.raises(ServerStartError, match="not a database"):
        await RainbowServer(db=db).start()


async def test_file_database_survives_an_in_process_restart(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    server = RainbowServer(db=db, secret=SECRET)
    async with server, grpc.aio.insecure_channel(server.address) as channel:
        stub = pb_grpc.RainbowSchedulerStub(channel)
        alpha = await register(stub, "alpha")
        first = await submit(stub, alpha)
    await server.stop()  # stopping twice is harmless
    async with server, grpc.aio.insecure_channel(server.address) as channel:
        stub = pb_grpc.RainbowSchedulerStub(channel)
        assert list(await listed(stub, alpha)) == [first]
        assert await submit(stub, alpha) == first + 1
    fresh = RainbowServer(db=db, secret=SECRET, cleanup=True)
    async with fresh, grpc.aio.insecure_channel(fresh.address) as channel:
        stub = pb_grpc.RainbowSchedulerStub(channel)
        assert (await register(stub, "alpha")).token != alpha.token


async def test_stop_lets_an_open_call_finish_within_grace() -> None:
    server = RainbowServer(secret=SECRET)
    await server.start()
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = pb_grpc.RainbowSchedulerStub(channel)
        call = stub.Stream(timeout=30)
        await call.write(pb.Request(content=pb.Content(id="a")))
        assert (await call.read()).request_id == "a"
        stopping = asyncio.create_task(server.stop(grace=20))
        await call.write(pb.Request(content=pb.Content(id="b")))
        assert (await call.read()).request_id == "b"
        assert not stopping.done()
        await call.done_writing()
        assert await call.details() == P.DETAILS_STREAM_EOF
        await asyncio.wait_for(stopping, 20)
    assert not server.running


async def test_calls_after_stop_are_unavailable() -> None:
    server = RainbowServer()
    await server.start()
    address = server.address
    await server.stop()
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.RainbowSchedulerStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Serial(pb.Request(), timeout=5)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
