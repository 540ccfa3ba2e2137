"""The agent end to end on Flux: the embedded server, a real ``flux start --test-size=2``
instance, the agent with the Flux executor, and a kill -9 soak of the real command line.

Skipped without ``RAINBOW_FLUX_PREFIX`` (failed under ``CI=true``); ``tox -e flux`` runs it.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import AsyncIterator

import pytest
from support.agents import kill_9_soak
from support.flux import FluxInstance, flux_instance, flux_prefix

from rainbow_aio.agent import JobStateName

from .conftest import Site, running_agent, wait_until

PREFIX = flux_prefix()

from rainbow_aio.agent._flux import FluxExecutor  # noqa: E402

pytestmark = pytest.mark.flux

S = JobStateName


@pytest.fixture
async def instance() -> AsyncIterator[FluxInstance]:
    async with flux_instance(PREFIX, size=2) as running:
        yield running


async def test_agent_runs_jobs_on_flux(site: Site, instance: FluxInstance) -> None:
    small = await site.submit(f"sh -c 'echo $FLUX_JOB_ID > {site.root}/small'")
    wide = await site.submit("sh -c 'echo $RAINBOW_NODES $FLUX_TASK_RANK'", nodes=2, tasks=2)
    failing = await site.submit("sh -c 'exit 7'")
    too_big = await site.submit("true", nodes=3)
    options = site.options(nodes=None)  # the instance's free nodes: 2
    async with running_agent(site, options, executor=FluxExecutor(instance.uri)) as (
        agent,
        _,
        _,
    ):
        await wait_until(
            lambda: agent.stats.finished == 2 and agent.stats.failed == 1,
            what="three jobs to end",
        )
        assert agent.stats.nodes_total == 2
        assert agent.stats.refused == 1
    records = site.records()
    assert records[small].state is S.FINISHED
    assert records[small].executor == "flux"
    assert (site.root / "small").read_text().strip() != ""
    assert records[wide].state is S.FINISHED
    stdout = (site.workdir / str(wide) / "stdout").read_text().split("\n")
    assert sorted(line for line in stdout if line) == ["2 0", "2 1"]
    assert (records[failing].state, records[failing].exit_code) == (S.FAILED, 7)
    assert records[too_big].state is S.REFUSED
    assert await site.listed() == {too_big}


async def test_agent_restart_reattaches_to_flux_jobs(site: Site, instance: FluxInstance) -> None:
    gate = site.root / "gate"
    job = await site.submit(f"sh -c 'while [ ! -e {gate} ]; do sleep 0.05; done; echo through'")
    options = site.options(nodes=None, drain_timeout=0)
    async with running_agent(site, options, executor=FluxExecutor(instance.uri)):
        await wait_until(
            lambda: (r := site.records().get(job)) is not None and r.handle is not None,
            what="the job to start",
        )
    # stopped: the job was left running in Flux
    assert site.records()[job].state is S.RUNNING
    gate.touch()
    async with running_agent(site, options, executor=FluxExecutor(instance.uri)) as (
        agent,
        _,
        _,
    ):
        await wait_until(lambda: agent.stats.finished == 1, what="the job to end")
        assert agent.stats.reattached == 1
    assert site.records()[job].state is S.FINISHED
    assert (site.workdir / str(job) / "stdout").read_text() == "through\n"


SOAK_JOBS = int(os.environ.get("RAINBOW_FLUX_SOAK_JOBS", "2000"))
SOAK_KILLS = 5


@pytest.mark.slow
@pytest.mark.timeout(1800)
async def test_kill_9_soak_on_flux(
    site: Site, instance: FluxInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The local soak's run (tests/agent/test_soak.py) with the Flux executor: the agent
    process is SIGKILLed at random moments five times and started again; every job ends
    up finished once in the journal, none stays listed, and every token is written once."""
    monkeypatch.setenv("FLUX_URI", instance.uri)
    bindings = str(PREFIX / "lib" / "python3.11" / "site-packages")
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [bindings, os.environ.get("PYTHONPATH")]))
    )
    loop = asyncio.get_running_loop()
    began = loop.time()
    await kill_9_soak(
        site,
        "--executor",
        "flux",
        "--nodes",
        "16",
        jobs=SOAK_JOBS,
        kills=SOAK_KILLS,
        seed="flux",
        within=600,
    )
    elapsed = loop.time() - began
    # every Flux job ran once: no job of the instance ran a token twice, none is left
    code, listing = await instance.run(
        "jobs", "-a", "-n", "--count=1000000", "-o", "{name} {result}"
    )
    assert code == 0, listing
    names = Counter(line.split()[0] for line in listing.splitlines() if line.strip())
    completed = [line for line in listing.splitlines() if line.endswith("COMPLETED")]
    assert len(completed) == SOAK_JOBS, listing[-2000:]
    print(f"flux soak: {SOAK_JOBS} jobs, {SOAK_KILLS} kills, {elapsed:.1f} s, {len(names)} names")
