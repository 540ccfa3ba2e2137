"""The two documented batch forms against the original bindings' usage, as a user runs them.

One client drains a pre-loaded backlog with one of the forms the batches page shows, and
the original usage (``original.baseline``: a thread per cluster, a new channel for every
call) drains an identical one on the same server, the modes taking turns going first:

- ``loop``: ``async for batch in source.batches(max_size=M): for job in await
  batch.accept(): ...`` (one consumer);
- ``run``: ``await source.run(handler, batch_size=M, concurrency=8)``;
- ``run_wide``: the same with ``concurrency`` one per cluster (8 at least), what the
  batches page gives for many clusters: each of run()'s workers waits out its batch's
  accept, so with 8 workers at most 8 clusters' accepts are on the wire at once;
- ``bare``: no library, the floor of any grpc.aio client: one channel and a task per
  cluster looping "RequestJobs(maxJobs=M), parse each job's JSON, AcceptJobs(its ids)"
  until a listing is empty. It keeps none of the library's promises (no retries, no
  record of what is in flight, no hand-over to consumers); it shows what two calls per
  ``M`` jobs cost on this machine, so that a target below it is known to be out of reach
  of an asyncio gRPC client here.

``source`` is a ``Poller`` for one cluster and a ``PollerGroup`` for many, at the cell's
``max_jobs``, every other option at its default, and ``M = max_jobs``. Each run is timed
from entering the poller or group to owning the last job (the worker's CPU over the same
span, ``getrusage``); the server's CPU over the run is read from its process. A cell is
"short" (3,000 to 10,000 jobs: start-up counts) or "steady" (30,000 to 60,000 jobs).

With ``--client-tree DIR`` both forms also run with the ``rainbow_aio`` of DIR (an older
checkout), side by side: a before/after comparison of the batch path.

Correctness, checked for every run: every loaded job was accepted exactly once, nothing
else accepted, every accept succeeded and nothing is left waiting on the server.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from benchmarks import _harness as H
from benchmarks.original import baseline as _baseline
from benchmarks.original import check_drain

NAME = "batches"
TITLE = "the documented batch loop and run() vs the original bindings' usage"
GOAL_SPEED = 1.5  # at least this times the original's jobs/s
GOAL_CPU = 0.5  # at most this times its client CPU per job
FORMS = ("loop", "run", "run_wide")
RUN_CONCURRENCY = 8


def wide_concurrency(clusters: int) -> int:
    """run_wide's ``concurrency``: one worker per cluster, ``RUN_CONCURRENCY`` at least."""
    return max(RUN_CONCURRENCY, clusters)


# (kind, clusters, max_jobs) -> jobs per cluster
SIZES: dict[str, dict[str, Any]] = {
    "toy": {"cells": {("short", 1, 10): 40, ("short", 3, 10): 15}, "reps": 1},
    "quick": {"cells": {("short", 100, 100): 30, ("short", 1, 100): 1000,
                        ("short", 100, 10): 10}, "reps": 1},
    "full": {"cells": {("short", 100, 100): 100, ("short", 1, 100): 3000,
                       ("short", 100, 10): 30, ("steady", 1, 100): 30000,
                       ("steady", 100, 10): 300, ("steady", 100, 100): 600}, "reps": 3},
}  # fmt: skip


def baseline(params: dict[str, Any]) -> dict[str, Any]:
    return _baseline(params)


