"""Fixtures for the agent tests: a registered cluster on the embedded server (``site``);
the helpers are in ``support/agents.py``.

Everything runs for real: the server over loopback, jobs as subprocesses, kill -9 on
agent processes this test started (by pid). Tests wait on conditions, never on timings.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from support.agents import (
    FAST,
    Site,
    agent_argv,
    agent_process,
    jobs_alive,
    kill_job_processes,
    running_agent,
    supervisors_alive,
    wait_until,
)

from rainbow_aio import RainbowClient, RainbowServer

__all__ = [
    "FAST",
    "Site",
    "agent_argv",
    "agent_process",
    "jobs_alive",
    "kill_job_processes",
    "running_agent",
    "supervisors_alive",
    "site",
    "wait_until",
]


@pytest.fixture
async def site(
    rainbow_client: RainbowClient, rainbow_server: RainbowServer, tmp_path: Path
) -> Site:
    reg = await rainbow_client.register("agent-test", rainbow_server.secret)
    return Site(rainbow_client, rainbow_server, reg.cluster, reg.token, reg.secret, tmp_path)
