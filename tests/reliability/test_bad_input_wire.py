"""Hostile and odd input through the raw generated stubs, against one embedded server.

Each property sends what a buggy or malicious client could send (strings with quotes,
SQL, ``%``, ``_``, NUL and any unicode, 1 MB strings, every int32, duplicated and
negative job ids, empty lists, undecodable request bytes) and checks that:

* the call either succeeds and the value comes back verbatim from RequestJobs, or fails
  with status UNKNOWN and one of the contract's details strings (never SQL text);
* the server keeps serving (a Serial call answers after every example);
* a canary cluster that nobody touches keeps exactly its jobs.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc
import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rainbow_aio import _protocol as P
from rainbow_aio._proto import rainbow_pb2 as pb
from rainbow_aio._proto import rainbow_pb2_grpc as pb_grpc
from rainbow_aio.server import RainbowServer

from ._secretscan import WATCH

pytestmark = pytest.mark.asyncio(loop_scope="module")

REGISTRATION_SECRET = "wire-registration-secret-41f2"
KNOWN_DETAILS = {
    P.DETAILS_DENIED,
    P.DETAILS_TOKEN_REQUIRED,
    P.DETAILS_SECRET_REQUIRED,
    P.DETAILS_NO_JOBS,
    P.DETAILS_CLUSTER_REQUIRED,
}
SQL_WORDS = ("sqlite", "syntax error", "no such", "constraint", 'near "', "SQL")
CALL_TIMEOUT = 20.0
PROPERTY = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
INT32 = st.integers(P.INT32_MIN, P.INT32_MAX)
NASTY = st.sampled_from(
    [
        "'",
        '"',
        "%",
        "_",
        "%%",
        "a_c",
        "\\",
        "\x00",
        "a\x00b",
        "' OR '1'='1",
        '" OR ""="',
        "'; DROP TABLE jobs; --",
        "x'); DELETE FROM jobs; --",
        "'; INSERT INTO clusters VALUES ('evil','x','y'); --",
        "&&<>",
        "\u2028\u2029",
        "🌈️",
        "\ufeff",
        "\U0010ffff",
        " ",
    ]
)
# any text protobuf can carry (hypothesis's text never has lone surrogates), mixed with
# the classic troublemakers
TEXT = st.one_of(NASTY, st.text(max_size=64), st.lists(NASTY, max_size=4).map("".join))


@dataclass
class Cluster:
    name: str
    token: str
    secret: str


@dataclass
class Env:
    server: RainbowServer
    stub: pb_grpc.RainbowSchedulerStub
    channel: grpc.aio.Channel
    canary: Cluster
    canary_jobs: dict[int, str]
    names: itertools.count[int] = field(default_factory=itertools.count)

    async def call(self, method: str, request: object) -> object:
        """Make one call; return the response, or the (details) of an allowed refusal."""
        try:
            return await getattr(self.stub, method)(request, timeout=CALL_TIMEOUT)
        except grpc.aio.AioRpcError as exc:
            error = exc
        details = error.details() or ""
        assert error.code() == grpc.StatusCode.UNKNOWN, (method, error.code(), details)
        assert details in KNOWN_DETAILS, f"{method} answered unexpected details {details!r}"
        assert not any(w.lower() in details.lower() for w in SQL_WORDS), details
        return Refused(details)

    async def register(self, name: str) -> Cluster:
        reply = await self.call(
            "Register", pb.RegisterRequest(name=name, secret=REGISTRATION_SECRET)
        )
        assert isinstance(reply, pb.RegisterResponse), reply
        assert reply.status == pb.RegisterResponse.REGISTER_SUCCESS
        WATCH.add(reply.token, reply.secret)
        return Cluster(name, reply.token, reply.secret)

    async def fresh(self, prefix: str) -> Cluster:
        return await self.register(f"{prefix}-{next(self.names)}")

    async def submit(self, cluster: Cluster, **fields: object) -> int:
        reply = await self.call(
            "SubmitJob",
            pb.SubmitJobRequest(cluster=cluster.name, token=cluster.token, **fields),  # type: ignore[arg-type]
        )
        assert isinstance(reply, pb.SubmitJobResponse), reply
        assert reply.status == pb.SubmitJobResponse.SUBMIT_SUCCESS
        assert reply.jobid > 0
        return int(reply.jobid)

    async def listing(self, cluster: Cluster, max_jobs: int = 0) -> dict[int, str]:
        reply = await self.call(
            "RequestJobs",
            pb.RequestJobsRequest(cluster=cluster.name, secret=cluster.secret, maxJobs=max_jobs),
        )
        assert isinstance(reply, pb.RequestJobsResponse), reply
        return dict(reply.jobs)

    async def healthy(self) -> None:
        """The server still answers, and the canary's jobs are exactly what they were."""
        reply = await self.stub.Serial(
            pb.Request(content=pb.Content(id="health")), timeout=CALL_TIMEOUT
        )
        assert reply.request_id == "health"
        assert await self.listing(self.canary) == self.canary_jobs