async def run(ctx: H.RunContext, checks: H.Checks) -> dict[str, Any]:
    p = SIZES[ctx.size]
    modes = ["baseline", *FORMS, "bare"]
    if ctx.client_tree is not None:
        modes += [f"{form}_before" for form in FORMS]
    plan = []  # (cell, rep, mode) in run order: each mode takes its turn going first
    for n, cell in enumerate(p["cells"]):
        for rep in range(p["reps"]):
            k = (n + rep) % len(modes)
            plan += [(cell, rep, mode) for mode in modes[k:] + modes[:k]]
    runs: list[dict[str, Any]] = []
    async with H.server_process(ctx, NAME) as server:
        cluster_sets = {
            (cell, rep, mode): H.names(f"b{cell[0][:2]}{cell[1]}x{cell[2]}-{rep}-{mode}", cell[1])
            for cell, rep, mode in plan
        }
        async with H.Admin(server.address) as admin:
            creds = await admin.register_many([c for cs in cluster_sets.values() for c in cs])
        per_cluster = {c: p["cells"][cell] for (cell, _, _), cs in cluster_sets.items() for c in cs}
        loaded, note = await H.preload(server, creds, per_cluster)
        H.say(f"  pre-loaded {note['jobs']:,} jobs by {note['method']} in {note['seconds']} s")
        for cell, rep, mode in plan:
            kind, clusters, max_jobs = cell
            cs = cluster_sets[(cell, rep, mode)]
            form = mode.removesuffix("_before")
            concurrency = RUN_CONCURRENCY
            if form == "run_wide":
                form, concurrency = "run", wide_concurrency(clusters)
            params = {
                "address": server.address,
                "secrets": {c: creds[c][1] for c in cs},
                "max_jobs": max_jobs,
                "batch": max_jobs,
                "form": form,
                "concurrency": concurrency,
                "total": sum(len(loaded[c]) for c in cs),
            }
            tree = ctx.client_tree if mode.endswith("_before") else None
            role = mode if mode in ("baseline", "bare") else "drain"
            label = f"{mode} {kind} {clusters}x{max_jobs} rep {rep}"
            s0 = H.process_cpu(server.pid)
            res = await H.run_worker(
                f"benchmarks.batches:{role}",
                params,
                limit=600,
                profile=(
                    str(
                        ctx.result_path(
                            f"{NAME}-{mode}-{kind}-{clusters}x{max_jobs}-{rep}", ".pyspy.txt"
                        )
                    )
                    if ctx.profile and role == "drain"
                    else None
                ),
                tree=tree,
            )
            s1 = H.process_cpu(server.pid)
            ok = await check_drain(
                checks,
                label,
                res,
                tree=tree,
                library=role == "drain",
                address=server.address,
                creds={c: creds[c] for c in cs},
                loaded={c: loaded[c] for c in cs},
            )
            row = {
                "mode": mode,
                "kind": kind,
                "clusters": clusters,
                "max_jobs": max_jobs,
                "rep": rep,
                "jobs": params["total"],
                **res,
                "jobs_per_s": round(params["total"] / res["seconds"], 1),
                "client_us_per_job": round(1e6 * res["cpu_s"] / params["total"], 2),
                "server_us_per_job": (
                    round(1e6 * (s1 - s0) / params["total"], 2)
                    if s0 is not None and s1 is not None
                    else None
                ),
                "correct": ok,
            }
            runs.append(row)
            H.say(
                f"  {label}: {row['jobs']:,} jobs in {res['seconds']:.3f} s = "
                f"{row['jobs_per_s']:,.0f} jobs/s, client {row['client_us_per_job']} us/job, "
                f"server {row['server_us_per_job']} us/job"
            )
    summary = summarise(runs, [m for m in modes if m != "baseline"])
    targets = []
    for s in summary:
        if s["mode"] not in FORMS:
            continue
        tag = f"{s['kind']} {s['clusters']}x{s['max_jobs']}, {s['mode']}"
        targets.append(H.target(f"jobs/s vs original, {tag}", s["speedup"], GOAL_SPEED, unit="x"))
        targets.append(H.target(f"client CPU per job vs original, {tag}", s["cpu_ratio"],
                                GOAL_CPU, higher_is_better=False, unit="x"))  # fmt: skip
    return {
        "params": {
            "cells": [
                {"kind": k, "clusters": c, "max_jobs": m, "jobs_per_cluster": n}
                for (k, c, m), n in p["cells"].items()
            ],
            "reps": p["reps"],
            "modes": modes,
            "batch": "max_jobs",
            "run_concurrency": RUN_CONCURRENCY,
            "run_wide_concurrency": "one per cluster, 8 at least",
            "client_tree": None if ctx.client_tree is None else str(ctx.client_tree),
        },
        "preload": note,
        "results": {"runs": runs, "summary": summary},
        "targets": targets,
    }


