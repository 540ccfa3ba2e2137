"""Fixtures for the poller tests: clusters with jobs on the embedded server.

Every test polls a real ``RainbowServer`` over loopback (the ``rainbow_server`` and
``rainbow_client`` fixtures come from the ``rainbow_aio.testing`` plugin). Pollers use
short intervals (``FAST``) so a test never waits long for the next poll; tests wait on
conditions with a timeout (``wait_until``), never on a bare sleep.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pytest
from support.waiting import wait_until as support_wait_until

from rainbow_aio import RainbowClient, RainbowServer

FAST: dict[str, float] = {"min_interval": 0.01, "max_interval": 0.05}
"""Poller options that keep idle polls close together in tests."""


@dataclass
class Cluster:
    name: str
    token: str = field(repr=False)
    secret: str = field(repr=False)
    ids: list[int] = field(default_factory=list)  # of the jobs submitted, ascending


async def submit(client: RainbowClient, cluster: Cluster, count: int) -> list[int]:
    """Submit ``count`` jobs (a few at a time) and return their ids, ascending."""
    ids: list[int] = []
    for start in range(0, count, 50):
        batch = [
            client.submit_job(cluster.name, cluster.token, f"echo {i}", name=f"j{i}")
            for i in range(start, min(count, start + 50))
        ]
        for job_id in await asyncio.gather(*batch):
            assert job_id is not None
            ids.append(job_id)
    # concurrent submits are stored (and numbered) in any order: keep the ids ascending
    cluster.ids.extend(ids)
    cluster.ids.sort()
    return sorted(ids)


async def waiting(client: RainbowClient, cluster: Cluster) -> set[int]:
    """The ids the server still lists for ``cluster`` (all of them)."""
    return {job.id for job in await client.request_jobs(cluster.name, cluster.secret)}


async def wait_until(
    condition: Callable[[], bool], *, within: float = 15.0, what: str = "condition"
) -> None:
    """Wait until ``condition()`` holds, checking every few ms; fail after ``within`` s.

    For conditions on counters (stats, queue sizes) that no event announces.
    """
    await support_wait_until(condition, within=within, what=what, every=0.002)


MakeCluster = Callable[..., Awaitable[Cluster]]


@pytest.fixture
def make_cluster(rainbow_client: RainbowClient, rainbow_server: RainbowServer) -> MakeCluster:
    """``await make_cluster(jobs=N)``: a newly registered cluster with N jobs waiting."""
    counter = itertools.count(1)

    async def make(jobs: int = 0, *, name: str | None = None) -> Cluster:
        name = name or f"cluster-{next(counter)}"
        reg = await rainbow_client.register(name, rainbow_server.secret)
        cluster = Cluster(name, reg.token, reg.secret)
        if jobs:
            await submit(rainbow_client, cluster, jobs)
        return cluster

    return make
