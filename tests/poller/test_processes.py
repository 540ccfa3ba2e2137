"""Two OS processes share one cluster in the shared accept mode: each job has one owner."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from rainbow_aio import RainbowClient, RainbowServer

from .conftest import MakeCluster, waiting

WORKER = Path(__file__).with_name("_shared_worker.py")


async def test_two_processes_in_shared_mode_own_each_job_exactly_once(
    rainbow_client: RainbowClient, rainbow_server: RainbowServer, make_cluster: MakeCluster
) -> None:
    cluster = await make_cluster(jobs=300)
    workers = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            str(WORKER),
            rainbow_server.address,
            cluster.name,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        for _ in range(2)
    ]
    try:
        async with asyncio.timeout(60):
            for worker in workers:
                assert worker.stdin is not None
                assert worker.stdout is not None
                worker.stdin.write(cluster.secret.encode() + b"\n")
                await worker.stdin.drain()
                assert (await worker.stdout.readline()).strip() == b"ready"
            for worker in workers:  # both start polling at the same moment
                assert worker.stdin is not None
                worker.stdin.write(b"go\n")
                await worker.stdin.drain()
            results: list[dict[str, Any]] = []
            for worker in workers:
                out, _ = await worker.communicate()
                assert worker.returncode == 0
                results.append(json.loads(out.decode().strip().splitlines()[-1]))
    finally:
        for worker in workers:
            if worker.returncode is None:
                worker.kill()
                await worker.wait()
    a, b = (set(r["owned"]) for r in results)
    assert not a & b
    assert a | b == set(cluster.ids)
    assert all(r["uncertain"] == [] for r in results)
    assert all(r["accept_calls"] >= len(r["owned"]) for r in results)  # one id per call
    assert await waiting(rainbow_client, cluster) == set()