def summarise(runs: list[dict[str, Any]], modes: list[str]) -> list[dict[str, Any]]:
    """Per cell and mode: totals over reps, and the ratios to the original usage (and, for
    a ``_before`` mode's form, this tree's against the other tree's)."""

    def agg(cell: tuple[str, int, int], mode: str) -> dict[str, float]:
        rs = [r for r in runs if (r["kind"], r["clusters"], r["max_jobs"], r["mode"]) ==
              (*cell, mode)]  # fmt: skip
        jobs = sum(r["jobs"] for r in rs)
        server = [r["server_us_per_job"] for r in rs if r["server_us_per_job"] is not None]
        gc_s = [r["gc_s"] for r in rs if "gc_s" in r]
        return {
            "jobs_per_s": jobs / sum(r["seconds"] for r in rs),
            "client_us": 1e6 * sum(r["cpu_s"] for r in rs) / jobs,
            "server_us": sum(server) / len(server) if server else float("nan"),
            # the share of the client's CPU spent in the cyclic garbage collector
            "gc_share": (
                sum(gc_s) / sum(r["cpu_s"] for r in rs) if len(gc_s) == len(rs) else float("nan")
            ),
        }

    out = []
    cells = sorted({(r["kind"], r["clusters"], r["max_jobs"]) for r in runs})
    for cell in cells:
        b = agg(cell, "baseline")
        for mode in modes:
            a = agg(cell, mode)
            row: dict[str, Any] = {
                "kind": cell[0],
                "clusters": cell[1],
                "max_jobs": cell[2],
                "mode": mode,
                "baseline_jobs_per_s": round(b["jobs_per_s"], 1),
                "jobs_per_s": round(a["jobs_per_s"], 1),
                "speedup": round(a["jobs_per_s"] / b["jobs_per_s"], 3),
                "baseline_client_us_per_job": round(b["client_us"], 2),
                "client_us_per_job": round(a["client_us"], 2),
                "cpu_ratio": round(a["client_us"] / b["client_us"], 3),
                "baseline_server_us_per_job": round(b["server_us"], 2),
                "server_us_per_job": round(a["server_us"], 2),
                "baseline_gc_share": round(b["gc_share"], 3),
                "gc_share": round(a["gc_share"], 3),
            }
            if f"{mode}_before" in modes:
                before = agg(cell, f"{mode}_before")
                row["vs_before"] = round(a["jobs_per_s"] / before["jobs_per_s"], 3)
                row["cpu_vs_before"] = round(a["client_us"] / before["client_us"], 3)
            out.append(row)
    return out


# -- worker side ------------------------------------------------------------------------

COUNTERS = ("polls", "empty_polls", "jobs_listed", "handed_out", "accepted", "accept_calls",
            "errors", "accept_errors")  # fmt: skip


def stats_totals(stats: Any) -> dict[str, int]:
    """A poller's counters, or a group's summed over its clusters (result files stay
    small): what the RPC and listing figures per job are computed from."""
    per_cluster = [stats] if "polls" in stats else list(stats.values())
    return {key: sum(int(s.get(key) or 0) for s in per_cluster) for key in COUNTERS}


