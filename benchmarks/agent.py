"""9. The cluster agent: running `true` jobs, against a bare asyncio loop.

N ``true`` jobs wait on a ``rainbow-aio serve`` process (pre-loaded). A real
``rainbow-aio agent --nodes 64`` process (local executor, journal on disk) then accepts
and runs them all; the baseline is a bare asyncio loop in this process that starts the
same N subprocesses, 64 at a time, with nothing else (no server, no journal, no
folders or files). Measured for the agent: jobs/s from its first accept to its last job's end
(taken from the journal's own times; the process start-up and the reconcile listing
come before the clock), and the whole wall time from launching the process as well.
The journal goes on the repository's disk (``build/bench-agent``), where its fsyncs are
real. The job folders go on a memory file system (``/dev/shm``) when there is one:
on this machine's virtual disk, making a folder and three files costs from 0.1 ms to
more than 3 ms per job, growing as files are made and deleted, which measures the disk
rather than the agent (and the bare loop makes no files). ``RAINBOW_BENCH_AGENT_JOBS``
chooses another place; the run records what a job's files cost in both places
(``fs_us_per_job``), and one more ``full`` round with the folders on the disk, for
reference. Both journal sync modes are run (``full``: each commit fsynced;
``normal``), in ABBA order, each right after its own baselines (the machine's load
moves); the target is the median ratio with ``full``.

The journal's cost per job: the same journal writes the agent makes for N jobs (per
batch of 64: the intent and the outcome; the handles and the ends, deferred and
committed together), timed alone, in microseconds per job, for each sync mode.

Correctness: every job finished exactly once in the journal, none left on the server.
"""

from __future__ import annotations

import asyncio
import functools
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import _harness as H

NAME = "agent"
TITLE = "Agent: `true` jobs at --nodes 64 vs a bare asyncio loop"
NODES = 64
GOAL_RATIO = 0.8

SIZES: dict[str, dict[str, Any]] = {
    "toy": {"jobs": 100, "order": ["full"]},
    "quick": {"jobs": 500, "order": ["full", "normal"]},
    "full": {"jobs": 2000, "order": ["full", "normal", "normal", "full", "disk"]},
}


async def baseline(jobs: int) -> float:
    """Seconds for a bare asyncio loop to run ``jobs`` ``true`` processes, 64 at a time."""
    gate = asyncio.Semaphore(NODES)

    async def one() -> None:
        async with gate:
            proc = await asyncio.create_subprocess_exec(
                "true",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
                start_new_session=True,
            )
            await proc.wait()

    t0 = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(jobs)))
    return time.perf_counter() - t0


async def baseline_spawn(jobs: int) -> float:
    """The same with posix_spawn and a pidfd per child (what the agent's local executor
    uses), for reference: no thread per child, unlike asyncio's subprocesses on 3.11."""
    gate = asyncio.Semaphore(NODES)
    loop = asyncio.get_running_loop()
    null = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
        (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0),
    ]
    true = shutil.which("true") or "/bin/true"

    async def one() -> None:
        async with gate:
            pid = os.posix_spawn(true, ["true"], os.environ, file_actions=null, setsid=True)  # noqa: ASYNC221
            fd = os.pidfd_open(pid)
            ended = asyncio.Event()
            loop.add_reader(fd, ended.set)
            try:
                await ended.wait()
            finally:
                loop.remove_reader(fd)
                os.close(fd)
            os.waitpid(pid, 0)  # noqa: ASYNC222 - it has ended: this only reaps it

    t0 = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(jobs)))
    return time.perf_counter() - t0


def journal_cost(tmp: Path, jobs: int, sync: str) -> float:
    """Microseconds per job of the agent's journal writes alone."""
    from rainbow_aio import Job
    from rainbow_aio.agent import JobStateName, Journal

    path = tmp / f"cost-{sync}.db"
    all_jobs = [Job(i, "c", "", 1, 1, "true") for i in range(1, jobs + 1)]
    t0 = time.perf_counter()
    with Journal.open(path, sync=sync) as journal:  # type: ignore[arg-type]
        for start in range(0, jobs, NODES):
            batch = all_jobs[start : start + NODES]
            journal.intend(batch, "c")
            journal.accepted("c", [j.id for j in batch], launching=True)
            for j in batch:  # handles and ends are deferred and committed together
                journal.running("c", j.id, "local", f"{j.id}:1", defer=True)
            journal.flush()
            for j in batch:
                journal.ended("c", j.id, JobStateName.FINISHED, 0, "exit 0", defer=True)
            journal.flush()
    return (time.perf_counter() - t0) / jobs * 1e6


