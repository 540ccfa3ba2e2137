"""The agent against the embedded server: what fits runs, what cannot fit is refused once
and stays on the server, bad input is recorded, a large job is not starved, restarts
reconcile, stops leave or cancel, and no credential is written anywhere."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import grpc
import pytest

from rainbow_aio._proto import rainbow_pb2 as pb
from rainbow_aio._proto import rainbow_pb2_grpc as pb_grpc
from rainbow_aio.agent import Agent, AgentError, JobStateName, Journal
from rainbow_aio.agent._capacity import Capacity

from .conftest import (
    Site,
    jobs_alive,
    kill_job_processes,
    running_agent,
    supervisors_alive,
    wait_until,
)

S = JobStateName


def ended(agent: Agent) -> int:
    s = agent.stats
    return s.finished + s.failed + s.interrupted


async def submit_raw(site: Site, command: str, nodes: int) -> None:
    """Submit what the client refuses to send (nodes < 1), as another client could."""
    async with grpc.aio.insecure_channel(site.server.address) as channel:
        stub = pb_grpc.RainbowSchedulerStub(channel)
        await stub.SubmitJob(
            pb.SubmitJobRequest(
                name="raw", cluster=site.name, token=site.token, nodes=nodes, command=command
            )
        )


async def test_runs_jobs_refuses_what_never_fits_and_records_bad_input(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "rainbow_aio")
    good = [await site.submit(f"sh -c 'echo {i} >> ../out'", nodes=1 + i % 4) for i in range(12)]
    too_big = await site.submit("true", nodes=5)
    await submit_raw(site, "true", nodes=0)
    bad = {
        await site.submit("no-such-command-xyz"): "command not found: no-such-command-xyz",
        await site.submit("''"): "empty command",
        await site.submit("echo 'open quote"): "cannot parse the command",
        await site.submit("sh -c 'exit 7'"): "exit 7",
    }
    async with running_agent(site) as (agent, stop, task):
        await wait_until(lambda: ended(agent) == len(good) + len(bad), what="all jobs ended")
        await wait_until(lambda: agent.stats.refused == 2, what="both refusals")
        await asyncio.sleep(0.3)  # a few more polls: the refused jobs are not handed out again
        assert agent.stats.refused == 2
        stop.request("done")
        stats = await task
    assert stats.finished == len(good)
    assert stats.failed == len(bad)
    records = site.records()
    assert {i for i in good if records[i].state is S.FINISHED} == set(good)
    for job_id, reason in bad.items():
        assert records[job_id].state is S.FAILED
        assert reason in (records[job_id].reason or "")
    assert records[too_big].state is S.REFUSED
    assert "more than this agent's 4" in (records[too_big].reason or "")
    refused = [r for r in records.values() if r.state is S.REFUSED]
    assert len(refused) == 2
    assert len(await site.listed()) == 2  # left on the server
    refusals = [r for r in caplog.records if "not accepting it" in r.getMessage()]
    assert len(refusals) == 2  # reported once each
    assert sorted((site.root / "jobs" / "out").read_text().split()) == sorted(
        str(i) for i in range(12)
    )


async def test_nodes_in_use_never_exceed_capacity_and_large_jobs_run(site: Site) -> None:
    """--nodes 4 and 1-, 2- and 4-node jobs: from the jobs' own start and end times."""
    sizes = [1, 2, 4, 1, 1, 2, 4, 2, 1, 1, 4, 1, 2, 2, 1, 4] * 2
    ids = {}
    for n in sizes:
        job_id = await site.submit(
            "sh -c 'date +%s%N > start; sleep 0.05; date +%s%N > end'", nodes=n
        )
        ids[job_id] = n
    async with running_agent(site, site.options(nodes=4)) as (agent, stop, task):
        await wait_until(lambda: ended(agent) == len(sizes), what="all jobs ended")
        stop.request("done")
        stats = await task
    assert stats.finished == len(sizes)
    events = []
    for job_id, n in ids.items():
        folder = site.workdir / str(job_id)
        events.append((int((folder / "start").read_text()), 1, n))
        events.append((int((folder / "end").read_text()), 0, -n))  # ends first at a tie
    in_use = peak = 0
    for _, _, delta in sorted(events):
        in_use += delta
        peak = max(peak, in_use)
    assert peak <= 4
    assert all(site.records()[i].state is S.FINISHED for i, n in ids.items() if n == 4)
    assert agent.peak_nodes <= 4


