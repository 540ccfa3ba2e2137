"""Hostile clients and careless operators, through the wire (issue 21).

Each test checks a structural property, never a timing: other clusters' calls complete
while one cluster's large accept or listing is still in progress; a request past a cap
is refused with the documented status and changes nothing; bytes held by calls count
until their answers are sent; a database file deleted or replaced under a running
server stops its writes; ids past int32 are refused before anything is stored.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import pytest

from rainbow_aio import _protocol as P
from rainbow_aio._proto import rainbow_pb2 as pb
from rainbow_aio._proto import rainbow_pb2_grpc as pb_grpc
from rainbow_aio.server import RainbowServer, ServerLimits

from ._helpers import SECRET, called, listed, register, submit

Stub = pb_grpc.RainbowSchedulerStub
BIG = 64 << 20
BIG_OPTIONS = [("grpc.max_receive_message_length", BIG), ("grpc.max_send_message_length", BIG)]


@asynccontextmanager
async def serving(
    limits: ServerLimits | None = None, db: str | Path = ":memory:"
) -> AsyncIterator[tuple[RainbowServer, Stub]]:
    async with (
        RainbowServer("127.0.0.1:0", secret=SECRET, limits=limits, db=db) as server,
        grpc.aio.insecure_channel(server.address, options=BIG_OPTIONS) as channel,
    ):
        yield server, pb_grpc.RainbowSchedulerStub(channel)


async def rpc_error(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    return info.value


# -- AcceptJobs: a cap on ids, and short transactions -------------------------------------


async def test_an_accept_past_the_id_cap_is_refused_and_deletes_nothing() -> None:
    async with serving(ServerLimits(max_accept_ids=10)) as (_, stub):
        alpha = await register(stub, "alpha")
        ids = [await submit(stub, alpha, f"job {n}") for n in range(3)]
        error = await rpc_error(
            stub.AcceptJobs(
                pb.AcceptJobsRequest(cluster="alpha", secret=alpha.secret, jobids=ids * 4)
            )
        )
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (error.details() or "").startswith("too many job ids: 12 job ids in one call")
        assert "at most 10" in (error.details() or "")
        assert sorted(await listed(stub, alpha)) == ids  # nothing deleted
        # at the cap it works, and duplicates still make it PARTIAL as on the Go server
        answer = await stub.AcceptJobs(
            pb.AcceptJobsRequest(cluster="alpha", secret=alpha.secret, jobids=[*ids, *ids[:1]])
        )
        assert answer.status == pb.AcceptJobsResponse.RESULT_TYPE_PARTIAL
        assert await listed(stub, alpha) == {}


async def test_the_default_cap_refuses_four_million_ids_at_once() -> None:
    """The issue's attack: 4,000,000 one-byte ids, refused before any is deleted."""
    async with serving() as (_, stub):
        alpha = await register(stub, "alpha")
        job = await submit(stub, alpha)
        error = await rpc_error(
            stub.AcceptJobs(
                pb.AcceptJobsRequest(cluster="alpha", secret=alpha.secret, jobids=[job] * 4_000_000)
            )
        )
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "at most 100,000" in (error.details() or "")
        assert list(await listed(stub, alpha)) == [job]


async def test_other_clusters_are_served_while_a_large_accept_is_in_progress() -> None:
    """An accept of 300,000 ids runs in short transactions: another cluster's submit,
    listing and accept all complete before it does."""
    async with serving(ServerLimits(max_accept_ids=300_000)) as (server, stub):
        alpha, beta = await register(stub, "alpha"), await register(stub, "beta")
        mine = [await submit(stub, alpha, f"mine {n}") for n in range(3)]
        slow = asyncio.ensure_future(
            stub.AcceptJobs(
                pb.AcceptJobsRequest(
                    cluster="alpha",
                    secret=alpha.secret,
                    jobids=[*mine, *range(10**9, 10**9 + 300_000 - 3)],
                ),
                timeout=120,
            )
        )
        await called(server, "AcceptJobs", 1)
        job = await submit(stub, beta, "served meanwhile")
        assert list(await listed(stub, beta)) == [job]
        done = await stub.AcceptJobs(
            pb.AcceptJobsRequest(cluster="beta", secret=beta.secret, jobids=[job])
        )
        assert done.status == pb.AcceptJobsResponse.RESULT_TYPE_SUCCESS
        assert not slow.done()
        assert (await slow).status == pb.AcceptJobsResponse.RESULT_TYPE_PARTIAL
        assert await listed(stub, alpha) == {}  # its own jobs were deleted


