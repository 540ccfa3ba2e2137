"""Shared fixtures for the server tests: an in-process server and raw generated stubs.

These tests talk to the server through ``rainbow_pb2_grpc.RainbowSchedulerStub`` on a
plain ``grpc.aio`` channel, never through ``RainbowClient``, so what they check is the
wire itself: status codes, details strings, message fields.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from rainbow_aio._proto import rainbow_pb2_grpc as pb_grpc
from rainbow_aio.server import RainbowServer

from ._helpers import SECRET, Cluster, register


@pytest.fixture
async def server() -> AsyncIterator[RainbowServer]:
    async with RainbowServer("127.0.0.1:0", secret=SECRET) as srv:
        yield srv


@pytest.fixture
async def channel(server: RainbowServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(server.address) as ch:
        yield ch


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> pb_grpc.RainbowSchedulerStub:
    return pb_grpc.RainbowSchedulerStub(channel)


@pytest.fixture
async def alpha(stub: pb_grpc.RainbowSchedulerStub) -> Cluster:
    return await register(stub, "alpha")


@pytest.fixture
async def beta(stub: pb_grpc.RainbowSchedulerStub) -> Cluster:
    return await register(stub, "beta")
