"""kill -9 soak: a real ``rainbow-aio agent`` process is SIGKILLed at random moments five
times while it runs 2,000 short jobs, and started again each time. At the end every job
is finished exactly once in the journal, the server lists none, and every job's token
is in the shared file exactly once (no job lost, none run twice)."""

from __future__ import annotations

import pytest
from support.agents import kill_9_soak

from .conftest import Site, kill_job_processes

pytestmark = pytest.mark.slow

JOBS = 2000
KILLS = 5


async def test_kill_9_soak_every_job_runs_exactly_once(site: Site) -> None:
    try:
        await kill_9_soak(site, "--nodes", "16", jobs=JOBS, kills=KILLS, seed="agent", within=120)
    finally:
        kill_job_processes(site.workdir)