# -- listings of large jobs -------------------------------------------------------------


async def test_a_listing_of_large_jobs_is_refused_before_it_is_built_whole() -> None:
    """Ten jobs of a 3.9 MB command of ``&`` (23 MB of JSON each) against a 50 MB limit:
    refused with the first two counted as fitting, and the jobs are all still there."""
    command = "&" * 3_900_000
    limit = 50 << 20
    async with serving(ServerLimits(max_response_bytes=limit)) as (_, stub):
        alpha = await register(stub, "alpha")
        ids = [await submit(stub, alpha, command) for _ in range(10)]
        error = await rpc_error(
            stub.RequestJobs(pb.RequestJobsRequest(cluster="alpha", secret=alpha.secret))
        )
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "(the first 2 would fit)" in (error.details() or "")
        two = await listed(stub, alpha, 2)
        assert sorted(two) == ids[:2]
        assert json.loads(two[ids[0]])["command"] == command


async def test_other_clusters_are_served_while_a_listing_of_large_jobs_is_built() -> None:
    """A listing of 30 jobs of 23 MB of JSON each is built one job per piece: another
    cluster's submit and listing complete before it does."""
    async with serving(ServerLimits(max_response_bytes=P.INT32_MAX)) as (server, stub):
        alpha, beta = await register(stub, "alpha"), await register(stub, "beta")
        for _ in range(30):
            await submit(stub, alpha, "&" * 3_900_000)
        big = asyncio.ensure_future(
            stub.RequestJobs(
                pb.RequestJobsRequest(cluster="alpha", secret=alpha.secret, maxJobs=0),
                timeout=300,
            )
        )
        await called(server, "RequestJobs", 1)
        job = await submit(stub, beta, "served meanwhile")
        assert list(await listed(stub, beta)) == [job]
        assert not big.done()
        big.cancel()  # (its answer would pass the channel's receive limit anyway)


# -- limits in bytes, for every RPC -------------------------------------------------------


async def test_serial_counts_its_bytes_until_answered() -> None:
    """Serial needs no credential, yet it is counted: past the bytes held by a large
    call in progress, a large Serial is answered 'database is locked'; a small one, or
    the same one once the large call has ended, goes through."""
    limits = ServerLimits(max_held_bytes=4 << 20, max_accept_ids=300_000)
    async with serving(limits) as (server, stub):
        alpha = await register(stub, "alpha")
        slow = asyncio.ensure_future(
            stub.AcceptJobs(
                pb.AcceptJobsRequest(
                    cluster="alpha",
                    secret=alpha.secret,
                    jobids=range(10**9, 10**9 + 300_000),  # 1.5 MB of ids, counted twice
                ),
                timeout=120,
            )
        )
        await called(server, "AcceptJobs", 1)
        large = pb.Request(content=pb.Content(id="x" * (1 << 20)))
        error = await rpc_error(stub.Serial(large))
        assert (error.code(), error.details()) == (grpc.StatusCode.UNKNOWN, P.DETAILS_DB_LOCKED)
        small = await stub.Serial(pb.Request(content=pb.Content(id="small")))
        assert small.request_id == "small"
        assert not slow.done()
        await slow
        assert (await stub.Serial(large)).request_id == large.content.id
        assert server.busy_answers == 1


