"""Every row of PROTOCOL.md's behaviour table, checked on the wire through the raw stubs.

Each test names the row it covers. Where the embedded server deliberately differs from
the Go server (a defect PROTOCOL.md lists), the test says so.
"""

from __future__ import annotations

import json
import uuid

import grpc
import pytest

from rainbow_aio import _protocol as P
from rainbow_aio._proto import rainbow_pb2 as pb
from rainbow_aio._proto import rainbow_pb2_grpc as pb_grpc

from ._helpers import SECRET, Cluster, listed, register, submit

Stub = pb_grpc.RainbowSchedulerStub
METHOD = f"/{P.SERVICE}/"


async def expect_unknown(call: object, details: str) -> None:
    """Await a call and check it failed with UNKNOWN and exactly these details."""
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    assert info.value.code() == grpc.StatusCode.UNKNOWN
    assert info.value.details() == details


def accept(stub: Stub, cluster: Cluster, ids: list[int], secret: str | None = None) -> object:
    return stub.AcceptJobs(
        pb.AcceptJobsRequest(
            cluster=cluster.name, secret=cluster.secret if secret is None else secret, jobids=ids
        ),
        timeout=10,
    )


# -- Register ----------------------------------------------------------------------------


async def test_register_new_name_succeeds_with_two_fresh_uuids(stub: Stub) -> None:
    resp = await stub.Register(pb.RegisterRequest(name="keebler", secret=SECRET))
    assert resp.status == pb.RegisterResponse.REGISTER_SUCCESS
    assert resp.request_id == ""
    token, secret = uuid.UUID(resp.token), uuid.UUID(resp.secret)
    assert token.version == 4
    assert secret.version == 4
    assert token != secret


async def test_register_existing_name_returns_exists_without_credentials(
    stub: Stub, alpha: Cluster
) -> None:
    resp = await stub.Register(pb.RegisterRequest(name="alpha", secret=SECRET))
    assert resp.status == pb.RegisterResponse.REGISTER_EXISTS
    assert resp.token == ""
    assert resp.secret == ""


@pytest.mark.parametrize("secret", ["wrong", "", SECRET.upper(), SECRET + " "])
async def test_register_wrong_or_empty_secret_is_denied(stub: Stub, secret: str) -> None:
    await expect_unknown(
        stub.Register(pb.RegisterRequest(name="alpha", secret=secret)), P.DETAILS_DENIED
    )


async def test_register_empty_name_is_refused(stub: Stub) -> None:
    # fixed defect: the Go server registers a cluster called ""
    await expect_unknown(
        stub.Register(pb.RegisterRequest(name="", secret=SECRET)), P.DETAILS_CLUSTER_REQUIRED
    )
    # the secret is checked first: an outsider learns nothing about name rules
    await expect_unknown(
        stub.Register(pb.RegisterRequest(name="", secret="wrong")), P.DETAILS_DENIED
    )


async def test_register_names_are_exact_and_case_sensitive(stub: Stub) -> None:
    # fixed defect: the Go server matches names with LIKE
    names = ["alpha", "Alpha", "ALPHA", "al%", "a_pha", "%", "_", "alpha "]
    creds = [await register(stub, name) for name in names]
    assert len({c.token for c in creds}) == len(names)
    for cluster in creds:
        job_id = await submit(stub, cluster, f"for {cluster.name}")
        jobs = await listed(stub, cluster)
        assert list(jobs) == [job_id]
        assert json.loads(jobs[job_id])["cluster"] == cluster.name


# -- SubmitJob ---------------------------------------------------------------------------


async def test_submit_right_token_succeeds_and_returns_the_real_id(
    stub: Stub, alpha: Cluster
) -> None:
    resp = await stub.SubmitJob(
        pb.SubmitJobRequest(name="j", cluster="alpha", token=alpha.token, nodes=1, command="x")
    )
    assert resp.status == pb.SubmitJobResponse.SUBMIT_SUCCESS
    assert resp.request_id == ""
    # fixed defect: the Go server always answers jobid 0
    assert resp.jobid > 0
    assert list(await listed(stub, alpha)) == [resp.jobid]
    second = await submit(stub, alpha)
    assert second > resp.jobid


