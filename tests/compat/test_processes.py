"""Shared accept mode from two OS processes against the Go server: each job one owner.

Two processes poll the same clusters with ``accept_mode="shared"`` and accept every job
they are handed. The Go server deletes a job once; an AcceptJobs for one id that comes
back PARTIAL means the other process took it. So every job the server stored must be
owned by exactly one of them, and neither may be left uncertain.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from support.gofixtures import MakeGoCluster
from support.goserver import GoServer
from support.scripts import ROOT

pytestmark = pytest.mark.compat

WORKER = Path(__file__).with_name("_shared_worker.py")


async def test_two_processes_in_shared_mode_own_each_job_once(
    go_server: GoServer, make_go_cluster: MakeGoCluster
) -> None:
    clusters = [await make_go_cluster(jobs=40, prefix="shared") for _ in range(4)]
    secrets = json.dumps({c.name: c.secret for c in clusters}).encode() + b"\n"
    stored = {job.id: job.command for c in clusters for job in go_server.stored_jobs(c.name)}
    workers = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            str(WORKER),
            go_server.address,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(ROOT / "tests")},
        )
        for _ in range(2)
    ]
    results: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(120):
            for worker in workers:
                assert worker.stdin is not None
                assert worker.stdout is not None
                worker.stdin.write(secrets)
                await worker.stdin.drain()
                assert (await worker.stdout.readline()).strip() == b"ready"
            for worker in workers:  # both start consuming at once
                assert worker.stdin is not None
                worker.stdin.write(b"go\n")
                await worker.stdin.drain()
            left = await go_server.wait_drained(60)
            for worker in workers:
                out, _ = await worker.communicate(b"stop\n")
                assert worker.returncode == 0
                results.append(json.loads(out.decode().splitlines()[-1]))
    finally:
        for worker in workers:
            if worker.returncode is None:
                worker.kill()
                await worker.wait()
    assert left == []
    owned = [{int(i): c for i, c in r["commands"].items()} for r in results]
    assert not owned[0].keys() & owned[1].keys()
    assert owned[0] | owned[1] == stored  # each stored job, with its command, owned once
    for result in results:
        assert result["owned_twice"] == []
        assert result["uncertain"] == []
        assert result["refused"] == {}
        assert result["errors"] == {}
    # the two really competed: each took some jobs, and some accepts found the job gone
    assert all(owned)
    assert sum(r["lost"] for r in results) > 0, [
        (len(o), r["lost"]) for o, r in zip(owned, results, strict=True)
    ]