async def test_a_large_job_is_not_starved_by_a_stream_of_small_ones(site: Site) -> None:
    """With 1-node jobs always waiting, backfill alone would never leave 4 nodes free;
    after reserve_after the agent keeps the nodes for the 4-node job, so it runs."""
    for _ in range(8):
        await site.submit("sleep 0.2")
    big = await site.submit("true", nodes=4)
    options = site.options(nodes=4, reserve_after=0.5)

    async def stream() -> None:
        while True:  # keep at least 8 small jobs waiting, for as long as the test runs
            while len(await site.listed()) < 8:
                await site.submit("sleep 0.2")
            await asyncio.sleep(0.05)

    feeder = asyncio.create_task(stream())
    try:
        async with running_agent(site, options) as (_agent, stop, task):
            await wait_until(
                lambda: (
                    site.records().get(big) is not None and site.records()[big].state is S.FINISHED
                ),
                within=60,
                what="the 4-node job to finish while small jobs keep coming",
            )
            stop.request("done")
            await task
    finally:
        feeder.cancel()
        await asyncio.gather(feeder, return_exceptions=True)
    records = site.records()
    younger_done = [r for r in records.values() if r.id > big and r.state is S.FINISHED]
    assert younger_done  # the small jobs kept running too: backfill was on until the bound


def test_capacity_plan_backfills_until_the_bound_then_reserves() -> None:
    now = [0.0]
    cap = Capacity(4, reserve_after=10, clock=lambda: now[0])
    from rainbow_aio.agent._capacity import Waiting

    cap.take(1)  # one node busy
    big, small = Waiting("big", 4, 0.0), Waiting("small", 1, 0.0)
    assert [w.item for w in cap.plan([big, small])] == ["small"]  # backfill
    now[0] = 10.0
    assert cap.plan([big, small]) == []  # reserved for big
    assert cap.blocked([big, small]) is big
    cap.give(1)
    assert [w.item for w in cap.plan([big, small])] == ["big"]
    assert cap.never_fits(0)
    assert cap.never_fits(5)
    assert cap.never_fits(4) is None


async def test_refuses_to_run_as_root_without_allow_root(site: Site) -> None:
    if os.geteuid() != 0:
        pytest.skip("not running as root")
    await site.submit("true")
    with pytest.raises(AgentError, match="refusing to run jobs as root"):
        await Agent(site.client, site.secret, site.options(allow_root=False)).run()
    assert len(await site.listed()) == 1  # nothing was accepted


async def test_restart_reconciles_intents_and_starts_accepted_jobs(site: Site) -> None:
    still = await site.submit("sh -c 'echo still >> ../out'")
    gone = await site.submit("sh -c 'echo gone >> ../out'")
    jobs = {j.id: j for j in await site.client.request_jobs(site.name, site.secret)}
    with Journal.open(site.journal) as journal:  # what a killed agent left behind
        journal.intend([jobs[still], jobs[gone]], site.name)
    result = await site.client.accept_jobs(site.name, site.secret, [gone])  # its accept landed
    assert result.all_accepted
    async with running_agent(site) as (agent, stop, task):
        await wait_until(lambda: agent.stats.finished == 2, what="both jobs")
        stop.request("done")
        stats = await task
    assert stats.not_taken == 1  # the intent that did not take its job...
    records = site.records()
    assert records[gone].state is S.FINISHED
    assert records[still].state is S.FINISHED  # ...whose job was then polled and run
    assert sorted((site.workdir / "out").read_text().split()) == ["gone", "still"]
    assert await site.listed() == set()


