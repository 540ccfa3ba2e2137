"""``rainbow-aio agent`` as a real process: runs jobs, stops on SIGTERM (exit 0), is
refused on a journal in use or damaged (exit 1, naming the file) and as root without
--allow-root, survives kill -9 without running a job twice; ``agent status`` shows it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys

import pytest

from rainbow_aio.agent import JobStateName

from .conftest import Site, agent_argv, agent_process, kill_job_processes, wait_until

S = JobStateName


def status(site: Site, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "rainbow_aio",
            "agent",
            "status",
            "--journal",
            str(site.journal),
            *list(extra),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def finished(site: Site) -> int:
    return sum(r.state is S.FINISHED for r in site.records().values())


async def test_runs_jobs_stops_on_sigterm_and_shows_status(site: Site) -> None:
    ids = [await site.submit(f"sh -c 'echo {i} >> ../out'") for i in range(5)]
    failing = await site.submit("sh -c 'exit 3'")
    log = site.root / "agent.log"
    async with agent_process(site, "--nodes", "2", stderr=log) as proc:
        await wait_until(lambda: finished(site) == 5, what="the jobs to finish")
        await wait_until(lambda: site.records()[failing].state is S.FAILED, what="the failing job")
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    table = status(site)
    assert table.returncode == 0, table.stderr
    assert "finished 5" in table.stdout
    assert "failed 1" in table.stdout
    assert "(exit 3)" in table.stdout
    listing = status(site, "--json")
    rows = json.loads(listing.stdout)
    assert {r["id"] for r in rows} == {*ids, failing}
    for row in rows:
        assert {"id", "cluster", "state", "exit_code", "command"} <= row.keys()
    assert [r["exit_code"] for r in rows if r["id"] == failing] == [3]
    text = log.read_text()
    assert "SIGTERM" in text
    assert site.secret not in text
    assert site.secret not in table.stdout + listing.stdout


async def test_a_second_agent_on_the_journal_is_refused(site: Site) -> None:
    await site.submit("sleep 30")
    async with agent_process(site, "--nodes", "1") as first:
        await wait_until(lambda: bool(site.records()), what="the first agent's journal")
        second = await asyncio.create_subprocess_exec(
            *agent_argv(site, "--nodes", "1"),
            env={**os.environ, "RAINBOW_SECRET": site.secret},
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(second.communicate(), 60)
        assert second.returncode == 1
        assert str(site.journal) in err.decode()
        assert f"pid {first.pid}" in err.decode()
    kill_job_processes(site.workdir)


async def test_a_damaged_journal_is_an_error_naming_it(site: Site) -> None:
    site.journal.write_bytes(b"garbage" * 1000)
    proc = await asyncio.create_subprocess_exec(
        *agent_argv(site, "--nodes", "1"),
        env={**os.environ, "RAINBOW_SECRET": site.secret},
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 1
    assert str(site.journal) in err.decode()
    assert site.journal.read_bytes() == b"garbage" * 1000
    assert status(site).returncode == 1


async def test_root_without_allow_root_is_refused(site: Site) -> None:
    if os.geteuid() != 0:
        pytest.skip("not running as root")
    await site.submit("true")
    argv = [a for a in agent_argv(site, "--nodes", "1") if a != "--allow-root"]
    proc = await asyncio.create_subprocess_exec(
        *argv, env={**os.environ, "RAINBOW_SECRET": site.secret}, stderr=asyncio.subprocess.PIPE
    )
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 1
    assert "--allow-root" in err.decode()
    assert len(await site.listed()) == 1


async def test_kill_9_while_a_job_runs_then_restart_runs_it_once(site: Site) -> None:
    job = await site.submit("sh -c 'sleep 1; echo once >> ../out'")
    try:
        async with agent_process(site, "--nodes", "1") as proc:
            await wait_until(
                lambda: (r := site.records().get(job)) is not None and r.state is S.RUNNING,
                what="the job to start",
            )
            os.kill(proc.pid, signal.SIGKILL)
            await proc.wait()
        async with agent_process(site, "--nodes", "1") as proc:
            await wait_until(lambda: finished(site) == 1, what="the re-attached job to end")
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 30) == 0
        assert (site.workdir / "out").read_text() == "once\n"
        assert await site.listed() == set()
    finally:
        kill_job_processes(site.workdir)


def test_bad_command_lines_exit_2() -> None:
    base = [sys.executable, "-m", "rainbow_aio", "agent", "--journal", "j.db"]
    for extra in (["--secret", "s", "--nodes", "1"], ["--secret", "s", "--workdir", "w"]):
        done = subprocess.run(
            base + extra,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={k: v for k, v in os.environ.items() if k != "RAINBOW_SECRET"},
        )
        assert done.returncode == 2, done.stderr
        assert "required" in done.stderr


async def test_ctrl_c_exits_130_and_leaves_the_job_running_for_the_next_start(
    site: Site,
) -> None:
    job = await site.submit("sh -c 'sleep 0.5; echo once >> ../out'")
    try:
        async with agent_process(site, "--nodes", "1", "--drain-timeout", "0") as proc:
            await wait_until(
                lambda: (r := site.records().get(job)) is not None and r.handle is not None,
                what="the job to start",
            )
            proc.send_signal(signal.SIGINT)
            assert await asyncio.wait_for(proc.wait(), 30) == 130
        assert "left running" in (site.records()[job].reason or "")
        async with agent_process(site, "--nodes", "1") as proc:
            await wait_until(lambda: finished(site) == 1, what="the re-attached job")
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 30) == 0
        assert (site.workdir / "out").read_text() == "once\n"
    finally:
        kill_job_processes(site.workdir)