@dataclass(frozen=True)
class Refused:
    details: str


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env() -> AsyncIterator[Env]:
    server = RainbowServer("127.0.0.1:0", secret=REGISTRATION_SECRET)
    await server.start()
    # big enough to read back 1 MB strings that JSON escaping makes 6x longer
    channel = grpc.aio.insecure_channel(
        server.address, options=[("grpc.max_receive_message_length", 64 << 20)]
    )
    try:
        stub = pb_grpc.RainbowSchedulerStub(channel)  # type: ignore[no-untyped-call]
        env = Env(server, stub, channel, Cluster("", "", ""), {})
        env.canary = await env.register("canary")
        for i in range(3):
            await env.submit(env.canary, name=f"c{i}", command=f"echo canary {i}", nodes=1)
        env.canary_jobs = await env.listing(env.canary)
        assert len(env.canary_jobs) == 3
        yield env
    finally:
        await channel.close()
        await server.stop(grace=None)


def job_fields(text: str) -> dict[str, object]:
    parsed = json.loads(text)
    assert isinstance(parsed, dict)
    return parsed


@PROPERTY
@given(name=TEXT)
async def test_register_any_name(env: Env, name: str) -> None:
    reply = await env.call("Register", pb.RegisterRequest(name=name, secret=REGISTRATION_SECRET))
    if not name:
        assert reply == Refused(P.DETAILS_CLUSTER_REQUIRED)
    else:
        assert isinstance(reply, pb.RegisterResponse)
        if reply.status == pb.RegisterResponse.REGISTER_SUCCESS:
            WATCH.add(reply.token, reply.secret)
            cluster = Cluster(name, reply.token, reply.secret)
            job_id = await env.submit(cluster, name=name, command=name or "x")
            listed = await env.listing(cluster)
            assert list(listed) == [job_id]
            assert job_fields(listed[job_id])["cluster"] == name
        else:
            # only a name registered by an earlier example may exist
            assert reply.status == pb.RegisterResponse.REGISTER_EXISTS
            assert not reply.token
            assert not reply.secret
    await env.healthy()


@PROPERTY
@given(name=TEXT, command=TEXT, nodes=INT32, tasks=INT32)
async def test_submit_any_fields_is_stored_verbatim(
    env: Env, name: str, command: str, nodes: int, tasks: int
) -> None:
    cluster = await env.fresh("submit")
    job_id = await env.submit(cluster, name=name, command=command, nodes=nodes, tasks=tasks)
    listed = await env.listing(cluster)
    assert list(listed) == [job_id]
    assert job_fields(listed[job_id]) == {
        "id": job_id,
        "cluster": cluster.name,
        "name": name,
        "nodes": nodes,
        "tasks": tasks,
        "command": command,
    }
    assert await env.call(
        "AcceptJobs",
        pb.AcceptJobsRequest(cluster=cluster.name, secret=cluster.secret, jobids=[job_id]),
    ) == pb.AcceptJobsResponse(status=pb.AcceptJobsResponse.RESULT_TYPE_SUCCESS)
    assert await env.listing(cluster) == {}
    await env.healthy()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def five_jobs(env: Env) -> tuple[Cluster, list[int]]:
    cluster = await env.fresh("lister")
    ids = [await env.submit(cluster, command=f"job {i}") for i in range(5)]
    return cluster, ids


@PROPERTY
@given(max_jobs=INT32)
async def test_request_jobs_any_max(
    env: Env, five_jobs: tuple[Cluster, list[int]], max_jobs: int
) -> None:
    cluster, ids = five_jobs
    listed = await env.listing(cluster, max_jobs)
    expected = ids if max_jobs <= 0 else ids[:max_jobs]
    assert sorted(listed) == expected
    await env.healthy()


