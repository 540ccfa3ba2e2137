"""ServerLimits: past a bound the server answers the retryable 'database is locked' and
writes nothing; a listing over the size limit fails clearly instead of being cut short.

To hold the server at a bound for as long as a check needs, one AcceptJobs call names
300,000 ids that do not exist (the servers here allow that many): the database thread
spends a good part of a second deleting nothing, in short transactions, and meanwhile
that call is in flight and counts as one queued write. The in-process
server counts a call (``call_counts``) in the same event-loop step in which it admits
it and queues its write, so once the count shows, the bound is reached.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc
import pytest

from rainbow_aio import (
    InvalidArgumentError,
    RainbowClient,
    RetryPolicy,
    ServerBusyError,
    ServerError,
)
from rainbow_aio import _protocol as P
from rainbow_aio._proto import rainbow_pb2 as pb
from rainbow_aio._proto import rainbow_pb2_grpc as pb_grpc
from rainbow_aio.server import RainbowServer, ServerLimits

from ._helpers import SECRET, Cluster, called, listed, register, submit

Stub = pb_grpc.RainbowSchedulerStub
SLOW_ACCEPT_IDS = 300_000
# retries enough to outlast any refusal here, even on a loaded machine
PATIENT = RetryPolicy(max_attempts=1000, initial_backoff=0.02, max_backoff=0.5)


@asynccontextmanager
async def serving(limits: ServerLimits) -> AsyncIterator[tuple[RainbowServer, Stub]]:
    limits = dataclasses.replace(limits, max_accept_ids=SLOW_ACCEPT_IDS)
    async with (
        RainbowServer("127.0.0.1:0", secret=SECRET, limits=limits) as server,
        grpc.aio.insecure_channel(server.address) as channel,
    ):
        yield server, pb_grpc.RainbowSchedulerStub(channel)


async def start_slow_accept(
    server: RainbowServer, stub: Stub, cluster: Cluster
) -> asyncio.Task[pb.AcceptJobsResponse]:
    """An AcceptJobs that keeps the database thread busy; returns once it is queued."""
    before = server.call_counts["AcceptJobs"]
    ids = range(10**9, 10**9 + SLOW_ACCEPT_IDS)
    task = asyncio.ensure_future(
        stub.AcceptJobs(
            pb.AcceptJobsRequest(cluster=cluster.name, secret=cluster.secret, jobids=ids),
            timeout=120,
        )
    )
    await called(server, "AcceptJobs", before + 1)
    return task


async def expect_busy(call: object) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    assert info.value.code() == grpc.StatusCode.UNKNOWN
    assert info.value.details() == P.DETAILS_DB_LOCKED


async def test_past_the_calls_bound_every_database_call_is_answered_busy() -> None:
    async with serving(ServerLimits(max_calls_in_flight=1)) as (server, stub):
        alpha = await register(stub, "alpha")
        slow = await start_slow_accept(server, stub, alpha)
        await expect_busy(
            stub.SubmitJob(
                pb.SubmitJobRequest(cluster="alpha", token=alpha.token, command="refused")
            )
        )
        await expect_busy(
            stub.RequestJobs(pb.RequestJobsRequest(cluster="alpha", secret=alpha.secret))
        )
        await expect_busy(
            stub.AcceptJobs(pb.AcceptJobsRequest(cluster="alpha", secret=alpha.secret, jobids=[1]))
        )
        await expect_busy(stub.Register(pb.RegisterRequest(name="beta", secret=SECRET)))
        # the bound is checked before anything else, wrong credentials included
        await expect_busy(stub.SubmitJob(pb.SubmitJobRequest(cluster="alpha", token="wrong")))
        # calls that do not use the database count too (their answers hold memory)
        await expect_busy(stub.Serial(pb.Request(content=pb.Content(id="s"))))
        assert not slow.done()
        assert server.busy_answers == 6

        answer = await slow
        assert answer.status == pb.AcceptJobsResponse.RESULT_TYPE_PARTIAL
        # nothing refused was written
        assert await listed(stub, alpha) == {}
        again = await stub.Register(pb.RegisterRequest(name="beta", secret=SECRET))
        assert again.status == pb.RegisterResponse.REGISTER_SUCCESS


async def test_past_the_queued_writes_bound_writes_are_answered_busy() -> None:
    async with serving(ServerLimits(max_queued_writes=1)) as (server, stub):
        alpha = await register(stub, "alpha")
        first = await submit(stub, alpha, "before")
        slow = await start_slow_accept(server, stub, alpha)
        await expect_busy(
            stub.SubmitJob(
                pb.SubmitJobRequest(cluster="alpha", token=alpha.token, command="refused")
            )
        )
        await expect_busy(stub.Register(pb.RegisterRequest(name="beta", secret=SECRET)))
        assert not slow.done()
        assert server.busy_answers == 2
        await slow
        # nothing refused was written
        assert list(await listed(stub, alpha)) == [first]
        again = await stub.Register(pb.RegisterRequest(name="beta", secret=SECRET))
        assert again.status == pb.RegisterResponse.REGISTER_SUCCESS


async def test_client_retries_busy_answers_until_the_submit_is_stored() -> None:
    async with serving(ServerLimits(max_calls_in_flight=1)) as (server, stub):
        alpha = await register(stub, "alpha")
        slow = await start_slow_accept(server, stub, alpha)
        async with RainbowClient(
            server.address, retry=PATIENT, timeout=120, attempt_timeout=60
        ) as client:
            job_id = await client.submit_job("alpha", alpha.token, "retried", timeout=120)
        await slow
        assert server.busy_answers >= 1  # refused at least once, then retried
        jobs = await listed(stub, alpha)
        assert list(jobs) == [job_id]
        assert '"command":"retried"' in jobs[job_id]


async def test_without_retries_a_busy_submit_raises_server_busy_and_is_not_stored() -> None:
    async with serving(ServerLimits(max_calls_in_flight=1)) as (server, stub):
        alpha = await register(stub, "alpha")
        slow = await start_slow_accept(server, stub, alpha)
        async with RainbowClient(server.address, retry=RetryPolicy.disabled()) as client:
            with pytest.raises(ServerBusyError) as info:
                await client.submit_job("alpha", alpha.token, "refused")
        assert info.value.retryable
        await slow
        assert await listed(stub, alpha) == {}


async def test_many_concurrent_submits_past_a_tight_bound_lose_nothing() -> None:
    """Past a tight bound, every submit through RainbowClient ends stored exactly once."""
    async with serving(ServerLimits(max_calls_in_flight=3, max_queued_writes=3)) as (
        server,
        stub,
    ):
        alpha = await register(stub, "alpha")
        slow = await start_slow_accept(server, stub, alpha)  # so that some are refused
        async with RainbowClient(
            server.address, retry=PATIENT, timeout=120, attempt_timeout=60
        ) as client:
            ids = await asyncio.gather(
                *(client.submit_job("alpha", alpha.token, f"job {n}") for n in range(100))
            )
        await slow
        assert server.busy_answers > 0
        jobs = await listed(stub, alpha)
        assert sorted(jobs) == sorted(ids)  # every id acknowledged, each stored once
        commands = {json.loads(text)["command"]: job_id for job_id, text in jobs.items()}
        assert commands == {f"job {n}": ids[n] for n in range(100)}


# -- the size of one answer ----------------------------------------------------------------


async def submit_many(stub: Stub, cluster: Cluster, count: int) -> None:
    """``count`` jobs whose commands all have the same length (so that any order of ids
    gives answers of the same size)."""
    for start in range(0, count, 100):
        await asyncio.gather(
            *(submit(stub, cluster, f"job {n:04d}") for n in range(start, start + 100))
        )


async def answer_size(stub: Stub, cluster: Cluster, max_jobs: int) -> int:
    resp = await stub.RequestJobs(
        pb.RequestJobsRequest(cluster=cluster.name, secret=cluster.secret, maxJobs=max_jobs)
    )
    return resp.ByteSize()


async def test_a_listing_over_the_size_limit_fails_clearly_and_is_never_cut_short() -> None:
    # measure the exact size of answers on a server without a tight limit
    async with serving(ServerLimits()) as (_, stub):
        alpha = await register(stub, "alpha")
        await submit_many(stub, alpha, 1200)  # more than two pieces of the store's listing
        whole = await answer_size(stub, alpha, 0)
        first_ten = await answer_size(stub, alpha, 10)

    for limit, fits in ((whole, True), (whole - 1, False)):
        async with serving(ServerLimits(max_response_bytes=limit)) as (_, stub):
            alpha = await register(stub, "alpha")
            await submit_many(stub, alpha, 1200)
            call = stub.RequestJobs(
                pb.RequestJobsRequest(cluster="alpha", secret=alpha.secret, maxJobs=0)
            )
            if fits:
                assert len((await call).jobs) == 1200
                continue
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert f"limit of {limit:,} bytes" in (info.value.details() or "")
            assert "maxJobs" in (info.value.details() or "")
            # a smaller listing works and nothing was lost
            assert await answer_size(stub, alpha, 10) == first_ten
            assert len(await listed(stub, alpha, 1199)) == 1199


async def test_client_reports_a_listing_over_the_size_limit_without_retrying() -> None:
    async with serving(ServerLimits(max_response_bytes=2000)) as (server, stub):
        alpha = await register(stub, "alpha")
        for n in range(100):
            await submit(stub, alpha, f"job {n}")
        async with RainbowClient(server.address) as client:
            with pytest.raises(ServerError) as info:
                await client.request_jobs("alpha", alpha.secret)
            assert not info.value.retryable
            assert "fewer jobs" in str(info.value)
            # the server's own limit: raising the client's receive limit would not help
            assert "max_response_bytes" not in str(info.value)
            jobs = await client.request_jobs("alpha", alpha.secret, max_jobs=5)
            assert [job.id for job in jobs] == sorted(job.id for job in jobs)
            assert len(jobs) == 5
        assert server.call_counts["RequestJobs"] == 2  # the refused listing was not retried


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_calls_in_flight": 0},
        {"max_queued_writes": -1},
        {"max_response_bytes": 0},
        {"max_calls_in_flight": True},
        {"max_queued_writes": 1.5},
        {"max_response_bytes": "256"},
        {"max_response_bytes": 2**31},
    ],
)
def test_bad_limits_are_refused_with_a_clear_error(kwargs: dict[str, object]) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        ServerLimits(**kwargs)  # type: ignore[arg-type]
    [name] = kwargs
    assert f"ServerLimits.{name}" in str(info.value)


def test_limits_are_frozen_and_shown_by_the_server() -> None:
    limits = ServerLimits(max_calls_in_flight=7)
    with pytest.raises(AttributeError):
        limits.max_calls_in_flight = 8  # type: ignore[misc]
    assert RainbowServer(limits=limits).limits is limits
    assert RainbowServer().limits == ServerLimits()
