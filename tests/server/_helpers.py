"""Helpers for the server tests: register, submit and list through the raw stubs."""

from __future__ import annotations

from dataclasses import dataclass

from rainbow_aio._proto import rainbow_pb2 as pb
from rainbow_aio._proto import rainbow_pb2_grpc as pb_grpc

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
