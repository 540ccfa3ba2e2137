"""The fault injectors themselves: the chaos proxy forwards, drops, stalls, refuses and
counts what it did; the black hole swallows; both refuse non-loopback addresses."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from support.chaos import BlackHoleServer, ChaosProxy

WAIT = 10.0  # generous bound on every wait; none of these is a speed check


@contextlib.asynccontextmanager
async def echo_server() -> AsyncIterator[str]:
    tasks: set[asyncio.Task[None]] = set()

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            while data := await reader.read(4096):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()
            tasks.discard(task)

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    try:
        yield f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@contextlib.asynccontextmanager
async def dial(
    address: str,
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    host, _, port = address.rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def roundtrip(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes
) -> bytes:
    writer.write(data)
    await writer.drain()
    return await asyncio.wait_for(reader.readexactly(len(data)), WAIT)


async def test_forwards_bytes_both_ways_without_chaos() -> None:
    async with echo_server() as target, ChaosProxy(target, chaos=False) as proxy:
        async with dial(proxy.address) as (reader, writer):
            payload = bytes(range(256)) * 1000
            assert await roundtrip(reader, writer, payload) == payload
        assert proxy.faults.connections == 1
        assert proxy.faults.injected == 0


async def test_drop_all_breaks_live_connections_and_counts_them() -> None:
    async with echo_server() as target, ChaosProxy(target, chaos=False) as proxy:
        async with dial(proxy.address) as (reader, writer):
            assert await roundtrip(reader, writer, b"hello") == b"hello"
            assert proxy.drop_all() == 1
            with contextlib.suppress(ConnectionError):
                assert await asyncio.wait_for(reader.read(), WAIT) == b""
        assert proxy.faults.drops == 1


async def test_refusal_window_resets_new_connections_then_ends() -> None:
    async with echo_server() as target, ChaosProxy(target, chaos=False) as proxy:
        proxy.refuse_for(60)
        async with dial(proxy.address) as (reader, writer):
            with contextlib.suppress(ConnectionError):
                assert await asyncio.wait_for(reader.read(), WAIT) == b""
        assert proxy.faults.refused_connections == 1
        proxy.stop_refusing()
        async with dial(proxy.address) as (reader, writer):
            assert await roundtrip(reader, writer, b"back") == b"back"


async def test_stall_holds_bytes_without_losing_them() -> None:
    async with echo_server() as target, ChaosProxy(target, chaos=False) as proxy:
        async with dial(proxy.address) as (reader, writer):
            assert await roundtrip(reader, writer, b"a") == b"a"
            proxy.stall_all(0.3)
            assert await roundtrip(reader, writer, b"held") == b"held"
        assert proxy.faults.stalls == 1


async def test_random_chaos_injects_and_counts_faults() -> None:
    async with (
        echo_server() as target,
        ChaosProxy(target, seed=7, interval=(0.01, 0.03), stall_time=(0.01, 0.05)) as proxy,
    ):
        # keep dialling until the proxy has injected a few faults; bounded in count and time
        for _ in range(500):
            if proxy.faults.injected >= 5:
                break
            with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, TimeoutError):
                async with dial(proxy.address) as (reader, writer):
                    await roundtrip(reader, writer, b"x" * 100)
                    await asyncio.sleep(0.02)
        assert proxy.faults.injected >= 5
        assert len(proxy.history) >= 5


def test_same_seed_draws_the_same_faults() -> None:
    def draws(seed: int) -> list[tuple[str, int | None, float]]:
        proxy = ChaosProxy("127.0.0.1:1", seed=seed)
        return [proxy.decide([3, 1, 2]) for _ in range(100)]

    assert draws(11) == draws(11)
    assert draws(11) != draws(12)
    kinds = {kind for kind, _, _ in draws(11)}
    assert kinds == {"drop", "stall", "refuse"}


@pytest.mark.parametrize("address", ["10.1.2.3:80", "8.8.8.8:53", "0.0.0.0:80"])
def test_only_loopback_targets(address: str) -> None:
    with pytest.raises(ValueError, match="loopback"):
        ChaosProxy(address)


def test_only_loopback_listeners() -> None:
    with pytest.raises(ValueError, match="loopback"):
        ChaosProxy("127.0.0.1:1", host="0.0.0.0")
    with pytest.raises(ValueError, match="loopback"):
        BlackHoleServer(host="0.0.0.0")


async def test_black_hole_reads_and_never_answers() -> None:
    async with BlackHoleServer() as hole, dial(hole.address) as (reader, writer):
        writer.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        await writer.drain()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.read(1), 0.3)
        assert hole.connections == 1
