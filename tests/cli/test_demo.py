"""``rainbow-aio demo``: a small run end to end, and the accounting that decides its exit code.

The demo exits non-zero when a job is lost, accepted twice, or not accepted before
``--timeout``. A healthy client never loses or duplicates a job, so those failing paths are
proven on :func:`account` (the function the demo's exit code comes from) with the ids of
real jobs on a real server: jobs that were submitted but never accepted are genuinely still
waiting on the server, or genuinely taken by another client; a double acceptance is recorded
as the demo would record it if ``accept()`` ever said True twice for one job. Running out of
time is shown through the real command with a timeout too short to wait for anything.
"""

from __future__ import annotations

import os
import pty
import subprocess
import sys
import time
from collections.abc import Sequence

import pytest

from rainbow_aio import AcceptStatus, RainbowClient
from rainbow_aio.cli.demo import DemoReport, account, render
from rainbow_aio.server import RainbowServer

from ._run import ROOT, child_env, cli, interrupt
from .conftest import SECRET


async def submit_and_accept(
    server: RainbowServer, submit: int, accept: int
) -> tuple[dict[int, float], list[tuple[int, float]], list[int]]:
    """Submit ``submit`` real jobs, accept the first ``accept`` of them one by one.

    Returns what the demo records: submission start times by id, (id, time) for each
    acceptance, and the ids still waiting on the server afterwards.
    """
    async with RainbowClient(server.address) as client:
        reg = await client.register("acct", SECRET)
        submitted: dict[int, float] = {}
        for n in range(submit):
            started = time.monotonic()
            job_id = await client.submit_job("acct", reg.token, f"echo {n}")
            assert job_id is not None
            submitted[job_id] = started
        accepted: list[tuple[int, float]] = []
        for job_id in sorted(submitted)[:accept]:
            result = await client.accept_jobs("acct", reg.secret, [job_id])
            assert result.status is AcceptStatus.SUCCESS
            accepted.append((job_id, time.monotonic()))
        waiting = [job.id for job in await client.request_jobs("acct", reg.secret)]
    return submitted, accepted, waiting


async def test_every_job_accepted_once_is_a_clean_report(server: RainbowServer) -> None:
    submitted, accepted, waiting = await submit_and_accept(server, submit=5, accept=5)
    assert waiting == []
    report = account(clusters=1, submitted=submitted, accepted=accepted, elapsed=1.0)
    assert (report.submitted, report.accepted, report.duplicates, report.lost) == (5, 5, 0, 0)
    assert report.ok
    assert report.exit_code == 0
    assert report.latency_p50 is not None
    assert report.latency_p99 is not None
    assert 0 <= report.latency_p50 <= report.latency_p99
    assert report.throughput == 5.0
    assert render(report).endswith("every job was accepted exactly once")


async def test_jobs_still_waiting_were_not_accepted_in_time_and_fail_the_demo(
    server: RainbowServer,
) -> None:
    submitted, accepted, waiting = await submit_and_accept(server, submit=6, accept=4)
    report = account(
        clusters=1, submitted=submitted, accepted=accepted, elapsed=2.0, waiting=waiting
    )
    assert report.late == len(waiting) == 2
    assert report.lost == 0
    assert report.accepted == 4
    assert report.duplicates == 0
    assert not report.ok
    assert report.exit_code == 1
    table = render(report)
    assert row(table, "not accepted in time").endswith(" 2")
    assert row(table, "lost").endswith(" 0")
    assert table.splitlines()[-1] == ("❌️ 2 not accepted in time (a longer --timeout waits more)")


async def test_jobs_gone_from_the_server_but_never_accepted_are_lost(
    server: RainbowServer,
) -> None:
    """Another client took two of the jobs: the demo neither accepted them nor finds them
    waiting any more, which is what "lost" means."""
    async with RainbowClient(server.address) as client:
        reg = await client.register("gone", SECRET)
        submitted = {}
        for n in range(5):
            job_id = await client.submit_job("gone", reg.token, f"echo {n}")
            assert job_id is not None
            submitted[job_id] = time.monotonic()
        taken = sorted(submitted)[:2]
        result = await client.accept_jobs("gone", reg.secret, taken)  # someone else
        assert result.status is AcceptStatus.SUCCESS
        waiting = [job.id for job in await client.request_jobs("gone", reg.secret)]
    report = account(clusters=1, submitted=submitted, accepted=[], elapsed=1.0, waiting=waiting)
    assert (report.lost, report.late, report.accepted) == (2, 3, 0)
    assert render(report).splitlines()[-1] == (
        "❌️ 3 not accepted in time (a longer --timeout waits more), 2 lost"
    )


async def test_a_job_accepted_twice_is_a_duplicate_and_fails_the_demo(
    server: RainbowServer,
) -> None:
    submitted, accepted, _ = await submit_and_accept(server, submit=3, accept=3)
    twice = accepted[1]
    report = account(
        clusters=1,
        submitted=submitted,
        accepted=[*accepted, (twice[0], twice[1] + 0.5)],
        elapsed=1.0,
    )
    assert report.duplicates == 1
    assert report.accepted == 3  # distinct jobs
    assert report.lost == 0
    assert report.exit_code == 1
    assert "1 accepted twice" in render(report)


