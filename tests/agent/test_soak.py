"""kill -9 soak: a real ``rainbow-aio agent`` process is SIGKILLed at random moments five
times while it runs 2,000 short jobs, and started again each time. At the end every job
is finished exactly once in the journal, the server lists none, and every job's token
is in the shared file exactly once (no job lost, none run twice)."""

from __future__ import annotations

import asyncio
import os
import random
import signal
from collections import Counter

import pytest

from rainbow_aio.agent import JobStateName

from .conftest import Site, agent_process, kill_job_wrappers, wait_until

pytestmark = pytest.mark.slow

JOBS = 2000
KILLS = 5


async def test_kill_9_soak_every_job_runs_exactly_once(site: Site) -> None:
    out = site.root / "tokens"
    tokens = {}
    for start in range(0, JOBS, 50):
        batch = range(start, min(JOBS, start + 50))
        ids = await asyncio.gather(
            *(site.submit(f"sh -c 'echo token-{i} >> {out}'") for i in batch)
        )
        tokens.update({job_id: f"token-{i}" for job_id, i in zip(ids, batch, strict=True)})
    rng = random.Random(os.environ.get("SOAK_SEED", "agent"))

    def done() -> int:
        return sum(r.state is JobStateName.FINISHED for r in site.records().values())

    log = site.root / "agent.log"
    kills = 0
    try:
        while kills < KILLS:
            async with agent_process(site, "--nodes", "16", stderr=log) as proc:
                at = done() + rng.randint(50, JOBS // (KILLS + 1))
                await wait_until(
                    lambda at=at, proc=proc: done() >= at or proc.returncode is not None,
                    within=120,
                )
                assert proc.returncode is None, log.read_text()[-2000:]
                await asyncio.sleep(rng.uniform(0, 0.2))  # a random moment, not a count
                os.kill(proc.pid, signal.SIGKILL)
                await proc.wait()
                kills += 1
        async with agent_process(site, "--nodes", "16", stderr=log) as proc:
            await wait_until(lambda: done() == JOBS, within=300, what="every job to finish")
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 60) == 0
    finally:
        kill_job_wrappers(site.workdir)
    records = site.records()
    assert {r.id for r in records.values() if r.state is JobStateName.FINISHED} == set(tokens)
    assert await site.listed() == set()
    seen = Counter(out.read_text().split())
    assert set(seen) == set(tokens.values())
    assert [t for t, n in seen.items() if n != 1] == []
    assert site.secret not in log.read_text()