async def test_one_connection_gets_no_more_streams_than_advertised() -> None:
    """With 2 streams per connection, a third call on the same connection does not reach
    the server until one of the first two ends."""
    async with serving(ServerLimits(max_streams_per_connection=2)) as (server, stub):
        await stub.Serial(pb.Request())  # the connection is up and its settings known
        calls = [stub.Stream(timeout=60) for _ in range(3)]
        for n, call in enumerate(calls[:2]):
            await call.write(pb.Request(content=pb.Content(id=str(n))))
            assert (await call.read()).request_id == str(n)
        # the third waits on the client's side for a stream: its first message cannot go
        third = asyncio.ensure_future(calls[2].write(pb.Request(content=pb.Content(id="2"))))
        await called(server, "Serial", 1)
        await asyncio.sleep(0)
        assert server.call_counts["Stream"] == 2
        assert not third.done()
        await calls[0].done_writing()
        assert await calls[0].code() == grpc.StatusCode.UNKNOWN  # the Go server's EOF
        await third
        assert (await calls[2].read()).request_id == "2"
        assert server.call_counts["Stream"] == 3
        for call in calls[1:]:
            call.cancel()


# -- the database file under a running server ---------------------------------------------


@pytest.mark.parametrize("how", ["deleted", "replaced"])
async def test_a_database_file_gone_under_the_server_stops_its_writes(
    tmp_path: Path, how: str
) -> None:
    db = tmp_path / "r.db"
    async with serving(db=db) as (server, stub):
        alpha = await register(stub, "alpha")
        kept = await submit(stub, alpha, "before")
        for name in (db, Path(f"{db}-wal")):
            if how == "deleted":
                name.unlink()
            else:
                name.rename(f"{name}.old")
                name.write_bytes(b"")
        error = await rpc_error(
            stub.SubmitJob(
                pb.SubmitJobRequest(cluster="alpha", token=alpha.token, command="into the void")
            )
        )
        assert error.code() == grpc.StatusCode.UNKNOWN
        assert "database file was deleted or replaced" in (error.details() or "")
        # and every write after it, without touching the file
        again = await rpc_error(stub.Register(pb.RegisterRequest(name="beta", secret=SECRET)))
        assert again.details() == error.details()
        assert list(await listed(stub, alpha)) == [kept]  # reads still answer
        assert server.running


async def test_cleanup_of_a_database_in_use_fails_before_deleting_anything(
    tmp_path: Path,
) -> None:
    db = tmp_path / "r.db"
    async with serving(db=db) as (_, stub):
        alpha = await register(stub, "alpha")
        job = await submit(stub, alpha)
        files = sorted(os.listdir(tmp_path))
        second = RainbowServer("127.0.0.1:0", secret=SECRET, db=db, cleanup=True)
        with pytest.raises(Exception, match="database is locked"):
            await second.start()
        assert sorted(os.listdir(tmp_path)) == files
        assert list(await listed(stub, alpha)) == [job]
        assert await submit(stub, alpha, "still stored") > job


# -- ids past int32 -------------------------------------------------------------------------


async def test_a_submit_past_int32_is_refused_before_it_is_stored(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    async with serving(db=db) as (_, stub):
        alpha = await register(stub, "alpha")
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('jobs', ?)", (P.INT32_MAX - 1,))
    conn.close()
    async with serving(db=db) as (_, stub):
        last = await submit(stub, alpha, "the last id")
        assert last == P.INT32_MAX
        error = await rpc_error(
            stub.SubmitJob(pb.SubmitJobRequest(cluster="alpha", token=alpha.token, command="x"))
        )
        assert error.code() == grpc.StatusCode.UNKNOWN
        assert (error.details() or "").startswith("job ids are exhausted")
        assert list(await listed(stub, alpha)) == [last]  # nothing else stored
        answer = await stub.AcceptJobs(
            pb.AcceptJobsRequest(cluster="alpha", secret=alpha.secret, jobids=[last])
        )
        assert answer.status == pb.AcceptJobsResponse.RESULT_TYPE_SUCCESS


async def test_a_stored_row_past_int32_never_breaks_a_listing(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    async with serving(db=db) as (_, stub):
        alpha = await register(stub, "alpha")
        job = await submit(stub, alpha, "ordinary")
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute(
        "INSERT INTO jobs (id, cluster, name, nodes, tasks, command) "
        "VALUES (?, 'alpha', 'huge', 1, 0, 'x')",
        (P.INT32_MAX + 1,),
    )
    conn.close()
    async with serving(db=db) as (_, stub):
        assert list(await listed(stub, alpha)) == [job]
        assert list(await listed(stub, alpha, 5)) == [job]