def test_accepted_ids_nobody_submitted_and_failed_submits_also_fail() -> None:
    report = account(clusters=1, submitted={1: 0.0}, accepted=[(1, 0.1), (7, 0.2)], elapsed=1)
    assert report.unexpected == 1
    assert report.exit_code == 1
    failed = account(clusters=1, submitted={}, accepted=[], elapsed=1, submit_errors=2)
    assert failed.exit_code == 1
    assert failed.latency_p50 is None


def test_the_table_lists_every_figure() -> None:
    report = DemoReport(
        clusters=50,
        submitted=5000,
        submit_errors=0,
        accepted=5000,
        duplicates=0,
        late=0,
        lost=0,
        unexpected=0,
        elapsed=4.0,
        latency_p50=0.012,
        latency_p99=0.25,
    )
    table = render(report)
    for label, value in (
        ("clusters", "50"),
        ("jobs submitted", "5,000"),
        ("accepted", "5,000"),
        ("duplicates", "0"),
        ("lost", "0"),
        ("throughput", "1,250 jobs/s"),
        ("submit-to-accept p50", "12.0 ms"),
        ("submit-to-accept p99", "250.0 ms"),
    ):
        assert row(table, label).endswith(value)
    assert "not accepted in time" not in table  # shown only when there are some


def row(table: str, label: str) -> str:
    """The table's one row for ``label``."""
    [line] = [line for line in table.splitlines() if line.startswith(label + " ")]
    return line


def figure(lines: Sequence[str], label: str) -> str:
    """The value in the row for ``label`` of a printed table."""
    return row("\n".join(lines), label).split()[-1]


@pytest.mark.parametrize("batch", [None, "16"])
async def test_a_small_demo_accepts_every_job_exactly_once(batch: str | None) -> None:
    options = ("--batch", batch) if batch else ()
    result = await cli(
        "demo", "--clusters", "4", "--jobs", "120", "--concurrency", "8", "--timeout", "30",
        *options,
    )  # fmt: skip
    assert result.code == 0, result.err + result.out
    assert result.err == ""
    lines = result.out.splitlines()
    assert any(line.startswith("submitted ") for line in lines)  # progress (not a TTY)
    assert figure(lines, "clusters") == "4"
    assert figure(lines, "jobs submitted") == "120"
    assert figure(lines, "accepted") == "120"
    assert figure(lines, "duplicates") == "0"
    assert figure(lines, "lost") == "0"
    assert lines[-1] == "✅️ every job was accepted exactly once"


async def test_jobs_not_accepted_before_the_timeout_are_reported_as_such() -> None:
    """With one submitter and one job handler, accepting falls far behind submitting: each
    accept waits out its batch window (5 ms) on top of the call that submitting also
    makes. A millisecond after the last submission most jobs are still waiting. They are
    counted as not accepted in time, and nothing is counted as lost."""
    result = await cli(
        "demo", "--clusters", "1", "--jobs", "300", "--concurrency", "1", "--timeout", "0.001"
    )
    assert result.code == 1, result.err + result.out
    assert result.err == ""
    lines = result.out.splitlines()
    [stopping] = [line for line in lines if line.startswith("--timeout: ")]
    assert stopping.endswith("jobs were not accepted yet; stopping")
    late = int(figure(lines, "not accepted in time").replace(",", ""))
    accepted = int(figure(lines, "accepted").replace(",", ""))
    assert late > 0
    assert accepted + late == 300
    assert figure(lines, "lost") == "0"
    assert figure(lines, "duplicates") == "0"
    assert lines[-1] == f"❌️ {late:,} not accepted in time (a longer --timeout waits more)"


async def test_ctrl_c_ends_the_demo_with_one_line() -> None:
    """Interrupted while thousands of jobs are in flight: no traceback, and none of the
    per-job warnings the cancelled pollers would log."""
    result = await interrupt("-m", "rainbow_aio", "demo", "--jobs", "50000", when_line="submitted ")
    assert result.code == 130, result
    assert result.err == "rainbow-aio: interrupted\n", result
    assert "✅️" not in result.out  # it did not run to the end


def test_on_a_terminal_progress_refreshes_one_line() -> None:
    """With a TTY on stdout the progress line is redrawn in place (carriage return and
    erase-line), and the table follows on fresh lines."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "rainbow_aio", "demo", "--clusters", "2", "--jobs", "40"],
        stdout=slave,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=child_env(),
        cwd=ROOT,
    )
    os.close(slave)
    chunks = []
    try:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed its end
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(master)
        assert proc.stderr is not None
        err = proc.stderr.read()
        proc.stderr.close()
        code = proc.wait(timeout=60)
    screen = b"".join(chunks).decode("utf-8")
    assert code == 0, err
    assert "\r\x1b[2Ksubmitted " in screen
    assert screen.rstrip().endswith("every job was accepted exactly once")
