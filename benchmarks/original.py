"""2. Against the way the original bindings are used: channel per call, thread per cluster.

The original Python bindings' scripts open a synchronous gRPC channel for every call and
poll then accept; polling many clusters the obvious way means one thread per cluster.
``baseline`` below reproduces that usage (written for this benchmark): each cluster's
thread loops "new channel, RequestJobs(maxJobs), close; parse the JSON of each job; new
channel, AcceptJobs(every listed id), close" until a listing comes back empty.

rainbow-aio drains the same backlog with one process and one channel: a ``Poller`` (one
cluster) or a ``PollerGroup`` (100 clusters) at the same ``max_jobs``, and consumer tasks
that each ``await job.accept()`` individually (accepts are batched by the poller): 64
consumers with every other setting at its default, "tuned" (``queue_size`` 1,000,
256 consumers, full runs only), and "batches": 4 consumers that each take a batch of up
to 1,000 jobs of one cluster (``get_batch``) and accept it with ``batch.accept()`` (one
AcceptJobs for the batch), with every other setting at its default.

For 1 and 100 clusters and ``max_jobs`` 1, 10 and 100, both drain identical pre-loaded
backlogs on the same server (fresh clusters for each run; the two take turns going
first). Measured: jobs drained per second (loaded jobs / time until the last accept),
and the client process's CPU seconds (``getrusage``: user + system, all threads) per
1,000 jobs.

Correctness, checked for every run: every loaded job was accepted exactly once (no
duplicates, nothing else accepted), no accept came back anything but SUCCESS/True, and
nothing is left waiting on the server.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import grpc

from benchmarks import _harness as H
from rainbow_aio._proto import rainbow_pb2 as pb
from rainbow_aio._proto import rainbow_pb2_grpc as pb_grpc

NAME = "original"
TITLE = "rainbow-aio poller vs the original bindings' usage (channel per call, thread per cluster)"
GOAL_SPEED = 5.0
GOAL_CPU = 0.2
# consumers taking batches: in every cell, at least GOAL_BATCH_SPEED times the original's
# jobs/s at no more than GOAL_BATCH_CPU times its client CPU per job
GOAL_BATCH_SPEED = 1.5
GOAL_BATCH_CPU = 0.5
# one job at a time, with defaults: no cell slower than the client of --client-tree
GOAL_VS_BEFORE = 1.0

# How rainbow-aio drains: at the same max_jobs as the original, with every other setting
# at its default and 64 consumers; and "tuned" for a big backlog (a merged queue of 1,000
# instead of 100, and 256 consumers, so that accepts batch up while one is in flight).
RAINBOW_MODES: dict[str, dict[str, Any]] = {
    "baseline": {},
    "rainbow_aio": {"consumers": 64, "options": {}},
    "rainbow_aio_tuned": {"consumers": 256, "options": {"queue_size": 1000}},
    # consumers that take jobs in batches (poller.batches()) and accept each batch with
    # one call; the same max_jobs per listing as the original
    "rainbow_aio_batches": {"consumers": 4, "batch": 1000, "options": {}},
}
# With --client-tree DIR: "rainbow_aio" again, with the rainbow_aio of DIR (an older
# checkout), so that the per-job path is compared before/after in the same run.
BEFORE_MODE = "rainbow_aio_before"


def mode_settings(mode: str) -> dict[str, Any]:
    """The consumers and poller options of a rainbow-aio mode (the before mode: the
    per-job mode's)."""
    return RAINBOW_MODES["rainbow_aio" if mode == BEFORE_MODE else mode]


# (clusters, max_jobs) -> jobs per cluster
SIZES: dict[str, dict[str, Any]] = {
    "toy": {"configs": {(1, 10): 20, (2, 1): 3}, "reps": 1},
    "quick": {"configs": {(1, 1): 60, (1, 10): 400, (1, 100): 2000, (100, 1): 2,
                          (100, 10): 10, (100, 100): 20}, "reps": 1},
    "full": {"configs": {(1, 1): 3000, (1, 10): 8000, (1, 100): 30000, (100, 1): 30,
                         (100, 10): 150, (100, 100): 300}, "reps": 3},
}  # fmt: skip


async def run(ctx: H.RunContext, checks: H.Checks) -> dict[str, Any]:
    p = SIZES[ctx.size]
    # the tuned variant only in full runs: quick and toy runs stay short
    modes = (
        list(RAINBOW_MODES)
        if ctx.size == "full"
        else ["baseline", "rainbow_aio", "rainbow_aio_batches"]
    )
    if ctx.client_tree is not None:
        modes.append(BEFORE_MODE)
    plan = []  # (config, rep, mode) in run order: each mode takes its turn going first
    for n, cfg in enumerate(p["configs"]):
        for rep in range(p["reps"]):
            k = (n + rep) % len(modes)
            plan += [(cfg, rep, mode) for mode in modes[k:] + modes[:k]]
    runs: list[dict[str, Any]] = []
    async with H.server_process(ctx, NAME) as server:
        cluster_sets = {
            (cfg, rep, mode): H.names(f"o{cfg[0]}x{cfg[1]}-{rep}-{mode}", cfg[0])
            for cfg, rep, mode in plan
        }
        all_names = [c for cs in cluster_sets.values() for c in cs]
        async with H.Admin(server.address) as admin:
            creds = await admin.register_many(all_names)
        per_cluster = {c: p["configs"][cfg] for (cfg, _, _), cs in cluster_sets.items() for c in cs}
        loaded, note = await H.preload(server, creds, per_cluster)
        H.say(f"  pre-loaded {note['jobs']:,} jobs by {note['method']} in {note['seconds']} s")
        for cfg, rep, mode in plan:
            clusters, max_jobs = cfg
            cs = cluster_sets[(cfg, rep, mode)]
            params = {
                "address": server.address,
                "secrets": {c: creds[c][1] for c in cs},
                "max_jobs": max_jobs,
                "total": sum(len(loaded[c]) for c in cs),
                **mode_settings(mode),
            }
            role = "baseline" if mode == "baseline" else "drain_with_poller"
            tree = ctx.client_tree if mode == BEFORE_MODE else None
            label = f"{mode} {clusters} cluster(s) max_jobs={max_jobs} rep {rep}"
            s0 = H.process_cpu(server.pid)
            res = await H.run_worker(
                f"benchmarks.original:{role}",
                params,
                limit=600,
                profile=(
                    str(ctx.result_path(f"{NAME}-{mode}-{clusters}x{max_jobs}-{rep}", ".pyspy.txt"))
                    if ctx.profile
                    else None
                ),
                tree=tree,
            )
            s1 = H.process_cpu(server.pid)
            verify_ok = await check_drain(
                checks,
                label,
                res,
                tree=tree,
                library=role != "baseline",
                address=server.address,
                creds={c: creds[c] for c in cs},
                loaded={c: loaded[c] for c in cs},
            )
            row = {
                "mode": mode,
                "clusters": clusters,
                "max_jobs": max_jobs,
                "rep": rep,
                "jobs": params["total"],
                **res,
                "jobs_per_s": round(params["total"] / res["seconds"], 1),
                "client_cpu_s_per_1000": round(1000 * res["cpu_s"] / params["total"], 4),
                "server_cpu_s_per_1000": (
                    round(1000 * (s1 - s0) / params["total"], 4)
                    if s0 is not None and s1 is not None
                    else None
                ),
                "correct": verify_ok,
            }
            runs.append(row)
            H.say(
                f"  {label}: {row['jobs']:,} jobs in {res['seconds']:.2f} s = "
                f"{row['jobs_per_s']:,.0f} jobs/s, client CPU {row['client_cpu_s_per_1000']} "
                f"s/1000 jobs"
            )
    summary = summarise(runs, [m for m in modes if m != "baseline"])
    targets = []
    for s in summary:
        tag = f"{s['clusters']} cluster(s), max_jobs={s['max_jobs']}"
        speed, cpu = GOAL_SPEED, GOAL_CPU
        if s["mode"] == "rainbow_aio_tuned":
            tag += ", tuned"
        elif s["mode"] == "rainbow_aio_batches":
            tag += ", batches"
            speed, cpu = GOAL_BATCH_SPEED, GOAL_BATCH_CPU
        elif s["mode"] == BEFORE_MODE:
            continue  # the older client is a reference, not a target
        if s["mode"] == "rainbow_aio" and "vs_before" in s:
            targets.append(H.target(f"per-job jobs/s vs before, {tag}", s["vs_before"],
                                    GOAL_VS_BEFORE, unit="x"))  # fmt: skip
        targets.append(H.target(f"jobs/s vs original, {tag}", s["speedup"], speed, unit="x"))
        targets.append(H.target(f"CPU per job vs original, {tag}", s["cpu_ratio"], cpu,
                                higher_is_better=False, unit="x"))  # fmt: skip
    params_out = {
        "configs": [
            {"clusters": c, "max_jobs": m, "jobs_per_cluster": n}
            for (c, m), n in p["configs"].items()
        ],
        "reps": p["reps"],
        "modes": {m: mode_settings(m) for m in modes},
        "client_tree": None if ctx.client_tree is None else str(ctx.client_tree),
    }
    return {
        "params": params_out,
        "preload": note,
        "results": {"runs": runs, "summary": summary},
        "targets": targets,
    }


def summarise(runs: list[dict[str, Any]], modes: list[str]) -> list[dict[str, Any]]:
    """Per configuration and rainbow-aio mode: totals over reps, and the two ratios."""
    out = []

    def agg(clusters: int, max_jobs: int, mode: str) -> dict[str, float]:
        rs = [r for r in runs if (r["clusters"], r["max_jobs"], r["mode"]) ==
              (clusters, max_jobs, mode)]  # fmt: skip
        jobs = sum(r["jobs"] for r in rs)
        return {
            "jobs_per_s": jobs / sum(r["seconds"] for r in rs),
            "cpu_per_1000": 1000 * sum(r["cpu_s"] for r in rs) / jobs,
        }

    for clusters, max_jobs in sorted({(r["clusters"], r["max_jobs"]) for r in runs}):
        b = agg(clusters, max_jobs, "baseline")
        before = agg(clusters, max_jobs, BEFORE_MODE) if BEFORE_MODE in modes else None
        for mode in modes:
            a = agg(clusters, max_jobs, mode)
            versus = {}
            if before is not None and mode == "rainbow_aio":
                versus = {
                    "before_jobs_per_s": round(before["jobs_per_s"], 1),
                    "vs_before": round(a["jobs_per_s"] / before["jobs_per_s"], 3),
                    "cpu_vs_before": round(a["cpu_per_1000"] / before["cpu_per_1000"], 4),
                }
            out.append(
                {
                    **versus,
                    "clusters": clusters,
                    "max_jobs": max_jobs,
                    "mode": mode,
                    "baseline_jobs_per_s": round(b["jobs_per_s"], 1),
                    "rainbow_aio_jobs_per_s": round(a["jobs_per_s"], 1),
                    "speedup": round(a["jobs_per_s"] / b["jobs_per_s"], 3),
                    "baseline_cpu_s_per_1000": round(b["cpu_per_1000"], 4),
                    "rainbow_aio_cpu_s_per_1000": round(a["cpu_per_1000"], 4),
                    "cpu_ratio": round(a["cpu_per_1000"] / b["cpu_per_1000"], 4),
                }
            )
    return out


def chart(payload: dict[str, Any], path: str) -> bool:
    import matplotlib.pyplot as plt

    summary = payload["results"]["summary"]
    configs = sorted({(s["clusters"], s["max_jobs"]) for s in summary})
    modes = sorted({s["mode"] for s in summary})
    labels = [f"{c}c / mj {m}" for c, m in configs]
    xs = list(range(len(configs)))
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4))
    w = 0.8 / (1 + len(modes))
    names = {
        "rainbow_aio": "rainbow-aio poller, defaults + max_jobs, 64 consumers",
        "rainbow_aio_tuned": "rainbow-aio poller, queue_size 1000, 256 consumers",
        "rainbow_aio_batches": "rainbow-aio poller, batches of up to 1,000, 4 consumers",
        BEFORE_MODE: "the --client-tree's poller, defaults + max_jobs, 64 consumers",
    }
    for ax, key, ylabel in (
        (axes[0], "jobs_per_s", "jobs drained per second (log)"),
        (axes[1], "cpu_s_per_1000", "client CPU s per 1,000 jobs (log)"),
    ):
        base = {(s["clusters"], s["max_jobs"]): s[f"baseline_{key}"] for s in summary}
        ax.bar(
            [x - 0.4 + w / 2 for x in xs],
            [base[c] for c in configs],
            w,
            label="original usage: sync, channel per call, thread per cluster",
        )
        for i, mode in enumerate(modes, start=1):
            vals = {
                (s["clusters"], s["max_jobs"]): s[f"rainbow_aio_{key}"]
                for s in summary
                if s["mode"] == mode
            }
            ax.bar(
                [x - 0.4 + w / 2 + i * w for x in xs],
                [vals[c] for c in configs],
                w,
                label=names.get(mode, mode),
            )
        ax.set_xticks(xs, labels, fontsize=8)
        ax.set_yscale("log")
        ax.set_ylabel(ylabel)
        ax.grid(True, axis="y", alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle("Draining the same backlog: clusters (c) and max_jobs (mj)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# -- worker side: the original usage --------------------------------------------------------


async def check_drain(
    checks: H.Checks,
    label: str,
    res: dict[str, Any],
    *,
    tree: Path | None,
    library: bool,
    address: str,
    creds: dict[str, str],
    loaded: dict[str, Any],
) -> bool:
    """The checks after one drain by a worker: with ``library``, it imported the
    ``rainbow_aio`` of ``tree`` (None: this checkout); every loaded job was accepted
    once and none is left, and every accept answered success. Pops the worker's
    ``rainbow_aio_path`` and ``accepted`` from ``res``; whether the drain was correct."""
    if library:
        used = res.pop("rainbow_aio_path")
        expected = (tree if tree is not None else H.ROOT) / "rainbow_aio"
        checks.check(
            f"{label}: ran the rainbow_aio of {shown_tree(tree)}",
            same_directory(Path(used), expected),
            f"imported {used}",
        )
    async with H.Admin(address) as admin:
        remaining = await admin.waiting_many(creds)
    ok = H.verify_drain(checks, label, loaded, res.pop("accepted"), remaining)
    checks.check(
        f"{label}: every accept answered success",
        res["failed_accepts"] == 0 and not res["errors"],
        f"{res['failed_accepts']} failed accepts, errors: {res['errors'][:3]}",
    )
    return ok


def shown_tree(tree: Path | None) -> str:
    return "this checkout" if tree is None else str(tree)


def same_directory(a: Path, b: Path) -> bool:
    return a.resolve() == b.resolve()


def baseline(params: dict[str, Any]) -> dict[str, Any]:
    """Thread per cluster; a new synchronous channel for every call; poll then accept."""
    address = params["address"]
    max_jobs = params["max_jobs"]
    accepted: list[int] = []
    errors: list[str] = []
    counters = {"failed_accepts": 0, "rpcs": 0}
    lock = threading.Lock()
    success = pb.AcceptJobsResponse.RESULT_TYPE_SUCCESS

    def drain(cluster: str, secret: str) -> None:
        mine: list[int] = []
        rpcs = failed = 0
        try:
            while True:
                with grpc.insecure_channel(address) as channel:
                    listing = pb_grpc.RainbowSchedulerStub(channel).RequestJobs(
                        pb.RequestJobsRequest(cluster=cluster, secret=secret, maxJobs=max_jobs),
                        timeout=60,
                    )
                rpcs += 1
                if not listing.jobs:
                    break
                # The original scripts print each job's JSON for inspection; parse it.
                ids = [json.loads(text)["id"] for text in listing.jobs.values()]
                with grpc.insecure_channel(address) as channel:
                    answer = pb_grpc.RainbowSchedulerStub(channel).AcceptJobs(
                        pb.AcceptJobsRequest(cluster=cluster, secret=secret, jobids=ids),
                        timeout=60,
                    )
                rpcs += 1
                if answer.status != success:
                    failed += 1
                mine.extend(ids)
        except Exception as exc:
            with lock:
                errors.append(f"{cluster}: {type(exc).__name__}: {exc}")
        with lock:
            accepted.extend(mine)
            counters["rpcs"] += rpcs
            counters["failed_accepts"] += failed

    threads = [
        threading.Thread(target=drain, args=(c, s), name=f"cluster-{c}")
        for c, s in params["secrets"].items()
    ]
    cpu0 = H.cpu_seconds()
    t0 = time.perf_counter()
    with H.GcTime() as gc_time:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    seconds = time.perf_counter() - t0
    cpu = H.cpu_seconds() - cpu0
    return {
        "seconds": round(seconds, 4),
        "cpu_s": round(cpu, 4),
        "gc_s": round(gc_time.seconds, 4),
        "rpcs": counters["rpcs"],
        "channels_opened": counters["rpcs"],
        "failed_accepts": counters["failed_accepts"],
        "errors": errors,
        "accepted": accepted,
    }


# -- worker side: rainbow-aio ----------------------------------------------------------------


async def drain_with_poller(params: dict[str, Any]) -> dict[str, Any]:
    """One client, one channel; a Poller (or PollerGroup) and 64 accepting consumers."""
    import rainbow_aio
    from rainbow_aio import RainbowClient

    secrets: dict[str, str] = params["secrets"]
    async with RainbowClient(params["address"]) as client:
        cpu0 = H.cpu_seconds()
        t0 = time.perf_counter()
        options = {"max_jobs": params["max_jobs"], **params["options"]}
        if len(secrets) == 1:
            ((cluster, secret),) = secrets.items()
            source: Any = client.poller(cluster, secret, **options)
        else:
            source = client.poll_many(secrets, **options)
        async with source as jobs:
            result = await H.drain(jobs, params, limit=600, t0=t0, cpu0=cpu0)
            result["poller_stats"] = H.jsonable(getattr(jobs, "stats", None))
    result["rainbow_aio_path"] = str(Path(rainbow_aio.__file__).parent)
    return result
