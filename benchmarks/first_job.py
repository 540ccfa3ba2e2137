"""Time to the first job: from entering a poller or a group to its first batch.

Every cluster has jobs waiting. A worker process connects one client (before the clock
starts), then, for each rep, enters a ``Poller`` (one cluster) or a ``PollerGroup`` of
1, 10 or 1,000 clusters with default options and ``max_jobs=10``, and takes its first
batch (``get_batch``); the time from entering ``async with`` to having that batch is the
figure. The batch is released and the poller closed, so the jobs wait again for the next
rep (each rep with a new client, so no listing state carries over). Medians of the reps;
the first rep of each worker process, which pays for first-time imports and set-up in
the library and in grpc, is also reported on its own (``first_rep_ms``).

A group polls its first 50 clusters at once and spreads the others' first polls, so a
large group's first batch comes from one of the first clusters; the time until every
cluster of a group of 1,000 has polled once is the scale benchmark's.

Target: at most 10 ms for a poller and for small groups (1 and 10 clusters); the group
of 1,000 is reported without a target.

Correctness: every rep got a batch of one of the group's clusters, of at most 10 jobs,
and nothing was accepted (every job is still waiting at the end).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from benchmarks import _harness as H

NAME = "first_job"
TITLE = "Time to the first job: entering a poller or group to its first batch"
GOAL_MS = 10.0
JOBS_PER_CLUSTER = 3
MAX_JOBS = 10

SIZES: dict[str, dict[str, Any]] = {
    "toy": {"variants": {"poller": 1, "group of 1": 1, "group of 10": 10}, "reps": 2},
    "quick": {"variants": {"poller": 1, "group of 1": 1, "group of 10": 10,
                           "group of 1000": 1000}, "reps": 3},
    "full": {"variants": {"poller": 1, "group of 1": 1, "group of 10": 10,
                          "group of 1000": 1000}, "reps": 5},
}  # fmt: skip


async def run(ctx: H.RunContext, checks: H.Checks) -> dict[str, Any]:
    p = SIZES[ctx.size]
    results: list[dict[str, Any]] = []
    async with H.server_process(ctx, NAME) as server:
        sets = {v: H.names(f"f{n}-{H.slug(v)}", n) for v, n in p["variants"].items()}
        async with H.Admin(server.address) as admin:
            creds = await admin.register_many([c for cs in sets.values() for c in cs])
        loaded, note = await H.preload(
            server, creds, {c: JOBS_PER_CLUSTER for cs in sets.values() for c in cs}
        )
        H.say(f"  pre-loaded {note['jobs']:,} jobs by {note['method']} in {note['seconds']} s")
        for variant, cs in sets.items():
            res = await H.run_worker(
                "benchmarks.first_job:measure",
                {
                    "address": server.address,
                    "secrets": {c: creds[c][1] for c in cs},
                    "group": variant != "poller",
                    "reps": p["reps"],
                },
                limit=300,
            )
            ms = [round(1000 * s, 3) for s in res["seconds"]]
            checks.check(
                f"{variant}: every rep got a batch of the group's clusters, at most {MAX_JOBS}",
                all(c in cs and 0 < n <= MAX_JOBS for c, n in res["batches"]),
                f"batches {res['batches']}",
            )
            async with H.Admin(server.address) as admin:
                waiting = await admin.waiting_many({c: creds[c] for c in cs})
            left = sum(len(ids) for ids in waiting.values())
            expected = sum(len(loaded[c]) for c in cs)
            checks.check(f"{variant}: nothing accepted", left == expected, f"{left}/{expected}")
            row = {
                "variant": variant,
                "clusters": len(cs),
                "reps_ms": ms,
                "median_ms": round(statistics.median(ms), 3),
                # the first rep of the worker process pays for first-time imports and set-up
                "first_rep_ms": ms[0],
                "min_ms": min(ms),
                "max_ms": max(ms),
            }
            results.append(row)
            H.say(f"  {variant}: median {row['median_ms']} ms (reps {ms})")
    targets = [
        H.target(
            f"time to the first batch, {r['variant']}",
            r["median_ms"],
            GOAL_MS,
            higher_is_better=False,
            unit="ms",
        )
        for r in results
        if r["clusters"] <= 10
    ]
    return {
        "params": {
            "variants": p["variants"],
            "reps": p["reps"],
            "jobs_per_cluster": JOBS_PER_CLUSTER,
            "max_jobs": MAX_JOBS,
        },
        "preload": note,
        "results": {"variants": results},
        "targets": targets,
    }


# -- worker side ------------------------------------------------------------------------


async def measure(params: dict[str, Any]) -> dict[str, Any]:
    from rainbow_aio import RainbowClient

    secrets: dict[str, str] = params["secrets"]
    seconds: list[float] = []
    batches: list[tuple[str, int]] = []
    for _ in range(params["reps"]):
        async with RainbowClient(params["address"]) as client:
            if params["group"]:
                source: Any = client.poll_many(secrets, max_jobs=MAX_JOBS)
            else:
                ((cluster, secret),) = secrets.items()
                source = client.poller(cluster, secret, max_jobs=MAX_JOBS)
            t0 = time.perf_counter()
            async with source:
                batch = await source.get_batch(MAX_JOBS)
                seconds.append(time.perf_counter() - t0)
                batches.append((batch.cluster, len(batch)))
                batch.release()
    return {"seconds": seconds, "batches": batches}