@PROPERTY
@given(
    data=st.data(),
    picks=st.lists(st.integers(0, 2), max_size=6),
    others=st.lists(st.one_of(INT32, st.integers(-5, 50)), max_size=8),
)
async def test_accept_any_ids(
    env: Env, data: st.DataObject, picks: list[int], others: list[int]
) -> None:
    cluster = await env.fresh("accept")
    mine = [await env.submit(cluster, command=f"job {i}") for i in range(3)]
    canary_ids = data.draw(st.lists(st.sampled_from(sorted(env.canary_jobs)), max_size=3))
    ids = [mine[i] for i in picks] + others + canary_ids
    ids = data.draw(st.permutations(ids))
    reply = await env.call(
        "AcceptJobs", pb.AcceptJobsRequest(cluster=cluster.name, secret=cluster.secret, jobids=ids)
    )
    if not ids:
        assert reply == Refused(P.DETAILS_NO_JOBS)
        assert sorted(await env.listing(cluster)) == mine
    else:
        assert isinstance(reply, pb.AcceptJobsResponse)
        taken = {i for i in mine if i in ids}
        # SUCCESS only when every id in the list was deleted by this very call
        every_id_deleted = len(ids) == len(taken) and set(ids) == taken
        assert reply.status == (
            pb.AcceptJobsResponse.RESULT_TYPE_SUCCESS
            if every_id_deleted
            else pb.AcceptJobsResponse.RESULT_TYPE_PARTIAL
        )
        assert sorted(await env.listing(cluster)) == [i for i in mine if i not in taken]
    await env.healthy()


@PROPERTY
@given(cluster=TEXT, credential=TEXT, which=st.sampled_from(["own", "canary"]))
async def test_arbitrary_credentials_are_refused(
    env: Env, cluster: str, credential: str, which: str
) -> None:
    name = env.canary.name if which == "canary" else cluster
    requests: list[tuple[str, object]] = [
        ("SubmitJob", pb.SubmitJobRequest(cluster=name, token=credential, command="evil")),
        ("RequestJobs", pb.RequestJobsRequest(cluster=name, secret=credential)),
        ("AcceptJobs", pb.AcceptJobsRequest(cluster=name, secret=credential, jobids=[1, 2, 3])),
    ]
    for method, request in requests:
        reply = await env.call(method, request)
        assert isinstance(reply, Refused), (method, reply)
    await env.healthy()


METHODS = ["Register", "SubmitJob", "RequestJobs", "AcceptJobs", "Serial"]


@PROPERTY
@given(method=st.sampled_from(METHODS), payload=st.binary(max_size=256))
async def test_undecodable_request_bytes(env: Env, method: str, payload: bytes) -> None:
    call = env.channel.unary_unary(
        f"/{P.SERVICE}/{method}",
        request_serializer=None,
        response_deserializer=None,
    )
    error: grpc.aio.AioRpcError | None = None
    try:
        await call(payload, timeout=CALL_TIMEOUT)
    except grpc.aio.AioRpcError as exc:
        error = exc
    if error is not None:
        # bytes that are not a valid message may be refused with any status, but not
        # by timing out (the server must answer) and never with SQL in the details
        assert error.code() != grpc.StatusCode.DEADLINE_EXCEEDED
        details = error.details() or ""
        assert not any(w.lower() in details.lower() for w in SQL_WORDS), details
    await env.healthy()


@pytest.mark.parametrize("filler", ["a", "'", "&", "%_", "é", "🌈"])
async def test_one_megabyte_strings_round_trip(env: Env, filler: str) -> None:
    big = filler * ((1 << 20) // len(filler.encode()))  # 1 MB of UTF-8
    cluster = await env.fresh("big")
    job_id = await env.submit(cluster, name=big[:1000], command=big)
    listed = await env.listing(cluster)
    assert job_fields(listed[job_id])["command"] == big
    await env.healthy()


async def test_many_bad_calls_at_once_leave_the_server_serving(env: Env) -> None:
    cluster = await env.fresh("burst")
    requests = [
        ("AcceptJobs", pb.AcceptJobsRequest(cluster=cluster.name, secret=cluster.secret)),
        ("AcceptJobs", pb.AcceptJobsRequest(cluster="canary", secret=cluster.secret, jobids=[1])),
        ("RequestJobs", pb.RequestJobsRequest(cluster="CANARY", secret=env.canary.secret)),
        ("SubmitJob", pb.SubmitJobRequest(cluster="canar_", token=env.canary.token)),
        ("Register", pb.RegisterRequest(name="x", secret="wrong")),
    ] * 40
    replies = await asyncio.gather(*(env.call(m, r) for m, r in requests))
    assert all(isinstance(r, Refused) for r in replies)
    await env.healthy()
