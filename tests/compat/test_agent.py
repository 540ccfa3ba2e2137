"""The agent (a real ``rainbow-aio agent`` process) against the Go server: it runs what
fits, refuses what never fits (left on the server), and after a kill -9 its restart
reconciles and re-attaches without running anything twice."""

from __future__ import annotations

import asyncio
import os
import signal
from collections import Counter
from pathlib import Path

import pytest
from support.agents import Site, agent_process, kill_job_processes, wait_until
from support.gofixtures import MakeGoCluster
from support.goserver import GoServer

from rainbow_aio import RainbowClient
from rainbow_aio.agent import JobStateName

pytestmark = pytest.mark.compat

S = JobStateName


async def test_agent_runs_refuses_and_survives_kill_9(
    go_server: GoServer, go_client: RainbowClient, make_go_cluster: MakeGoCluster, tmp_path: Path
) -> None:
    cluster = await make_go_cluster()
    site = Site(go_client, go_server, cluster.name, cluster.token, cluster.secret, tmp_path)
    out = tmp_path / "out"
    for i in range(30):  # the Go server answers jobid 0: the journal has the real ids
        await go_client.submit_job(
            cluster.name, cluster.token, f"sh -c 'sleep 0.05; echo t{i} >> {out}'", nodes=1 + i % 2
        )
    await go_client.submit_job(cluster.name, cluster.token, "true", nodes=3)
    log = tmp_path / "agent.log"

    def finished() -> int:
        return sum(r.state is S.FINISHED for r in site.records().values())

    try:
        async with agent_process(site, "--nodes", "2", stderr=log) as proc:
            await wait_until(lambda: finished() >= 5, within=60, what="some jobs to finish")
            os.kill(proc.pid, signal.SIGKILL)
            await proc.wait()
        async with agent_process(site, "--nodes", "2", stderr=log) as proc:
            await wait_until(lambda: finished() == 30, within=120, what="every job to finish")
            await wait_until(
                lambda: any(r.state is S.REFUSED for r in site.records().values()),
                what="the refusal",
            )
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 60) == 0
    finally:
        kill_job_processes(site.workdir)
    records = site.records()
    listed = await go_client.request_jobs(cluster.name, cluster.secret)
    assert [job.nodes for job in listed] == [3]  # only the job that never fits is left
    assert [r.id for r in records.values() if r.state is S.REFUSED] == [listed[0].id]
    seen = Counter(out.read_text().split())
    assert sorted(seen) == sorted(f"t{i}" for i in range(30))
    assert set(seen.values()) == {1}
    assert cluster.secret not in log.read_text()
