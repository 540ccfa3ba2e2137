"""3. Drain rate: a large backlog over many clusters, batched accepts vs one id per call.

20,000 jobs wait across 50 clusters (pre-loaded). One worker process runs a
``PollerGroup`` over the 50 clusters and N consumer tasks; each consumer takes one job
at a time from the group's queue and calls ``await job.accept()`` on it alone. Measured:
the time from starting the group until the last job is accepted, with the default
batched accepts (concurrent ``accept()`` calls of a cluster share one AcceptJobs call)
and with one id per AcceptJobs call (``accept_mode="shared"``), for two settings: the
poller defaults with 64 consumers, and settings sized for a big backlog (``max_jobs``
100, ``queue_size`` 1,000, 256 consumers). Full runs alternate the two modes in ABBA
order, each run on its own fresh clusters and backlog.

Correctness, checked for every run: every loaded job accepted exactly once, every
``accept()`` returned True, nothing left waiting on the server.
"""

from __future__ import annotations

import time
from typing import Any

from benchmarks import _harness as H

NAME = "drain"
TITLE = "Drain rate: 20,000 jobs over 50 clusters, batched vs one-by-one accepts"
CONSUMERS = 64
GOAL_RATE = 10_000.0
GOAL_SPEEDUP = 3.0

# Accept modes (poller option accept_mode), compared side by side.
MODES: dict[str, dict[str, Any]] = {
    "batched": {},  # the default: concurrent accept() calls of a cluster share one call
    "one_by_one": {"accept_mode": "shared"},  # one id per AcceptJobs call
}
# Poller settings and consumer counts: out of the box, and sized for a big backlog
# (more jobs per listing, a queue that holds more than two jobs per cluster, and enough
# consumers that a batch fills up while one accept is in flight).
VARIANTS: dict[str, dict[str, Any]] = {
    "defaults": {"consumers": CONSUMERS, "options": {}},
    "tuned": {"consumers": 256, "options": {"max_jobs": 100, "queue_size": 1000}},
    # consumers taking batches (group.batches()) and accepting each with one call
    "batches": {"consumers": 4, "batch": 1000, "options": {"max_jobs": 100}},
}
GOAL_BATCHES = 30_000.0

SIZES: dict[str, dict[str, Any]] = {
    "toy": {"clusters": 4, "per_cluster": 25, "order": ["batched", "one_by_one"]},
    "quick": {"clusters": 50, "per_cluster": 50, "order": ["batched", "one_by_one"]},
    "full": {
        "clusters": 50,
        "per_cluster": 400,
        "order": ["batched", "one_by_one", "one_by_one", "batched"],
    },
}


