"""Injection and odd input: stored and returned verbatim, or refused clearly; the server
keeps serving either way."""

from __future__ import annotations

import json

import grpc
import pytest

from rainbow_aio import _protocol as P
from rainbow_aio._proto import rainbow_pb2 as pb
from rainbow_aio._proto import rainbow_pb2_grpc as pb_grpc

from ._helpers import SECRET, Cluster, listed, register, submit

Stub = pb_grpc.RainbowSchedulerStub

ODD_TEXT = [
    'say "hello"',
    "it's",
    "'; DROP TABLE jobs; --",
    '"); DELETE FROM clusters; --',
    "x' OR '1'='1",
    "100% done_",
    "%",
    "_",
    "\\",
    "Robert'); UPDATE clusters SET secret_hash = x'00'; --",
    "日本語 🌈 héllo",
    "tab\tnew\nline\rcr",
    "nul\x00inside",
    "<script>alert(1)</script> & more",
    "\u2028\u2029",
    " leading and trailing ",
]


@pytest.mark.parametrize("text", ODD_TEXT)
async def test_odd_names_and_commands_are_stored_verbatim(stub: Stub, text: str) -> None:
    cluster = await register(stub, text)
    job_id = await submit(stub, cluster, text, name=text)
    job = json.loads((await listed(stub, cluster))[job_id])
    assert job == {
        "id": job_id,
        "cluster": text,
        "name": text,
        "nodes": 1,
        "tasks": 0,
        "command": text,
    }
    # the name matched exactly: nothing leaked to or from another cluster
    other = await register(stub, "plain")
    assert await listed(stub, other) == {}
    resp = await stub.AcceptJobs(
        pb.AcceptJobsRequest(cluster=text, secret=cluster.secret, jobids=[job_id])
    )
    assert resp.status == pb.AcceptJobsResponse.RESULT_TYPE_SUCCESS


async def test_injection_through_names_touches_no_other_cluster(stub: Stub) -> None:
    victim = await register(stub, "victim")
    job_id = await submit(stub, victim)
    for text in ODD_TEXT:
        attacker = await register(stub, text)
        await submit(stub, attacker, text, name=text)
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.RequestJobs(pb.RequestJobsRequest(cluster=text, secret=victim.secret))
    assert list(await listed(stub, victim)) == [job_id]
    resp = await stub.Register(pb.RegisterRequest(name="victim", secret=SECRET))
    assert resp.status == pb.RegisterResponse.REGISTER_EXISTS


async def test_empty_name_and_command_are_stored(stub: Stub, alpha: Cluster) -> None:
    job_id = await submit(stub, alpha, "", name="")
    job = json.loads((await listed(stub, alpha))[job_id])
    assert job["name"] == ""
    assert job["command"] == ""


@pytest.mark.parametrize(
    ("nodes", "tasks"),
    [(P.INT32_MAX, P.INT32_MAX), (P.INT32_MIN, P.INT32_MIN), (0, -1), (-1, 0)],
)
async def test_extreme_int32_counts_are_stored_as_given(
    stub: Stub, alpha: Cluster, nodes: int, tasks: int
) -> None:
    job_id = await submit(stub, alpha, nodes=nodes, tasks=tasks)
    job = json.loads((await listed(stub, alpha))[job_id])
    assert (job["nodes"], job["tasks"]) == (nodes, tasks)


async def test_extreme_ids_in_accept_are_partial(stub: Stub, alpha: Cluster) -> None:
    job_id = await submit(stub, alpha)
    resp = await stub.AcceptJobs(
        pb.AcceptJobsRequest(
            cluster="alpha", secret=alpha.secret, jobids=[P.INT32_MIN, -1, 0, P.INT32_MAX, job_id]
        )
    )
    assert resp.status == pb.AcceptJobsResponse.RESULT_TYPE_PARTIAL
    assert await listed(stub, alpha) == {}


async def test_one_megabyte_command_round_trips(stub: Stub, alpha: Cluster) -> None:
    command = "x" * (1 << 20) + " & done"
    job_id = await submit(stub, alpha, command)
    job = json.loads((await listed(stub, alpha))[job_id])
    assert job["command"] == command


async def test_command_over_the_message_limit_is_refused_and_server_keeps_serving(
    stub: Stub, alpha: Cluster
) -> None:
    # gRPC's default 4 MB receive limit refuses the call before the servicer sees it
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await submit(stub, alpha, "y" * (5 << 20))
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert await listed(stub, alpha) == {}
    job_id = await submit(stub, alpha, "still serving")
    assert list(await listed(stub, alpha)) == [job_id]


async def test_invalid_utf8_on_the_wire_is_refused_and_server_keeps_serving(
    channel: grpc.aio.Channel, stub: Stub, alpha: Cluster
) -> None:
    raw = channel.unary_unary(
        f"/{P.SERVICE}/SubmitJob", request_serializer=None, response_deserializer=None
    )
    good = pb.SubmitJobRequest(cluster="alpha", token=alpha.token, command="ok")
    body = good.SerializeToString() + b"\x32\x02\xc3\x28"  # field 6 (command) = bad UTF-8
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await raw(body, timeout=10)
    assert info.value.code() != grpc.StatusCode.OK
    assert await listed(stub, alpha) == {}
    await submit(stub, alpha)