async def test_shared_mode_never_runs_an_uncertain_intent(site: Site) -> None:
    gone = await site.submit("sh -c 'echo ran >> ../out'")
    (job,) = await site.client.request_jobs(site.name, site.secret)
    with Journal.open(site.journal) as journal:
        journal.intend([job], site.name)
    await site.client.accept_jobs(site.name, site.secret, [gone])
    async with running_agent(site, site.options(accept_mode="shared")) as (agent, stop, task):
        await wait_until(lambda: agent.stats.uncertain == 1, what="the reconcile")
        stop.request("done")
        await task
    assert site.records()[gone].state is S.UNCERTAIN
    assert not (site.workdir / "out").exists()


async def test_stop_leaves_jobs_running_and_the_next_start_reattaches(site: Site) -> None:
    job = await site.submit("sh -c 'sleep 1; echo once >> ../out'")
    options = site.options(drain_timeout=0)
    try:
        async with running_agent(site, options) as (agent, stop, task):
            await wait_until(lambda: agent.stats.running == 1, what="the job to start")
            await wait_until(
                lambda: site.records()[job].handle is not None, what="the handle journaled"
            )
            stop.request("test")
            stats = await task
        assert stats.left_running == 1
        record = site.records()[job]
        assert record.state is S.RUNNING
        assert "left running" in (record.reason or "")
        async with running_agent(site, options) as (agent, stop, task):
            await wait_until(lambda: agent.stats.finished == 1, what="the re-attached job")
            assert agent.stats.reattached == 1
        assert site.records()[job].state is S.FINISHED
        assert (site.workdir / "out").read_text() == "once\n"
    finally:
        kill_job_processes(site.workdir)


async def test_cancel_on_stop_records_interrupted(site: Site) -> None:
    job = await site.submit("sleep 30")
    options = site.options(drain_timeout=0, cancel_on_stop=True)
    async with running_agent(site, options) as (_agent, stop, task):
        await wait_until(
            lambda: (r := site.records().get(job)) is not None and r.handle is not None,
            what="the job to start",
        )
        stop.request("test")
        stats = await task
    assert stats.interrupted == 1
    record = site.records()[job]
    assert record.state is S.INTERRUPTED
    assert record.reason == "cancelled"
    assert jobs_alive(site.workdir) == []


async def test_no_credential_in_journal_logs_or_job_folders(
    site: Site, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("RAINBOW_SECRET", site.secret)
    monkeypatch.setenv("RAINBOW_TOKEN", site.token)
    await site.submit("sh -c 'env; echo $0 $@'")
    await site.submit("no-such-command-xyz")
    await site.submit("true", nodes=99)
    async with running_agent(site) as (agent, stop, task):
        await wait_until(lambda: ended(agent) == 2 and agent.stats.refused == 1, what="jobs")
        # the workdir's supervisor, which outlives the agent, holds no credential either
        environments = [
            Path(f"/proc/{pid}/environ").read_bytes()  # noqa: ASYNC240
            for pid in supervisors_alive(site.workdir)
        ]
        assert environments
        stop.request("done")
        await task
    for credential in (site.secret, site.token):
        assert not [env for env in environments if credential.encode() in env]
    texts = [(r.name, r.getMessage()) for r in caplog.records]
    files = [p for p in site.root.rglob("*") if p.is_file()]
    assert any(p.name == "stdout" for p in files)
    for credential in (site.secret, site.token):
        assert not [name for name, text in texts if credential in text]
        leaked = [p for p in files if credential.encode() in p.read_bytes()]
        assert leaked == []


async def test_a_job_folder_that_cannot_be_made_is_a_recorded_failure(site: Site) -> None:
    """As root, permissions do not stop mkdir: the workdir is swapped for a file instead."""
    async with running_agent(site) as (agent, stop, task):
        await wait_until(lambda: site.workdir.is_dir(), what="the workdir")
        site.workdir.rmdir()
        site.workdir.write_text("not a folder")
        broken = await site.submit("true")
        await wait_until(lambda: agent.stats.failed == 1, what="the failure")
        site.workdir.unlink()
        site.workdir.mkdir()
        fine = await site.submit("true")
        await wait_until(lambda: agent.stats.finished == 1, what="the next job")
        stop.request("done")
        await task
    records = site.records()
    assert records[broken].state is S.FAILED
    reason = records[broken].reason or ""
    assert reason.startswith("cannot "), reason
    assert str(site.workdir) in reason, reason
    assert records[fine].state is S.FINISHED