@pytest.mark.parametrize("cluster", ["alpha", "nosuch", ""])
async def test_submit_empty_token_is_required(stub: Stub, alpha: Cluster, cluster: str) -> None:
    await expect_unknown(
        stub.SubmitJob(pb.SubmitJobRequest(cluster=cluster, token="", command="x")),
        P.DETAILS_TOKEN_REQUIRED,
    )


@pytest.mark.parametrize(
    ("cluster", "token"),
    [
        ("alpha", "wrong"),  # wrong token
        ("alpha", "beta-token"),  # another cluster's token
        ("alpha", "alpha-secret"),  # the cluster's secret is not its token
        ("nosuch", "alpha-token"),  # unknown cluster
        ("", "alpha-token"),  # empty cluster
        ("ALPHA", "alpha-token"),  # names are case-sensitive
    ],
)
async def test_submit_bad_credentials_are_denied(
    stub: Stub, alpha: Cluster, beta: Cluster, cluster: str, token: str
) -> None:
    values = {
        "alpha-token": alpha.token,
        "beta-token": beta.token,
        "alpha-secret": alpha.secret,
    }
    await expect_unknown(
        stub.SubmitJob(
            pb.SubmitJobRequest(cluster=cluster, token=values.get(token, token), command="x")
        ),
        P.DETAILS_DENIED,
    )
    assert await listed(stub, alpha) == {}


async def test_submit_negative_nodes_and_tasks_are_stored_as_given(
    stub: Stub, alpha: Cluster
) -> None:
    job_id = await submit(stub, alpha, nodes=-3, tasks=-7)
    assert json.loads((await listed(stub, alpha))[job_id]) == {
        "id": job_id,
        "cluster": "alpha",
        "name": "job",
        "nodes": -3,
        "tasks": -7,
        "command": "echo hello",
    }


# -- RequestJobs -------------------------------------------------------------------------


async def test_request_jobs_lists_waiting_jobs_as_go_json(stub: Stub, alpha: Cluster) -> None:
    first = await submit(stub, alpha, "sleep 1", name="j1", nodes=1, tasks=2)
    second = await submit(stub, alpha, "sleep 1 && echo hi", name="j2", nodes=3, tasks=4)
    resp = await stub.RequestJobs(pb.RequestJobsRequest(cluster="alpha", secret=alpha.secret))
    assert resp.status == pb.RequestJobsResponse.REQUEST_JOBS_SUCCESS
    assert resp.request_id == ""
    assert dict(resp.jobs) == {
        first: f'{{"id":{first},"cluster":"alpha","name":"j1","nodes":1,"tasks":2,'
        '"command":"sleep 1"}',
        second: f'{{"id":{second},"cluster":"alpha","name":"j2","nodes":3,"tasks":4,'
        '"command":"sleep 1 \\u0026\\u0026 echo hi"}',
    }


async def test_request_jobs_only_lists(stub: Stub, alpha: Cluster) -> None:
    job_id = await submit(stub, alpha)
    for _ in range(3):
        assert list(await listed(stub, alpha)) == [job_id]


async def test_request_jobs_none_waiting_is_noresults_and_an_empty_message(
    channel: grpc.aio.Channel, alpha: Cluster, beta: Cluster, stub: Stub
) -> None:
    await submit(stub, beta)  # another cluster's jobs are not listed
    raw = channel.unary_unary(
        METHOD + "RequestJobs",
        request_serializer=pb.RequestJobsRequest.SerializeToString,
        response_deserializer=None,
    )
    body = await raw(pb.RequestJobsRequest(cluster="alpha", secret=alpha.secret), timeout=10)
    assert body == b""
    resp = pb.RequestJobsResponse.FromString(body)
    assert resp.status == pb.RequestJobsResponse.REQUEST_JOBS_NORESULTS


@pytest.mark.parametrize("max_jobs", [0, -1, P.INT32_MIN])
async def test_request_jobs_max_jobs_not_positive_means_all(
    stub: Stub, alpha: Cluster, max_jobs: int
) -> None:
    ids = [await submit(stub, alpha, f"job {i}") for i in range(5)]
    assert sorted(await listed(stub, alpha, max_jobs)) == ids


