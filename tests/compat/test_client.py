"""``RainbowClient`` against the Go server: every call's result and typed error.

Each test makes the Go server give one of its answers (PROTOCOL.md's table) and checks
what the client turns it into, and what the server really did, read from its database.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator

import grpc
import pytest
from support.gofixtures import REGISTRATION_SECRET, MakeGoCluster, unique_name
from support.goserver import GoServer

from rainbow_aio import (
    AcceptStatus,
    ClusterExistsError,
    DeniedError,
    Job,
    MissingCredentialError,
    RainbowClient,
    ServerError,
)
from rainbow_aio._proto import rainbow_pb2 as pb
from rainbow_aio._proto import rainbow_pb2_grpc as pb_grpc

pytestmark = pytest.mark.compat

DENIED = "request denied"


def is_uuid4(text: str) -> bool:
    try:
        return uuid.UUID(text).version == 4 and str(uuid.UUID(text)) == text
    except ValueError:
        return False


@pytest.fixture
async def stub(go_server: GoServer) -> AsyncIterator[pb_grpc.RainbowSchedulerStub]:
    """The generated stub on a plain channel, to see the Go server's raw answers."""
    async with grpc.aio.insecure_channel(go_server.address) as channel:
        yield pb_grpc.RainbowSchedulerStub(channel)


# Register


async def test_register_returns_fresh_credentials_once(
    go_client: RainbowClient, go_server: GoServer
) -> None:
    name = unique_name()
    reg = await go_client.register(name, REGISTRATION_SECRET)
    assert reg.cluster == name
    assert is_uuid4(reg.token)
    assert is_uuid4(reg.secret)
    assert reg.token != reg.secret
    assert name in go_server.cluster_names()

    # REGISTER_EXISTS with empty credentials: they are never shown again
    with pytest.raises(ClusterExistsError) as info:
        await go_client.register(name, REGISTRATION_SECRET)
    assert info.value.rpc == "Register"
    assert info.value.cluster == name


@pytest.mark.parametrize("secret", ["wrong", ""])
async def test_register_with_a_wrong_or_empty_secret_is_denied(
    go_client: RainbowClient, go_server: GoServer, secret: str
) -> None:
    name = unique_name()
    with pytest.raises(DeniedError) as info:
        await go_client.register(name, secret)
    assert info.value.details == DENIED
    assert info.value.code == grpc.StatusCode.UNKNOWN
    assert info.value.attempts == 1  # a denial is never repeated
    assert name not in go_server.cluster_names()


async def test_an_error_the_client_does_not_know_is_raised_at_once(
    go_client: RainbowClient, go_server: GoServer
) -> None:
    # the Go server pastes names into SQL: a double quote breaks its INSERT
    name = unique_name('quote"d')
    with pytest.raises(ServerError) as info:
        await go_client.register(name, REGISTRATION_SECRET)
    assert info.value.code == grpc.StatusCode.UNKNOWN
    assert info.value.details is not None
    assert "syntax error" in info.value.details
    assert info.value.attempts == 1  # an UNKNOWN it does not recognise is never retried
    assert name not in go_server.cluster_names()


# SubmitJob


async def test_submit_returns_no_id_and_the_job_is_stored_as_sent(
    go_client: RainbowClient, go_server: GoServer, make_go_cluster: MakeGoCluster
) -> None:
    cluster = await make_go_cluster()
    job_id = await go_client.submit_job(
        cluster.name, cluster.token, "hostname", nodes=3, tasks=4, name="first"
    )
    assert job_id is None  # the Go server always answers jobid 0
    [job] = go_server.stored_jobs(cluster.name)
    assert (job.cluster, job.name, job.nodes, job.tasks, job.command) == (
        cluster.name,
        "first",
        3,
        4,
        "hostname",
    )


