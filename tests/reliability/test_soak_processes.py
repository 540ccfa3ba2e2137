"""Soak: three OS processes accept the same clusters' jobs in shared mode, through a chaos
proxy, while the server is SIGKILLed and restarted.

1. ``rainbow-aio serve`` runs as a child process on a database file.
2. Three worker processes (``_soak_worker.py``) poll every cluster through one seeded
   chaos proxy that drops, stalls and refuses connections, and accept every job they are
   handed (``accept_mode="shared"``). Each journals every outcome the moment it knows it.
3. The test submits jobs directly to the server (an acknowledged submit returns the job
   id) and SIGKILLs and restarts the server, on the same database and port, at set
   fractions of the acknowledged jobs.
4. After the last submit the chaos stops; once the server lists no job, the workers are
   told to stop and their journals are joined.

Checked: no job is owned by two processes; no job is left on the server; a job is never
both owned and reported lost by one process; every acknowledged job is owned by exactly
one process, except where an accept lost its answer and its repeat came back PARTIAL:
such a job is reported uncertain, and is owned by no process (the process that reported
it took it with the lost attempt, which the join of the journals shows when only one
process reported it). No acknowledged job is gone without being owned or reported.
"""

from __future__ import annotations

import asyncio
import collections
import json
import random
import sys
from pathlib import Path
from typing import Any

import pytest
from support.chaos import ChaosProxy

from rainbow_aio import RainbowClient, RainbowError, RetryPolicy
from rainbow_aio.testing import ServerProcess

WORKER = Path(__file__).with_name("_soak_worker.py")
FIGURES_FILE = Path(__file__).with_name("soak-processes-figures.json")

CLUSTERS = 6
JOBS = 3000
RESTARTS = 3
PROCESSES = 3
SEED = 20261130


async def start_worker(address: str, journal: Path, secrets: dict[str, str]) -> Any:
    worker = await asyncio.create_subprocess_exec(
        sys.executable,
        str(WORKER),
        address,
        str(journal),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert worker.stdin is not None
    assert worker.stdout is not None
    worker.stdin.write(json.dumps(secrets).encode() + b"\n")
    await worker.stdin.drain()
    assert (await worker.stdout.readline()).strip() == b"ready"
    return worker


def read_journal(path: Path) -> dict[str, list[int]]:
    seen: dict[str, list[int]] = {"owned": [], "uncertain": [], "lost": []}
    for line in path.read_text(encoding="utf-8").splitlines():
        ((kind, job_id),) = json.loads(line).items()
        seen[kind].append(job_id)
    return seen


@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_three_processes_in_shared_mode_through_chaos_and_kills(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    retry = RetryPolicy(max_attempts=10, initial_backoff=0.05, max_backoff=0.5)
    server = ServerProcess(tmp_path / "soak.db", cleanup=True)
    workers: list[Any] = []
    journals = [tmp_path / f"worker-{i}.jsonl" for i in range(PROCESSES)]
    acked: set[int] = set()
    unacked = 0
    try:
        await server.start()
        async with (
            RainbowClient(server.address, retry=retry, timeout=20) as admin,
            ChaosProxy(
                server.address,
                seed=SEED,
                chaos=False,
                interval=(0.05, 0.4),
                refuse_weight=0.3,
                stall_time=(0.05, 3.0),
                refuse_time=(0.05, 0.5),
            ) as proxy,
        ):
            regs = {
                f"shared-{i}": await admin.register(f"shared-{i}", "chocolate-cookies")
                for i in range(CLUSTERS)
            }
            secrets = {name: reg.secret for name, reg in regs.items()}
            workers = [await start_worker(proxy.address, j, secrets) for j in journals]
            proxy.chaos = True
            names = sorted(regs)
            for n in range(JOBS):
                if n and n % (JOBS // (RESTARTS + 1)) == 0 and server.running:
                    await server.kill()
                    await asyncio.sleep(rng.uniform(0.2, 1.5))
                    await server.start()
                name = names[n % len(names)]
                try:
                    job_id = await admin.submit_job(name, regs[name].token, f"soak {n}")
                except RainbowError:
                    unacked += 1  # may or may not be stored; never repeated
                else:
                    assert job_id is not None
                    acked.add(job_id)
            proxy.chaos = False
            proxy.stop_refusing()
            proxy.resume()
            async with asyncio.timeout(300):
                while any(  # noqa: ASYNC110 - the condition is the server's state
                    [await admin.request_jobs(n, regs[n].secret, max_jobs=1) for n in names]
                ):
                    await asyncio.sleep(0.25)
            stats = []
            for worker in workers:
                worker.stdin.write(b"stop\n")
                await worker.stdin.drain()
            for worker in workers:
                out, _ = await asyncio.wait_for(worker.communicate(), 120)
                assert worker.returncode == 0
                stats.append(json.loads(out.decode().strip().splitlines()[-1]))
            leftover = [j.id for n in names for j in await admin.request_jobs(n, regs[n].secret)]
            faults = proxy.faults.as_dict()
    finally:
        for worker in workers:
            if worker.returncode is None:
                worker.kill()
                await worker.wait()
        await server.stop()

    seen = [read_journal(path) for path in journals]
    owners: collections.Counter[int] = collections.Counter()
    uncertain_by: collections.Counter[int] = collections.Counter()
    for record in seen:
        owners.update(set(record["owned"]))
        uncertain_by.update(set(record["uncertain"]))
        assert not set(record["owned"]) & set(record["lost"])
    owned_twice = sorted(i for i, n in owners.items() if n > 1)
    resolved_by_join = sorted(i for i in acked if owners[i] == 0 and uncertain_by[i] == 1)
    uncertain_in_several = sorted(i for i in acked if owners[i] == 0 and uncertain_by[i] > 1)
    unowned = sorted(i for i in acked if owners[i] == 0 and uncertain_by[i] == 0)
    figures = {
        "processes": PROCESSES,
        "clusters": CLUSTERS,
        "jobs_acknowledged": len(acked),
        "submits_unacknowledged": unacked,
        "restarts": RESTARTS,
        "faults": faults,
        "owned_once": sum(1 for i in acked if owners[i] == 1),
        "owned_by_process": [len(set(r["owned"])) for r in seen],
        "owned_twice": owned_twice,
        "uncertain_resolved_by_join": len(resolved_by_join),
        "uncertain_in_several_processes": uncertain_in_several,
        "unowned": unowned,
        "left_on_server": leftover,
        "worker_stats": stats,
    }
    FIGURES_FILE.write_text(json.dumps(figures, indent=1) + "\n", encoding="utf-8")
    summary = json.dumps(figures, indent=1)
    assert len(acked) >= JOBS * 0.9, summary
    assert faults["injected"] > 0, summary
    assert owned_twice == [], summary
    assert leftover == [], summary
    assert unowned == [], summary
    assert figures["owned_once"] + len(resolved_by_join) + len(uncertain_in_several) == len(
        acked
    ), summary
    assert all(n > 0 for n in figures["owned_by_process"]), summary