async def agent_run(
    ctx: H.RunContext, checks: H.Checks, jobs: int, sync: str, n: int, *, jobs_on: Path
) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix=f"agent-{sync}-{n}-", dir=_work_base()))
    workdir = Path(tempfile.mkdtemp(prefix=f"agent-jobs-{sync}-{n}-", dir=jobs_on))
    async with H.server_process(ctx, f"{NAME}-{sync}-{n}") as server:
        async with H.Admin(server.address) as admin:
            cluster = f"agent-{sync}"
            token, secret = (await admin.register_many([cluster]))[cluster]
        from rainbow_aio import RainbowClient

        async with RainbowClient(server.address) as client:
            for start in range(0, jobs, 100):
                await asyncio.gather(
                    *(
                        client.submit_job(cluster, token, "true")
                        for _ in range(start, min(jobs, start + 100))
                    )
                )
            journal = root / "journal.db"
            env = {**os.environ, "RAINBOW_SECRET": secret}
            env.pop("PYTHONDEVMODE", None)
            t0 = time.perf_counter()
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "rainbow_aio",
                "agent",
                "--host",
                server.address,
                "--cluster",
                cluster,
                "--nodes",
                str(NODES),
                "--journal",
                str(journal),
                "--workdir",
                str(workdir),
                "--journal-sync",
                sync,
                "--allow-root",
                "--progress",
                "never",
                "--poll-interval",
                "0.05",
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            try:
                while True:
                    await asyncio.sleep(0.1)
                    done = _finished(journal)
                    if done >= jobs or proc.returncode is not None:
                        break
                wall = time.perf_counter() - t0
            finally:
                if proc.returncode is None:
                    proc.terminate()
                await proc.wait()
            listed = await client.request_jobs(cluster, secret)
    result = _measure(journal, jobs, wall, checks, sync, listed)
    result["job_folders"] = str(jobs_on)
    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(workdir, ignore_errors=True)
    return result


def _measure(
    journal: Path, jobs: int, wall: float, checks: H.Checks, sync: str, listed: list[Any]
) -> dict[str, Any]:
    db = sqlite3.connect(f"file:{journal}?mode=ro", uri=True)
    first, last, finished, distinct = db.execute(
        "SELECT min(accepted), max(ended), count(*), count(DISTINCT id) FROM jobs "
        "WHERE state = 'finished'"
    ).fetchone()
    db.close()
    checks.check(f"{sync}: every job finished once", finished == jobs == distinct, f"{finished}")
    checks.check(f"{sync}: none left on the server", not listed, f"{len(listed)} listed")
    serving = last - first
    return {
        "sync": sync,
        "wall_s": round(wall, 3),
        "serving_s": round(serving, 3),
        "jobs_per_s": round(jobs / serving, 1),
        "jobs_per_s_wall": round(jobs / wall, 1),
    }


def _work_base() -> Path:
    """Where the agent's journal goes: ``build/bench-agent`` in the repository."""
    base = H.ROOT / "build" / "bench-agent"
    base.mkdir(parents=True, exist_ok=True)
    return base


def _jobs_base() -> Path:
    """Where the job folders go: ``RAINBOW_BENCH_AGENT_JOBS``, else ``/dev/shm`` (a
    memory file system) when it exists, else the journal's place."""
    chosen = os.environ.get("RAINBOW_BENCH_AGENT_JOBS")
    shm = Path("/dev/shm")
    base = Path(chosen) if chosen else shm / "bench-agent" if shm.is_dir() else _work_base()
    base.mkdir(parents=True, exist_ok=True)
    return base