async def test_submit_errors_are_typed_and_store_nothing(
    go_client: RainbowClient, go_server: GoServer, make_go_cluster: MakeGoCluster
) -> None:
    cluster = await make_go_cluster()
    other = await make_go_cluster()

    with pytest.raises(MissingCredentialError) as missing:
        await go_client.submit_job(cluster.name, "", "true")
    assert missing.value.details == "a cluster token is required"

    denied_cases = {
        "wrong token": (cluster.name, "not-the-token"),
        "another cluster's token": (cluster.name, other.token),
        "the secret instead of the token": (cluster.name, cluster.secret),
        "unknown cluster": (unique_name("unknown"), cluster.token),
    }
    for case, (name, token) in denied_cases.items():
        with pytest.raises(DeniedError) as info:
            await go_client.submit_job(name, token, "true")
        assert info.value.details == DENIED, case
        assert info.value.attempts == 1, case
    assert go_server.stored_jobs(cluster.name) == []
    assert go_server.stored_jobs(other.name) == []


# RequestJobs


async def test_listing_an_empty_queue_gives_no_jobs(
    go_client: RainbowClient, make_go_cluster: MakeGoCluster, stub: pb_grpc.RainbowSchedulerStub
) -> None:
    cluster = await make_go_cluster()
    raw = await stub.RequestJobs(pb.RequestJobsRequest(cluster=cluster.name, secret=cluster.secret))
    assert raw.status == pb.RequestJobsResponse.REQUEST_JOBS_NORESULTS
    assert await go_client.request_jobs(cluster.name, cluster.secret) == []


async def test_listing_gives_every_job_lowest_id_first_and_claims_nothing(
    go_client: RainbowClient, go_server: GoServer, make_go_cluster: MakeGoCluster
) -> None:
    cluster = await make_go_cluster(jobs=12)
    expected = go_server.stored_jobs(cluster.name)
    assert await go_client.request_jobs(cluster.name, cluster.secret) == expected
    assert await go_client.request_jobs(cluster.name, cluster.secret) == expected  # again
    assert await go_client.request_jobs(cluster.name, cluster.secret, max_jobs=4) == expected[:4]
    assert await go_client.request_jobs(cluster.name, cluster.secret, max_jobs=1) == expected[:1]
    assert len(go_server.waiting_jobs(cluster.name)) == 12


async def test_job_json_in_go_format_round_trips(
    go_client: RainbowClient, make_go_cluster: MakeGoCluster, stub: pb_grpc.RainbowSchedulerStub
) -> None:
    cluster = await make_go_cluster()
    command = "sleep 1 && echo <hi> > out; echo 'ünï' 🌈 \\ \t done"
    await go_client.submit_job(cluster.name, cluster.token, command, name="n&m", nodes=2, tasks=5)
    raw = await stub.RequestJobs(pb.RequestJobsRequest(cluster=cluster.name, secret=cluster.secret))
    [(job_id, text)] = raw.jobs.items()
    # Go's encoding/json: compact, this key order, &<> escaped, other text as raw UTF-8
    assert text.startswith(f'{{"id":{job_id},"cluster":')
    assert "\\u0026\\u0026 echo \\u003chi\\u003e \\u003e out" in text
    assert "ünï" in text
    assert "🌈" in text
    assert json.loads(text)["command"] == command

    [job] = await go_client.request_jobs(cluster.name, cluster.secret)
    assert job == Job(job_id, cluster.name, "n&m", 2, 5, command)
    assert job.to_json() == text  # byte for byte what the Go server wrote


async def test_listing_errors_are_typed(
    go_client: RainbowClient, make_go_cluster: MakeGoCluster
) -> None:
    cluster = await make_go_cluster(jobs=1)
    with pytest.raises(MissingCredentialError) as missing:
        await go_client.request_jobs(cluster.name, "")
    assert missing.value.details == "a cluster secret is required"
    for name, secret in [
        (cluster.name, "not-the-secret"),
        (cluster.name, cluster.token),  # a token is not a secret
        (unique_name("unknown"), cluster.secret),
    ]:
        with pytest.raises(DeniedError) as info:
            await go_client.request_jobs(name, secret)
        assert info.value.details == DENIED
        assert info.value.attempts == 1