@pytest.mark.parametrize("max_jobs", [1, 2, 4, 5, 6, P.INT32_MAX])
async def test_request_jobs_max_jobs_gives_the_lowest_ids(
    stub: Stub, alpha: Cluster, max_jobs: int
) -> None:
    ids = [await submit(stub, alpha, f"job {i}") for i in range(5)]
    await expect_partial_free_accept(stub, alpha, ids[1])  # a gap in the ids
    remaining = [i for i in ids if i != ids[1]]
    assert sorted(await listed(stub, alpha, max_jobs)) == remaining[:max_jobs]


async def expect_partial_free_accept(stub: Stub, cluster: Cluster, job_id: int) -> None:
    resp = await accept(stub, cluster, [job_id])  # type: ignore[misc]
    assert resp.status == pb.AcceptJobsResponse.RESULT_TYPE_SUCCESS


@pytest.mark.parametrize("cluster", ["alpha", "nosuch", ""])
async def test_request_jobs_empty_secret_is_required(
    stub: Stub, alpha: Cluster, cluster: str
) -> None:
    await expect_unknown(
        stub.RequestJobs(pb.RequestJobsRequest(cluster=cluster, secret="")),
        P.DETAILS_SECRET_REQUIRED,
    )


@pytest.mark.parametrize(
    ("cluster", "secret"),
    [
        ("alpha", "wrong"),
        ("alpha", "beta-secret"),
        ("alpha", "alpha-token"),  # the token is not the secret
        ("nosuch", "alpha-secret"),
        ("", "alpha-secret"),
        ("Alpha", "alpha-secret"),
    ],
)
async def test_request_jobs_bad_credentials_are_denied(
    stub: Stub, alpha: Cluster, beta: Cluster, cluster: str, secret: str
) -> None:
    values = {"alpha-secret": alpha.secret, "beta-secret": beta.secret, "alpha-token": alpha.token}
    await expect_unknown(
        stub.RequestJobs(pb.RequestJobsRequest(cluster=cluster, secret=values.get(secret, secret))),
        P.DETAILS_DENIED,
    )


# -- AcceptJobs --------------------------------------------------------------------------


async def test_accept_every_id_deleted_is_success(stub: Stub, alpha: Cluster) -> None:
    ids = [await submit(stub, alpha) for _ in range(3)]
    resp = await accept(stub, alpha, ids)  # type: ignore[misc]
    assert resp.status == pb.AcceptJobsResponse.RESULT_TYPE_SUCCESS
    assert await listed(stub, alpha) == {}


@pytest.mark.parametrize(
    "case", ["unknown", "other-cluster", "already-accepted", "duplicated", "negative"]
)
async def test_accept_any_id_not_deleted_is_partial_and_valid_ids_are_deleted(
    stub: Stub, alpha: Cluster, beta: Cluster, case: str
) -> None:
    mine = [await submit(stub, alpha) for _ in range(2)]
    theirs = await submit(stub, beta)
    extra: list[int] = {
        "unknown": [10_000],
        "other-cluster": [theirs],
        "duplicated": [mine[0]],
        "negative": [-mine[0]],
        "already-accepted": [],
    }[case]
    if case == "already-accepted":
        done = await submit(stub, alpha)
        await expect_partial_free_accept(stub, alpha, done)
        extra = [done]
    resp = await accept(stub, alpha, [*mine, *extra])  # type: ignore[misc]
    assert resp.status == pb.AcceptJobsResponse.RESULT_TYPE_PARTIAL
    assert await listed(stub, alpha) == {}  # the valid ids are deleted
    assert list(await listed(stub, beta)) == [theirs]  # another cluster's job is not


async def test_accept_only_invalid_ids_is_partial(stub: Stub, alpha: Cluster) -> None:
    resp = await accept(stub, alpha, [1, 2, 3])  # type: ignore[misc]
    assert resp.status == pb.AcceptJobsResponse.RESULT_TYPE_PARTIAL