@functools.cache
def _fs_costs() -> dict[Path, float]:
    """Microseconds to make a job's folder and its three files, in both places
    (measured once per run)."""
    return {base: round(fs_cost(base), 1) for base in dict.fromkeys((_work_base(), _jobs_base()))}


def fs_cost(base: Path, jobs: int = 300) -> float:
    """Microseconds per job to make a folder and three empty files in it, under ``base``."""
    root = Path(tempfile.mkdtemp(prefix="fs-cost-", dir=base))
    t0 = time.perf_counter()
    for i in range(jobs):
        folder = root / str(i)
        folder.mkdir()
        for name in ("claim", "stdout", "stderr"):
            os.close(os.open(folder / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    cost = (time.perf_counter() - t0) / jobs * 1e6
    shutil.rmtree(root, ignore_errors=True)
    return cost


def _finished(journal: Path) -> int:
    if not journal.exists():
        return 0
    try:
        db = sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=1)
        try:
            (n,) = db.execute("SELECT count(*) FROM jobs WHERE state = 'finished'").fetchone()
        finally:
            db.close()
    except sqlite3.Error:
        return 0
    return int(n)


async def run(ctx: H.RunContext, checks: H.Checks) -> dict[str, Any]:
    jobs = SIZES[ctx.size]["jobs"]
    order = SIZES[ctx.size]["order"]
    runs = []
    for n, sync in enumerate(order):
        # each agent run right after its own baselines: the machine's load moves
        base = await baseline(jobs)
        spawn = await baseline_spawn(jobs)
        on_disk = sync == "disk"
        result = await agent_run(
            ctx,
            checks,
            jobs,
            "full" if on_disk else sync,
            n,
            jobs_on=_work_base() if on_disk else _jobs_base(),
        )
        result["sync"] = sync  # "disk": sync full, the job folders on the disk
        result["bare_loop_jobs_per_s"] = round(jobs / base, 1)
        result["posix_spawn_loop_jobs_per_s"] = round(jobs / spawn, 1)
        result["ratio_vs_bare_loop"] = round(result["jobs_per_s"] * base / jobs, 3)
        result["ratio_vs_posix_spawn_loop"] = round(result["jobs_per_s"] * spawn / jobs, 3)
        result["uptime"] = _uptime()
        H.say(
            f"  [{n + 1}/{len(order)}] bare asyncio loop {jobs / base:.0f} jobs/s, posix_spawn "
            f"loop {jobs / spawn:.0f} jobs/s; agent ({_label(sync)}) "
            f"{result['jobs_per_s']} jobs/s serving = {result['ratio_vs_bare_loop']}x the bare "
            f"loop, {result['wall_s']} s wall"
        )
        runs.append(result)
    where = Path(tempfile.mkdtemp(prefix="journal-cost-", dir=_work_base()))
    cost = {sync: round(journal_cost(where, jobs, sync), 1) for sync in ("full", "normal")}
    shutil.rmtree(where, ignore_errors=True)
    H.say(f"  journal cost per job: {cost['full']} µs (full), {cost['normal']} µs (normal)")

    def median(sync: str) -> float:
        return statistics.median(r["ratio_vs_bare_loop"] for r in runs if r["sync"] == sync)

    return {
        "params": {
            "jobs": jobs,
            "nodes": NODES,
            "order": order,
            "work_dir": str(_work_base()),
            "job_folders": str(_jobs_base()),
            "fs_us_per_job": {str(k): v for k, v in _fs_costs().items()},
        },
        "results": {
            "runs": runs,
            "median_ratio_vs_bare_loop": {sync: median(sync) for sync in set(order)},
            "journal_us_per_job": cost,
            "uptime_end": _uptime(),
        },
        "targets": [
            H.target(
                "agent jobs/s vs the bare loop (journal sync full, median)",
                median("full"),
                GOAL_RATIO,
                unit="x",
            )
        ],
    }


def _label(sync: str) -> str:
    if sync == "disk":
        return "journal sync full, job folders on the disk"
    return f"journal sync {sync}"


def _uptime() -> str:
    import subprocess

    try:
        return subprocess.run(
            ["uptime"], capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        return ""