# AcceptJobs


async def test_accepting_every_id_is_success_and_deletes_them(
    go_client: RainbowClient, go_server: GoServer, make_go_cluster: MakeGoCluster
) -> None:
    cluster = await make_go_cluster(jobs=3)
    ids = [job.id for job in go_server.stored_jobs(cluster.name)]
    result = await go_client.accept_jobs(cluster.name, cluster.secret, ids[:2])
    assert result.status is AcceptStatus.SUCCESS
    assert result.all_accepted
    assert result.job_ids == tuple(ids[:2])
    assert [job.id for job in go_server.waiting_jobs(cluster.name)] == ids[2:]


async def test_partial_accepts_delete_the_valid_ids(
    go_client: RainbowClient, go_server: GoServer, make_go_cluster: MakeGoCluster
) -> None:
    cluster = await make_go_cluster(jobs=3)
    other = await make_go_cluster(jobs=1)
    ids = [job.id for job in go_server.stored_jobs(cluster.name)]
    [other_id] = [job.id for job in go_server.stored_jobs(other.name)]
    unknown = max(job.id for job in go_server.stored_jobs()) + 1000

    result = await go_client.accept_jobs(cluster.name, cluster.secret, [ids[0], unknown])
    assert result.status is AcceptStatus.PARTIAL
    assert not result.all_accepted
    # another cluster's job is not taken, and it does not spoil the valid id
    result = await go_client.accept_jobs(cluster.name, cluster.secret, [ids[1], other_id])
    assert result.status is AcceptStatus.PARTIAL
    # an id accepted already
    result = await go_client.accept_jobs(cluster.name, cluster.secret, [ids[0]])
    assert result.status is AcceptStatus.PARTIAL

    assert [job.id for job in go_server.waiting_jobs(cluster.name)] == [ids[2]]
    assert [job.id for job in go_server.waiting_jobs(other.name)] == [other_id]


async def test_accept_errors_are_typed_and_delete_nothing(
    go_client: RainbowClient, go_server: GoServer, make_go_cluster: MakeGoCluster
) -> None:
    cluster = await make_go_cluster(jobs=1)
    other = await make_go_cluster()
    [job] = go_server.stored_jobs(cluster.name)
    with pytest.raises(MissingCredentialError) as missing:
        await go_client.accept_jobs(cluster.name, "", [job.id])
    assert missing.value.details == "a cluster secret is required"
    for name, secret in [
        (cluster.name, "not-the-secret"),
        (cluster.name, cluster.token),
        (unique_name("unknown"), cluster.secret),
    ]:
        with pytest.raises(DeniedError) as info:
            await go_client.accept_jobs(name, secret, [job.id])
        assert info.value.details == DENIED
        assert info.value.attempts == 1
    # another cluster's credentials: allowed in, but that cluster has no such job
    result = await go_client.accept_jobs(other.name, other.secret, [job.id])
    assert result.status is AcceptStatus.PARTIAL
    assert go_server.waiting_jobs(cluster.name) == go_server.stored_jobs(cluster.name)


# Serial and Stream


async def test_ping_and_the_stream_end_the_go_server_way(
    go_client: RainbowClient, stub: pb_grpc.RainbowSchedulerStub
) -> None:
    assert await go_client.ping() > 0
    counters = await go_client.stream_ping(5)
    assert len(counters) == 5
    # one server-wide counter, +1 per message; other tests may stream meanwhile
    assert counters == sorted(counters)
    assert len(set(counters)) == 5

    # what the client turned into a normal end: UNKNOWN "failed to receive: EOF"
    call = stub.Stream()
    await call.write(pb.Request(content=pb.Content(id="x")))
    answer = await call.read()
    assert isinstance(answer, pb.Response)
    await call.done_writing()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call.read()
    assert info.value.code() == grpc.StatusCode.UNKNOWN
    assert info.value.details() == "failed to receive: EOF"
