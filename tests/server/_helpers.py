"""Helpers for the server tests: register, submit and list through the raw stubs."""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from rainbow_aio._proto import rainbow_pb2 as pb
from rainbow_aio._proto import rainbow_pb2_grpc as pb_grpc
from rainbow_aio.server import RainbowServer

SECRET = "test-registration-secret"


@dataclass(frozen=True)
class Cluster:
    name: str
    token: str
    secret: str


async def register(stub: pb_grpc.RainbowSchedulerStub, name: str) -> Cluster:
    resp = await stub.Register(pb.RegisterRequest(name=name, secret=SECRET), timeout=10)
    assert resp.status == pb.RegisterResponse.REGISTER_SUCCESS
    return Cluster(name, resp.token, resp.secret)


async def submit(
    stub: pb_grpc.RainbowSchedulerStub,
    cluster: Cluster,
    command: str = "echo hello",
    *,
    name: str = "job",
    nodes: int = 1,
    tasks: int = 0,
) -> int:
    resp = await stub.SubmitJob(
        pb.SubmitJobRequest(
            name=name,
            cluster=cluster.name,
            token=cluster.token,
            nodes=nodes,
            tasks=tasks,
            command=command,
        ),
        timeout=10,
    )
    assert resp.status == pb.SubmitJobResponse.SUBMIT_SUCCESS
    return int(resp.jobid)


async def listed(
    stub: pb_grpc.RainbowSchedulerStub, cluster: Cluster, max_jobs: int = 0
) -> dict[int, str]:
    resp = await stub.RequestJobs(
        pb.RequestJobsRequest(cluster=cluster.name, secret=cluster.secret, maxJobs=max_jobs),
        timeout=10,
    )
    return dict(resp.jobs)


def fill(db: Path, cluster: str, count: int, command: str = "echo {i}") -> range:
    """Write ``count`` waiting jobs for ``cluster`` straight into a stopped server's file
    (SubmitJob would take minutes for the backlogs these tests need); their ids.

    The server must have created the file (and registered the cluster) first.
    """
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        (before,) = conn.execute("SELECT COALESCE(MAX(id), 0) FROM jobs").fetchone()
        conn.executemany(
            "INSERT INTO jobs (cluster, name, nodes, tasks, command) VALUES (?, ?, 1, 0, ?)",
            ((cluster, f"job-{i}", command.format(i=i)) for i in range(count)),
        )
        first, last = conn.execute(
            "SELECT MIN(id), MAX(id) FROM jobs WHERE id > ?", (before,)
        ).fetchone()
        conn.execute("COMMIT")
    finally:
        conn.close()
    assert last - first + 1 == count
    return range(first, last + 1)


async def called(server: RainbowServer, rpc: str, count: int) -> None:
    """Wait until the in-process server has taken ``count`` calls of ``rpc``."""
    async with asyncio.timeout(30):
        while server.call_counts[rpc] < count:  # noqa: ASYNC110 - a counter, no event
            await asyncio.sleep(0.001)
