"""A large backlog: waiting jobs live in the database, not in memory; listings are exact at
every size, read through the (cluster, id) index, and a long one holds up no other call.

The figures (RSS at a million jobs, restart time, listing cost) are measured by
``python -m benchmarks run --only server``; these tests check the behaviour behind them.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from pathlib import Path

import grpc
import pytest

from rainbow_aio._gojson import encode_job
from rainbow_aio._proto import rainbow_pb2 as pb
from rainbow_aio._proto import rainbow_pb2_grpc as pb_grpc
from rainbow_aio.server import RainbowServer
from rainbow_aio.server._listing import PIECE_ROWS
from rainbow_aio.server._store import LIST_JOBS
from rainbow_aio.testing import ServerProcess

from ._helpers import SECRET, Cluster, called, fill, listed, register, submit

Stub = pb_grpc.RainbowSchedulerStub
UNLIMITED = [("grpc.max_receive_message_length", -1)]


def rss(pid: int | None) -> int:
    assert pid is not None
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def test_waiting_jobs_are_not_held_in_memory(tmp_path: Path) -> None:
    """100 MB of waiting jobs' JSON cost the server process no such memory."""
    db = tmp_path / "big.db"
    async with ServerProcess(db, secret=SECRET) as proc:
        async with grpc.aio.insecure_channel(proc.address) as channel:
            stub = pb_grpc.RainbowSchedulerStub(channel)
            alpha = await register(stub, "alpha")
            await submit(stub, alpha, "first")
            assert len(await listed(stub, alpha, 10)) == 1
        empty = rss(proc.pid)
        await proc.stop()
        ids = await asyncio.to_thread(fill, db, "alpha", 50_000, "x" * 2000 + " {i}")
        await proc.start()
        async with grpc.aio.insecure_channel(proc.address) as channel:
            stub = pb_grpc.RainbowSchedulerStub(channel)
            jobs = await listed(stub, alpha, 10)
            assert len(jobs) == 10
            assert json.loads(jobs[ids[8]])["command"] == "x" * 2000 + " 8"
            await submit(stub, alpha, "last")
        grown = rss(proc.pid) - empty
    assert grown < 30 << 20, f"RSS grew by {grown >> 20} MB for ~100 MB of waiting jobs"


def lowest(jobs: dict[int, str], k: int) -> dict[int, str]:
    ids = sorted(jobs)
    return {i: jobs[i] for i in (ids if k <= 0 else ids[:k])}


async def test_listings_are_exact_across_pieces_clusters_and_accepted_holes(
    stub: Stub, alpha: Cluster, beta: Cluster
) -> None:
    # ids of the two clusters interleave, and some of alpha's are accepted
    for start in range(0, 2 * PIECE_ROWS + 200, 100):
        batch = range(start, start + 100)
        await asyncio.gather(*(submit(stub, c, f"{n}") for n in batch for c in (alpha, beta)))
    everything = await listed(stub, alpha)
    assert len(everything) == 2 * PIECE_ROWS + 200
    holes = sorted(everything)[::3]
    acc = await stub.AcceptJobs(
        pb.AcceptJobsRequest(cluster="alpha", secret=alpha.secret, jobids=holes)
    )
    assert acc.status == pb.AcceptJobsResponse.RESULT_TYPE_SUCCESS
    model = {i: text for i, text in everything.items() if i not in holes}
    beta_ids = set(await listed(stub, beta))
    for k in (0, -5, 1, 10, PIECE_ROWS - 1, PIECE_ROWS, PIECE_ROWS + 1, 2 * PIECE_ROWS, 5000):
        got = await listed(stub, alpha, k)
        assert got == lowest(model, k), k
        assert not set(got) & beta_ids
        assert all(json.loads(text)["cluster"] == "alpha" for text in got.values())


async def test_listing_reads_the_cluster_index_in_id_order(tmp_path: Path) -> None:
    """RequestJobs(maxJobs k) is a range scan of the (cluster, id) index, with no sort,
    so it reads k rows whatever the size or history of the table."""
    db = tmp_path / "plan.db"
    async with RainbowServer(db=db, secret=SECRET):
        pass
    conn = sqlite3.connect(db)
    try:
        plan = " ".join(
            row[-1] for row in conn.execute(f"EXPLAIN QUERY PLAN {LIST_JOBS}", ("a", 0, 10))
        )
    finally:
        conn.close()
    assert "USING INDEX jobs_by_cluster (cluster=? AND id>? AND id<?)" in plan, plan
    assert "TEMP B-TREE" not in plan, plan


