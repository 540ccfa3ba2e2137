"""Keepalive against the Go server: the policy that ``KeepAliveConfig``'s defaults keep to.

The Go server keeps grpc-go's default enforcement: a client that pings more often than
every five minutes, or pings a connection with no call in flight, gets GOAWAY
``too_many_pings`` and loses its connection. Here the server does that to a channel set
to ping every second, while a channel with the default settings stays connected over
the same time. Each channel gets its options from ``KeepAliveConfig.channel_options()``,
as ``RainbowClient`` does. (That the defaults' first ping, after 5.5 minutes of one
quiet call, is accepted is not tested: it would take more than five minutes.)
"""

from __future__ import annotations

import asyncio

import grpc
import pytest
from support.goserver import GoServer

from rainbow_aio import KeepAliveConfig
from rainbow_aio._proto import rainbow_pb2 as pb
from rainbow_aio._proto import rainbow_pb2_grpc as pb_grpc

pytestmark = pytest.mark.compat

READY = grpc.ChannelConnectivity.READY


async def state_after(address: str, keepalive: KeepAliveConfig, seconds: float) -> str:
    """Connect with ``keepalive``'s options and open a Stream call: a call in flight, so
    that pings are due. Exchange one message, then wait up to ``seconds`` for the
    connection to leave READY. Returns its state then, by name; when still READY, the
    quiet call must still answer."""
    async with grpc.aio.insecure_channel(address, options=keepalive.channel_options()) as ch:
        call = pb_grpc.RainbowSchedulerStub(ch).Stream(timeout=seconds + 30)
        await call.write(pb.Request(content=pb.Content(id="1")))
        assert (await call.read()).request_id == "1"
        assert ch.get_state() is READY
        try:
            async with asyncio.timeout(seconds):
                await ch.wait_for_state_change(READY)
        except TimeoutError:
            pass
        state = ch.get_state()
        if state is READY:
            await call.write(pb.Request(content=pb.Content(id="2")))
            assert (await call.read()).request_id == "2"
        call.cancel()
        return state.name


async def test_the_go_server_drops_a_client_that_pings_every_second(go_server: GoServer) -> None:
    eager = KeepAliveConfig(time=1.0, max_pings_without_data=0)
    # grpc-go answers the fourth ping within its five minutes with GOAWAY too_many_pings
    assert await state_after(go_server.address, eager, 15.0) != "READY"


async def test_the_default_keepalive_stays_connected_to_the_go_server(
    go_server: GoServer,
) -> None:
    # longer than the eager client took to be dropped above (3 to 4 s)
    assert await state_after(go_server.address, KeepAliveConfig(), 8.0) == "READY"