async def test_accept_empty_secret_is_checked_first(stub: Stub, alpha: Cluster) -> None:
    await expect_unknown(accept(stub, alpha, [1], secret=""), P.DETAILS_SECRET_REQUIRED)
    await expect_unknown(accept(stub, alpha, [], secret=""), P.DETAILS_SECRET_REQUIRED)


async def test_accept_empty_jobids_is_refused_before_credentials(
    stub: Stub, alpha: Cluster
) -> None:
    await expect_unknown(accept(stub, alpha, []), P.DETAILS_NO_JOBS)
    await expect_unknown(accept(stub, alpha, [], secret="wrong"), P.DETAILS_NO_JOBS)


@pytest.mark.parametrize("case", ["wrong", "other-cluster", "token", "unknown-cluster"])
async def test_accept_bad_credentials_are_denied_and_delete_nothing(
    stub: Stub, alpha: Cluster, beta: Cluster, case: str
) -> None:
    job_id = await submit(stub, alpha)
    cluster, secret = {
        "wrong": (alpha, "wrong"),
        "other-cluster": (alpha, beta.secret),
        "token": (alpha, alpha.token),
        "unknown-cluster": (Cluster("nosuch", "", ""), alpha.secret),
    }[case]
    await expect_unknown(accept(stub, cluster, [job_id], secret=secret), P.DETAILS_DENIED)
    assert list(await listed(stub, alpha)) == [job_id]


# -- Serial and Stream -------------------------------------------------------------------


async def test_serial_echoes_the_id_and_reports_the_stream_counter(stub: Stub) -> None:
    resp = await stub.Serial(pb.Request(content=pb.Content(id="ping-1")))
    assert resp.request_id == "ping-1"
    assert resp.processing_details == P.SERIAL_PROCESSED
    assert resp.message_count == 0
    assert resp.messages_processed == 0
    # Serial itself does not move the counter
    again = await stub.Serial(pb.Request())
    assert again.request_id == ""
    assert again.message_count == 0


async def test_stream_answers_each_message_and_ends_with_eof_error(stub: Stub) -> None:
    call = stub.Stream(timeout=10)
    for n in range(1, 4):
        await call.write(pb.Request(content=pb.Content(id=f"m{n}")))
        resp = await call.read()
        assert resp.request_id == f"m{n}"
        assert resp.message_count == n
        assert resp.messages_processed == n
        assert resp.processing_details == P.SERIAL_PROCESSED
    await call.done_writing()
    # the final status is an error, so reading past the last answer raises it
    await expect_unknown(call.read(), P.DETAILS_STREAM_EOF)
    assert await call.code() == grpc.StatusCode.UNKNOWN
    serial = await stub.Serial(pb.Request())
    assert serial.message_count == 3
    assert serial.messages_processed == 3


async def test_stream_counter_is_server_wide(stub: Stub) -> None:
    first, second = stub.Stream(timeout=10), stub.Stream(timeout=10)
    await first.write(pb.Request())
    assert (await first.read()).message_count == 1
    await second.write(pb.Request())
    assert (await second.read()).message_count == 2
    await first.write(pb.Request())
    assert (await first.read()).message_count == 3
    for call in (first, second):
        await call.done_writing()
        assert await call.code() == grpc.StatusCode.UNKNOWN


async def test_stream_closed_at_once_ends_with_eof_error(stub: Stub) -> None:
    call = stub.Stream(timeout=10)
    await call.done_writing()
    assert await call.code() == grpc.StatusCode.UNKNOWN
    assert await call.details() == P.DETAILS_STREAM_EOF


async def test_call_counts_count_calls_per_rpc(server: object, stub: Stub, alpha: Cluster) -> None:
    from rainbow_aio.server import RainbowServer

    assert isinstance(server, RainbowServer)
    await submit(stub, alpha)
    await listed(stub, alpha)
    await stub.Serial(pb.Request())
    counts = server.call_counts
    assert counts["Register"] == 1
    assert counts["SubmitJob"] == 1
    assert counts["RequestJobs"] == 1
    assert counts["Serial"] == 1
    assert counts.get("AcceptJobs", 0) == 0
