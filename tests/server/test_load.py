"""Concurrent load: every acknowledged submit is stored, nothing else is, ids distinct."""

from __future__ import annotations

import asyncio
import json

from rainbow_aio._proto import rainbow_pb2 as pb
from rainbow_aio._proto import rainbow_pb2_grpc as pb_grpc

from ._helpers import SECRET, Cluster, listed, register, submit


async def test_500_concurrent_submits_are_all_stored_exactly_once(
    stub: pb_grpc.RainbowSchedulerStub, alpha: Cluster
) -> None:
    async def one(n: int) -> tuple[int, int]:
        resp = await stub.SubmitJob(
            pb.SubmitJobRequest(
                name=f"job-{n}", cluster=alpha.name, token=alpha.token, nodes=1, command=str(n)
            ),
            timeout=30,
        )
        assert resp.status == pb.SubmitJobResponse.SUBMIT_SUCCESS
        return n, resp.jobid

    acked = await asyncio.gather(*(one(n) for n in range(500)))
    ids = [job_id for _, job_id in acked]
    assert len(set(ids)) == 500
    jobs = await listed(stub, alpha)
    assert set(jobs) == set(ids)
    for n, job_id in acked:
        assert json.loads(jobs[job_id])["command"] == str(n)


async def test_mixed_concurrent_load_never_fails(stub: pb_grpc.RainbowSchedulerStub) -> None:
    """Registers, submits, lists and accepts racing each other all succeed."""
    clusters = await asyncio.gather(*(register(stub, f"c{i}") for i in range(8)))

    async def worker(cluster: Cluster) -> set[int]:
        taken: set[int] = set()
        for n in range(25):
            resp = await stub.SubmitJob(
                pb.SubmitJobRequest(cluster=cluster.name, token=cluster.token, command=str(n)),
                timeout=30,
            )
            jobs = await listed(stub, cluster, max_jobs=3)
            assert resp.jobid in jobs or len(jobs) == 3
            if n % 5 == 4:
                ids = list(jobs)
                acc = await stub.AcceptJobs(
                    pb.AcceptJobsRequest(cluster=cluster.name, secret=cluster.secret, jobids=ids),
                    timeout=30,
                )
                assert acc.status == pb.AcceptJobsResponse.RESULT_TYPE_SUCCESS
                taken.update(ids)
        return taken

    results = await asyncio.gather(*(worker(c) for c in clusters))
    for cluster, taken in zip(clusters, results, strict=True):
        remaining = await listed(stub, cluster)
        assert not taken & set(remaining)
        assert len(taken) + len(remaining) == 25


async def test_concurrent_registrations_of_one_name_give_one_success(
    stub: pb_grpc.RainbowSchedulerStub,
) -> None:
    answers = await asyncio.gather(
        *(
            stub.Register(pb.RegisterRequest(name="contested", secret=SECRET), timeout=30)
            for _ in range(20)
        )
    )
    statuses = sorted(a.status for a in answers)
    assert statuses.count(pb.RegisterResponse.REGISTER_SUCCESS) == 1
    assert statuses.count(pb.RegisterResponse.REGISTER_EXISTS) == 19
    [winner] = [a for a in answers if a.status == pb.RegisterResponse.REGISTER_SUCCESS]
    await submit(stub, Cluster("contested", winner.token, winner.secret))


async def test_each_job_is_claimed_by_exactly_one_concurrent_accept(
    stub: pb_grpc.RainbowSchedulerStub, alpha: Cluster
) -> None:
    ids = [await submit(stub, alpha, str(n)) for n in range(40)]

    async def claim(job_id: int) -> bool:
        resp = await stub.AcceptJobs(
            pb.AcceptJobsRequest(cluster=alpha.name, secret=alpha.secret, jobids=[job_id]),
            timeout=30,
        )
        return bool(resp.status == pb.AcceptJobsResponse.RESULT_TYPE_SUCCESS)

    wins = await asyncio.gather(*(claim(job_id) for job_id in ids for _ in range(5)))
    per_job = [sum(wins[i * 5 : i * 5 + 5]) for i in range(len(ids))]
    assert per_job == [1] * len(ids)
    assert await listed(stub, alpha) == {}