async def drain(params: dict[str, Any]) -> dict[str, Any]:
    """One client drains ``total`` jobs with the loop or run() form; timed from entering
    the poller or group to owning the last job."""
    import rainbow_aio
    from rainbow_aio import RainbowClient

    secrets: dict[str, str] = params["secrets"]
    total: int = params["total"]
    size: int = params["batch"]
    accepted: list[int] = []
    errors: list[str] = []
    failed = 0
    done_at: list[tuple[float, float, float]] = []
    gc_time = H.GcTime()
    async with RainbowClient(params["address"]) as client:
        if len(secrets) == 1:
            ((cluster, secret),) = secrets.items()
            source: Any = client.poller(cluster, secret, max_jobs=params["max_jobs"])
        else:
            source = client.poll_many(secrets, max_jobs=params["max_jobs"])

        def owned(jobs: Any) -> None:
            for job in jobs:
                _ = job.job.command  # what a real consumer reads
                accepted.append(job.id)
            if len(accepted) >= total and not done_at:
                done_at.append((time.perf_counter(), H.cpu_seconds(), gc_time.seconds))

        cpu0 = H.cpu_seconds()
        t0 = time.perf_counter()
        with gc_time:
            async with source:
                if params["form"] == "loop":
                    async for batch in source.batches(max_size=size):
                        try:
                            owned(await batch.accept())
                        except Exception as exc:
                            errors.append(f"{type(exc).__name__}: {exc}")
                        failed += len(batch.lost) + len(batch.uncertain)
                        if done_at:
                            await source.stop()
                else:

                    async def handler(batch: Any) -> None:
                        owned(batch)
                        if done_at:
                            await source.stop()

                    await source.run(handler, batch_size=size, concurrency=params["concurrency"])
    end_t, end_cpu, end_gc = (
        done_at[0] if done_at else (time.perf_counter(), H.cpu_seconds(), gc_time.seconds)
    )
    return {
        "seconds": round(end_t - t0, 4),
        "cpu_s": round(end_cpu - cpu0, 4),
        "gc_s": round(end_gc, 4),
        "failed_accepts": failed,
        "errors": errors,
        "accepted": accepted,
        "poller_stats": stats_totals(H.jsonable(source.stats)),
        "rainbow_aio_path": str(Path(rainbow_aio.__file__).parent),
    }


async def bare(params: dict[str, Any]) -> dict[str, Any]:
    """No library: one grpc.aio channel, a task per cluster listing ``max_jobs`` jobs,
    parsing each job's JSON and accepting the listing's ids, until a listing is empty."""
    import grpc
    import orjson

    from rainbow_aio._proto import rainbow_pb2 as pb
    from rainbow_aio._proto import rainbow_pb2_grpc as pb_grpc

    max_jobs: int = params["max_jobs"]
    accepted: list[int] = []
    errors: list[str] = []
    counters = {"failed_accepts": 0, "rpcs": 0, "jobs_listed": 0}
    success = pb.AcceptJobsResponse.RESULT_TYPE_SUCCESS
    async with grpc.aio.insecure_channel(params["address"], options=H.UNLIMITED) as channel:
        stub = pb_grpc.RainbowSchedulerStub(channel)
        await channel.channel_ready()

        async def one(cluster: str, secret: str) -> None:
            try:
                while True:
                    listing = await stub.RequestJobs(
                        pb.RequestJobsRequest(cluster=cluster, secret=secret, maxJobs=max_jobs),
                        timeout=60,
                    )
                    counters["rpcs"] += 1
                    if not listing.jobs:
                        return
                    ids = []
                    for job_id, text in listing.jobs.items():
                        _ = orjson.loads(text)["command"]  # what a real consumer reads
                        ids.append(job_id)
                    counters["jobs_listed"] += len(ids)
                    answer = await stub.AcceptJobs(
                        pb.AcceptJobsRequest(cluster=cluster, secret=secret, jobids=ids),
                        timeout=60,
                    )
                    counters["rpcs"] += 1
                    if answer.status != success:
                        counters["failed_accepts"] += 1
                    accepted.extend(ids)
            except Exception as exc:
                errors.append(f"{cluster}: {type(exc).__name__}: {exc}")

        cpu0 = H.cpu_seconds()
        t0 = time.perf_counter()
        with H.GcTime() as gc_time:
            async with asyncio.TaskGroup() as tasks:
                for cluster, secret in params["secrets"].items():
                    tasks.create_task(one(cluster, secret))
        seconds = time.perf_counter() - t0
        cpu = H.cpu_seconds() - cpu0
    return {"seconds": round(seconds, 4), "cpu_s": round(cpu, 4),
            "gc_s": round(gc_time.seconds, 4), "errors": errors, "accepted": accepted,
            **counters}  # fmt: skip