async def with_backlog(
    tmp_path: Path, count: int, *names: str
) -> tuple[RainbowServer, list[Cluster], range]:
    """A stopped in-process server on a file with these clusters, the first of which has
    ``count`` jobs waiting (their ids)."""
    server = RainbowServer(db=tmp_path / "big.db", secret=SECRET)
    async with server, grpc.aio.insecure_channel(server.address) as channel:
        stub = pb_grpc.RainbowSchedulerStub(channel)
        clusters = [await register(stub, name) for name in names]
    ids = await asyncio.to_thread(fill, tmp_path / "big.db", names[0], count)
    return server, clusters, ids


async def test_small_calls_are_answered_while_a_huge_listing_is_built(tmp_path: Path) -> None:
    server, (alpha, beta), ids = await with_backlog(tmp_path, 150_000, "alpha", "beta")
    async with (
        server,
        grpc.aio.insecure_channel(server.address, options=UNLIMITED) as big_channel,
        grpc.aio.insecure_channel(server.address) as channel,
    ):
        big = asyncio.ensure_future(
            pb_grpc.RainbowSchedulerStub(big_channel).RequestJobs(
                pb.RequestJobsRequest(cluster="alpha", secret=alpha.secret, maxJobs=0),
                timeout=120,
            )
        )
        await called(server, "RequestJobs", 1)
        stub = pb_grpc.RainbowSchedulerStub(channel)
        job_id = await submit(stub, beta, "meanwhile")
        assert list(await listed(stub, beta, 10)) == [job_id]
        head = await listed(stub, alpha, 3)
        assert not big.done(), "the small calls waited for the whole listing"
        assert list(head) == list(ids[:3])
        answer = await big
        assert sorted(answer.jobs) == list(ids)


async def test_a_listing_given_up_by_its_caller_leaves_the_server_serving(
    tmp_path: Path,
) -> None:
    server, (alpha,), ids = await with_backlog(tmp_path, 100_000, "alpha")
    async with server, grpc.aio.insecure_channel(server.address, options=UNLIMITED) as channel:
        stub = pb_grpc.RainbowSchedulerStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.RequestJobs(
                pb.RequestJobsRequest(cluster="alpha", secret=alpha.secret, maxJobs=0),
                timeout=0.05,
            )
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert list(await listed(stub, alpha, 10)) == list(ids[:10])
        assert len(await listed(stub, alpha)) == len(ids)


async def test_listed_json_is_each_job_encoded_alone_in_pieces_plain_or_not(
    tmp_path: Path,
) -> None:
    """A listing encodes a piece's jobs together, checking once whether any needs
    escaping: pieces with and without such a job list the JSON of each job alone."""
    specials = ["a && b", 'say "hi"', "tab\there", "\x00", "x > y", "é", "\u2028", "back\\"]
    db = tmp_path / "mixed.db"
    server = RainbowServer(db=db, secret=SECRET)
    async with server, grpc.aio.insecure_channel(server.address) as channel:
        alpha = await register(pb_grpc.RainbowSchedulerStub(channel), "alpha")
    rows = []
    for i in range(3 * PIECE_ROWS):
        odd = (
            specials[i % len(specials)] if PIECE_ROWS <= i < 2 * PIECE_ROWS and i % 97 == 0 else ""
        )
        rows.append(
            (f"job-{i}{odd if i % 2 else ''}", i % 5, i % 3, f"echo {i}{odd if not i % 2 else ''}")
        )
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("BEGIN")
        ids = [
            conn.execute(
                "INSERT INTO jobs (cluster, name, nodes, tasks, command) "
                "VALUES ('alpha', ?, ?, ?, ?)",
                row,
            ).lastrowid
            for row in rows
        ]
        conn.execute("COMMIT")
    finally:
        conn.close()
    async with (
        RainbowServer(db=db, secret=SECRET) as server,
        grpc.aio.insecure_channel(server.address, options=UNLIMITED) as channel,
    ):
        got = await listed(pb_grpc.RainbowSchedulerStub(channel), alpha)
    assert got == {i: encode_job(i, "alpha", *row) for i, row in zip(ids, rows, strict=True)}
