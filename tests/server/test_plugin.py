"""The pytest plugin's fixtures (rainbow_aio.testing), used the way a user would."""

from __future__ import annotations

from typing import Any

import grpc

from rainbow_aio import _protocol as P
from rainbow_aio._proto import rainbow_pb2 as pb
from rainbow_aio._proto import rainbow_pb2_grpc as pb_grpc
from rainbow_aio.server import RainbowServer


async def test_rainbow_server_fixture_is_running_on_loopback(
    rainbow_server: RainbowServer,
) -> None:
    assert rainbow_server.running
    assert rainbow_server.address.startswith("127.0.0.1:")
    assert rainbow_server.port > 0
    assert rainbow_server.secret == P.DEFAULT_REGISTRATION_SECRET
    async with grpc.aio.insecure_channel(rainbow_server.address) as channel:
        stub = pb_grpc.RainbowSchedulerStub(channel)
        resp = await stub.Register(
            pb.RegisterRequest(name="keebler", secret=rainbow_server.secret), timeout=10
        )
    assert resp.status == pb.RegisterResponse.REGISTER_SUCCESS
    assert rainbow_server.call_counts["Register"] == 1


async def test_rainbow_server_fixture_is_fresh_for_each_test(
    rainbow_server: RainbowServer,
) -> None:
    async with grpc.aio.insecure_channel(rainbow_server.address) as channel:
        stub = pb_grpc.RainbowSchedulerStub(channel)
        resp = await stub.Register(
            pb.RegisterRequest(name="keebler", secret=rainbow_server.secret), timeout=10
        )
    assert resp.status == pb.RegisterResponse.REGISTER_SUCCESS


async def test_rainbow_client_fixture_talks_to_rainbow_server(
    rainbow_client: Any, rainbow_server: RainbowServer
) -> None:
    reg = await rainbow_client.register("keebler", rainbow_server.secret)
    job_id = await rainbow_client.submit_job("keebler", reg.token, "echo hello")
    jobs = await rainbow_client.request_jobs("keebler", reg.secret)
    assert [job.id for job in jobs] == [job_id]
    assert jobs[0].command == "echo hello"
    assert rainbow_server.call_counts["SubmitJob"] == 1
