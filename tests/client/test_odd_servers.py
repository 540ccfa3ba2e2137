"""Answers no real server can be made to give on demand: a listing in a chosen order,
and answers that break the contract (bad job JSON, odd statuses).

These run against a small real gRPC server on loopback whose servicer answers exactly
what each test sets; the client is used unchanged. What the Go server does answer (its
jobid of 0, REGISTER_EXISTS, "request denied", an SQL error it does not mean to send) is
tested against the Go server itself, in tests/compat.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from rainbow_aio import (
    Job,
    ProtocolError,
    RainbowClient,
)
from rainbow_aio._proto import rainbow_pb2 as pb
from rainbow_aio._proto import rainbow_pb2_grpc as pb_grpc


class OddServicer(pb_grpc.RainbowSchedulerServicer):
    """Answers each RPC with the message (or UNKNOWN details) stored for it."""

    def __init__(self) -> None:
        self.answers: dict[str, Any] = {}

    async def _answer(self, rpc: str, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        answer = self.answers[rpc]
        if isinstance(answer, str):
            await context.abort(grpc.StatusCode.UNKNOWN, answer)
        return answer

    async def Register(self, request: Any, context: Any) -> Any:
        return await self._answer("Register", context)

    async def SubmitJob(self, request: Any, context: Any) -> Any:
        return await self._answer("SubmitJob", context)

    async def RequestJobs(self, request: Any, context: Any) -> Any:
        return await self._answer("RequestJobs", context)

    async def AcceptJobs(self, request: Any, context: Any) -> Any:
        return await self._answer("AcceptJobs", context)

    async def Serial(self, request: Any, context: Any) -> Any:
        return await self._answer("Serial", context)


@pytest.fixture
async def odd() -> AsyncIterator[tuple[OddServicer, RainbowClient]]:
    servicer = OddServicer()
    server = grpc.aio.server()
    pb_grpc.add_RainbowSchedulerServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with RainbowClient(f"127.0.0.1:{port}") as client:
            yield servicer, client
    finally:
        await server.stop(None)


Odd = tuple[OddServicer, RainbowClient]


async def test_jobs_arrive_in_any_order_and_leave_sorted(odd: Odd) -> None:
    servicer, client = odd
    jobs = {
        i: f'{{"id":{i},"cluster":"alpha","name":"","nodes":1,"tasks":0,"command":"c{i}"}}'
        for i in (9, 2, 5)
    }
    servicer.answers["RequestJobs"] = pb.RequestJobsResponse(
        jobs=jobs, status=pb.RequestJobsResponse.REQUEST_JOBS_SUCCESS
    )
    listed = await client.request_jobs("alpha", "secret")
    assert [job.id for job in listed] == [2, 5, 9]
    assert listed[0].command == "c2"


async def test_jobs_with_missing_or_loosely_typed_fields_parse_like_well_typed_ones(
    odd: Odd,
) -> None:
    # the Go server always sends every field with its own type; other servers may not:
    # missing fields take their defaults and numbers sent as text are read as numbers
    servicer, client = odd
    well_typed = '{"id":1,"cluster":"alpha","name":"n","nodes":2,"tasks":3,"command":"c"}'
    servicer.answers["RequestJobs"] = pb.RequestJobsResponse(
        jobs={
            1: well_typed,
            2: '{"id":2,"nodes":"2","tasks":3.0,"command":"c","name":"n"}',
            3: '{"id":3,"cluster":"alpha","command":"c"}',
        },
        status=pb.RequestJobsResponse.REQUEST_JOBS_SUCCESS,
    )
    one, two, three = await client.request_jobs("alpha", "secret")
    assert one == Job(id=1, cluster="alpha", name="n", nodes=2, tasks=3, command="c")
    assert one.to_json() == well_typed
    assert two == Job(id=2, cluster="alpha", name="n", nodes=2, tasks=3, command="c")
    assert three == Job(id=3, cluster="alpha", name="", nodes=0, tasks=0, command="c")
    assert type(two.nodes) is int
    assert type(two.tasks) is int


async def test_bad_job_json_is_a_protocol_error(odd: Odd) -> None:
    servicer, client = odd
    servicer.answers["RequestJobs"] = pb.RequestJobsResponse(
        jobs={1: "not json"}, status=pb.RequestJobsResponse.REQUEST_JOBS_SUCCESS
    )
    with pytest.raises(ProtocolError, match="job 1 is not valid job JSON"):
        await client.request_jobs("alpha", "secret")


@pytest.mark.parametrize(
    ("rpc", "answer"),
    [
        ("Register", pb.RegisterResponse(status=pb.RegisterResponse.REGISTER_DENIED)),
        ("Register", pb.RegisterResponse(status=pb.RegisterResponse.REGISTER_SUCCESS)),
        ("SubmitJob", pb.SubmitJobResponse(status=pb.SubmitJobResponse.SUBMIT_ERROR)),
        ("RequestJobs", pb.RequestJobsResponse(status=pb.RequestJobsResponse.REQUEST_JOBS_DENIED)),
        ("AcceptJobs", pb.AcceptJobsResponse()),
        ("Serial", pb.Response(request_id="someone else's")),
    ],
)
async def test_answers_outside_the_contract_are_protocol_errors(
    odd: Odd, rpc: str, answer: Any
) -> None:
    servicer, client = odd
    servicer.answers[rpc] = answer
    calls = {
        "Register": lambda: client.register("alpha", "s"),
        "SubmitJob": lambda: client.submit_job("alpha", "t", "c"),
        "RequestJobs": lambda: client.request_jobs("alpha", "s"),
        "AcceptJobs": lambda: client.accept_jobs("alpha", "s", [1]),
        "Serial": lambda: client.ping(),
    }
    with pytest.raises(ProtocolError) as info:
        await calls[rpc]()
    assert info.value.rpc == rpc