async def run(ctx: H.RunContext, checks: H.Checks) -> dict[str, Any]:
    p = SIZES[ctx.size]
    variants = ["defaults"] if ctx.size == "toy" else list(VARIANTS)
    plan = [(v, mode) for v in variants for mode in p["order"]]
    runs = []
    async with H.server_process(ctx, NAME) as server:
        sets = [H.names(f"d{i}-{v}-{mode}", p["clusters"]) for i, (v, mode) in enumerate(plan)]
        async with H.Admin(server.address) as admin:
            creds = await admin.register_many([c for s in sets for c in s])
        loaded, note = await H.preload(
            server, creds, {c: p["per_cluster"] for s in sets for c in s}
        )
        H.say(f"  pre-loaded {note['jobs']:,} jobs by {note['method']} in {note['seconds']} s")
        for i, ((variant, mode), cs) in enumerate(zip(plan, sets, strict=True)):
            total = sum(len(loaded[c]) for c in cs)
            v = VARIANTS[variant]
            s0 = H.process_cpu(server.pid)
            res = await H.run_worker(
                "benchmarks.drain:consume",
                {
                    "address": server.address,
                    "secrets": {c: creds[c][1] for c in cs},
                    "total": total,
                    "consumers": v["consumers"],
                    "options": {**v["options"], **MODES[mode]},
                    **({"batch": v["batch"]} if "batch" in v else {}),
                },
                limit=900,
                profile=(
                    str(ctx.result_path(f"{NAME}-{variant}-{mode}-{i}", ".pyspy.txt"))
                    if ctx.profile
                    else None
                ),
            )
            s1 = H.process_cpu(server.pid)
            async with H.Admin(server.address) as admin:
                remaining = await admin.waiting_many({c: creds[c] for c in cs})
            label = f"{variant}/{mode} run {i}"
            ok = H.verify_drain(
                checks, label, {c: loaded[c] for c in cs}, res.pop("accepted"), remaining
            )
            checks.check(
                f"{label}: every accept() returned True",
                res["failed_accepts"] == 0 and not res["errors"],
                f"{res['failed_accepts']} false, errors {res['errors'][:3]}",
            )
            stats = res.pop("poller_stats") or {}
            counters = _sum_stats(stats)
            row = {
                "variant": variant,
                "mode": mode,
                "run": i,
                "jobs": total,
                **res,
                "jobs_per_s": round(total / res["seconds"], 1),
                "client_cpu_us_per_job": round(1e6 * res["cpu_s"] / total, 1),
                "server_cpu_s": None if s0 is None or s1 is None else round(s1 - s0, 3),
                "accept_calls": counters.get("accept_calls"),
                "polls": counters.get("polls"),
                "jobs_listed": counters.get("jobs_listed"),
                "correct": ok,
            }
            runs.append(row)
            H.say(
                f"  {label}: {total:,} jobs in {res['seconds']:.2f} s = "
                f"{row['jobs_per_s']:,.0f} jobs/s; {row['accept_calls']} AcceptJobs calls, "
                f"{row['polls']} polls; client CPU {row['client_cpu_us_per_job']} us/job"
            )
    summary: dict[str, Any] = {}
    targets = []
    for variant in variants:
        rate = {}
        for mode in MODES:
            rs = [r for r in runs if r["mode"] == mode and r["variant"] == variant]
            rate[mode] = sum(r["jobs"] for r in rs) / sum(r["seconds"] for r in rs)
        speedup = rate["batched"] / rate["one_by_one"]
        summary[variant] = {
            "batched_jobs_per_s": round(rate["batched"], 1),
            "one_by_one_jobs_per_s": round(rate["one_by_one"], 1),
            "speedup": round(speedup, 3),
        }
        goal = GOAL_BATCHES if variant == "batches" else GOAL_RATE
        targets += [
            H.target(f"{variant}: batched accepts, jobs/s", rate["batched"], goal,
                     unit="jobs/s"),
            H.target(f"{variant}: batched / one-by-one", speedup, GOAL_SPEEDUP, unit="x"),
        ]  # fmt: skip
    return {
        "params": {**p, "variants": {v: VARIANTS[v] for v in variants}, "modes": MODES},
        "preload": note,
        "results": {"runs": runs, "summary": summary},
        "targets": targets,
    }


def _sum_stats(stats: dict[str, Any]) -> dict[str, int]:
    out: dict[str, int] = {}
    for s in stats.values():
        for k, v in s.items():
            if isinstance(v, int) and not isinstance(v, bool):
                out[k] = out.get(k, 0) + v
    return out


# -- worker side ----------------------------------------------------------------------------


async def consume(params: dict[str, Any]) -> dict[str, Any]:
    from rainbow_aio import RainbowClient

    async with RainbowClient(params["address"]) as client:
        cpu0 = H.cpu_seconds()
        t0 = time.perf_counter()
        async with client.poll_many(params["secrets"], **params["options"]) as group:
            params.setdefault("consumers", CONSUMERS)
            result = await H.drain(group, params, limit=800, t0=t0, cpu0=cpu0)
            result["poller_stats"] = H.jsonable(group.stats)
    return result
