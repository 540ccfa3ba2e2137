"""4. Scale of pollers: 10 to 10,000 idle pollers (one cluster each) in one process.

The clusters are registered once (concurrently); then, for each count N, a fresh worker
process connects one client, measures its RSS, starts a ``PollerGroup`` over N clusters
that have no jobs, with the default options (idle interval 0.25 s doubling to 5 s; idle
polls of the whole group within its budget of 500 a second), waits until every poller
has polled and settled at its idle interval, and then measures over a steady window:

- RSS growth per poller (RSS after the window - RSS before the group, / N);
- CPU use of the process (% of one core), the same before the group starts (the lag
  probe alone), and CPU per poll net of that;
- event-loop lag: a probe task sleeps 10 ms in a loop; lag = how late it wakes (p50,
  p99, max over the window);
- achieved polls/s (from ``group.stats``) against the expected
  min(N / (0.75 IDLE), budget) (each wait is drawn from half to all of the interval);
- how long a job submitted to an idle cluster waits before it is handed out: after the
  window, jobs are submitted to random clusters at random moments and the time from
  each submit to its hand-out is recorded (p50, p99);
- time to start (``__aenter__``) and until every poller has polled once; time to stop
  (``__aexit__``), and that it stopped cleanly: no poll errors, no task left behind.

Correctness: every poll answered without error, every poller polled, and no job was
handed out (the clusters are empty).
"""

from __future__ import annotations

import asyncio
import gc
import random
import time
from typing import Any

from benchmarks import _harness as H

NAME = "scale"
TITLE = "Scale: idle pollers in one process (RSS, CPU, loop lag, poll rate, start/stop)"
PROBE = 0.010
GOAL_RSS_KIB = 16.0
GOAL_LAG_MS = 50.0
GOAL_IDLE_POLLS = 500.0  # RequestJobs a second of a whole idle group, however big
BUDGET = 500.0  # the group's default idle_polls_per_second

# The poller draws each wait uniformly from [1/2, 1] of its interval (its docstring), so
# an idle poller's mean interval is 3/4 of max_interval.
JITTER_MEAN = 0.75

SIZES: dict[str, dict[str, Any]] = {
    "toy": {"counts": [20], "idle": 0.2, "settle": 0.3, "window": 0.4, "latency_jobs": 5,
            "latency_spread": 0.5},
    "quick": {"counts": [100, 1000], "idle": 1.0, "settle": 2.0, "window": 1.5,
              "latency_jobs": 20, "latency_spread": 3.0},
    # idle = the default max_interval (5 s): what an idle poller does out of the box
    "full": {"counts": [10, 100, 1000, 10_000], "idle": 5.0, "settle": 15.0, "window": 15.0,
             "latency_jobs": 100, "latency_spread": 20.0},
}  # fmt: skip


async def run(ctx: H.RunContext, checks: H.Checks) -> dict[str, Any]:
    p = SIZES[ctx.size]
    rows = []
    async with H.server_process(ctx, NAME) as server:
        all_names = H.names("s", max(p["counts"]))
        t0 = time.perf_counter()
        async with H.Admin(server.address) as admin:
            creds = await admin.register_many(all_names, in_flight=128)
        reg_s = time.perf_counter() - t0
        H.say(f"  registered {len(creds):,} clusters in {reg_s:.1f} s")
        for n in p["counts"]:
            s0 = H.process_cpu(server.pid)
            res = await H.run_worker(
                "benchmarks.scale:idle",
                {
                    "address": server.address,
                    "secrets": {c: creds[c][1] for c in all_names[:n]},
                    "tokens": {c: creds[c][0] for c in all_names[:n]},
                    "latency_jobs": p["latency_jobs"],
                    "latency_spread": p["latency_spread"],
                    "idle": p["idle"],
                    "settle": p["settle"],
                    "window": p["window"],
                },
                limit=300 + 3 * (p["settle"] + p["window"]),
                profile=str(ctx.result_path(f"{NAME}-{n}", ".pyspy.txt")) if ctx.profile else None,
            )
            s1 = H.process_cpu(server.pid)
            res["server_cpu_s"] = None if s0 is None or s1 is None else round(s1 - s0, 3)
            rows.append(res)
            checks.check(
                f"{n} pollers: every poll answered without error",
                res["poll_errors"] == 0,
                f"{res['polls_total']} polls, {res['poll_errors']} errors {res['last_errors'][:2]}",
            )
            checks.check(
                f"{n} pollers: every poller polled", res["pollers_polled"] == n,
                f"{res['pollers_polled']}/{n}",
            )  # fmt: skip
            checks.check(
                f"{n} pollers: every probe job handed out once, nothing else",
                res["handed_out"] == res["latency"]["n"] == p["latency_jobs"],
                f"{res['handed_out']} handed out, {res['latency']['n']} probe jobs seen",
            )
            checks.check(
                f"{n} pollers: stopped cleanly (no task left)",
                res["tasks_left_after_stop"] == 0 and not res["stop_error"],
                f"{res['tasks_left_after_stop']} tasks, error {res['stop_error']}",
            )
            H.say(
                f"  {n:>6} pollers: RSS {res['rss_per_poller_kib']} KiB/poller, CPU "
                f"{res['cpu_pct']}%, lag p99 {res['lag']['p99_ms']} ms, polls/s "
                f"{res['polls_per_s']} (expected {res['expected_polls_per_s']}), start "
                f"{res['start_s']} s (all polled {res['all_polled_s']} s), stop {res['stop_s']} s"
                f", job wait p50 {res['latency']['p50_ms']} ms p99 {res['latency']['p99_ms']} ms"
            )
    targets = []
    for r in rows:
        if r["pollers"] >= 1000:
            targets.append(H.target(f"RSS per poller, {r['pollers']:,} pollers",
                                    r["rss_per_poller_kib"], GOAL_RSS_KIB,
                                    higher_is_better=False, unit="KiB"))  # fmt: skip
        if r["pollers"] >= 1000:
            targets.append(H.target(f"event-loop lag p99, {r['pollers']:,} pollers",
                                    r["lag"]["p99_ms"], GOAL_LAG_MS, higher_is_better=False,
                                    unit="ms"))  # fmt: skip
            targets.append(H.target(f"RequestJobs/s of {r['pollers']:,} idle pollers",
                                    r["polls_per_s"], GOAL_IDLE_POLLS * 1.05,
                                    higher_is_better=False, unit="/s"))  # fmt: skip
    params = {**p, "probe_interval_s": PROBE, "register_seconds": round(reg_s, 2)}
    return {"params": params, "results": {"rows": rows}, "targets": targets}


def chart(payload: dict[str, Any], path: str) -> bool:
    import matplotlib.pyplot as plt

    rows = payload["results"]["rows"]
    xs = [r["pollers"] for r in rows]
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.8))
    series = [
        ("RSS per poller (KiB)", [r["rss_per_poller_kib"] for r in rows], GOAL_RSS_KIB),
        ("process CPU (% of a core)", [r["cpu_pct"] for r in rows], None),
        ("event-loop lag p99 (ms)", [r["lag"]["p99_ms"] for r in rows], GOAL_LAG_MS),
        ("achieved / expected poll rate", [r["poll_rate_ratio"] for r in rows], 1.0),
    ]
    for ax, (title, ys, goal) in zip(axes, series, strict=True):
        ax.plot(xs, ys, "-o")
        if goal is not None:
            ax.axhline(goal, color="r", ls="--", lw=1, label="target" if goal != 1.0 else "1.0")
            ax.legend(fontsize=7)
        ax.set_xscale("log")
        ax.set_xlabel("idle pollers in one process")
        ax.set_title(title, fontsize=9)
        ax.grid(True, alpha=0.3)
    idle = payload["params"]["idle"]
    fig.suptitle(f"Idle pollers (one cluster each) polling every {idle:g} s")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# -- worker side ----------------------------------------------------------------------------


async def idle(params: dict[str, Any]) -> dict[str, Any]:
    from rainbow_aio import RainbowClient

    secrets: dict[str, str] = params["secrets"]
    n = len(secrets)
    idle_s = params["idle"]
    loop = asyncio.get_running_loop()
    lags: list[tuple[float, float]] = []  # (when, how late)
    stop_probe = asyncio.Event()

    async def probe() -> None:
        while not stop_probe.is_set():
            t = loop.time()
            await asyncio.sleep(PROBE)
            now = loop.time()
            lags.append((now, now - t - PROBE))

    def total(stats: Any, field: str) -> int:
        return sum(getattr(s, field) for s in stats.values())

    async with RainbowClient(params["address"]) as client:
        await client.ping()
        gc.collect()
        tasks_before = len(asyncio.all_tasks())
        probe_task = asyncio.create_task(probe())
        await asyncio.sleep(0.2)
        # what the process costs with the probe running and no poller, subtracted below
        base_cpu0, base_t0 = H.cpu_seconds(), loop.time()
        await asyncio.sleep(min(1.0, params["window"]))
        base_pct = 100 * (H.cpu_seconds() - base_cpu0) / (loop.time() - base_t0)
        rss0 = H.rss_bytes()
        t0 = time.perf_counter()
        group = client.poll_many(
            secrets,
            min_interval=min(0.25, idle_s),  # the default, unless the idle interval is shorter
            max_interval=idle_s,
            idle_polls_per_second=BUDGET,
        )
        await group.__aenter__()
        start_s = time.perf_counter() - t0
        stop_error = None
        try:
            all_polled_s = None
            while time.perf_counter() - t0 < 120:
                polled = sum(1 for s in group.stats.values() if s.polls + s.errors > 0)
                if polled >= n:
                    all_polled_s = time.perf_counter() - t0
                    break
                await asyncio.sleep(0.25)  # a stats snapshot of 10,000 pollers is not free
            await asyncio.sleep(max(0.0, params["settle"] - (time.perf_counter() - t0)))
            stats0 = group.stats
            cpu0, w0 = H.cpu_seconds(), loop.time()
            await asyncio.sleep(params["window"])
            stats1 = group.stats
            cpu1, w1 = H.cpu_seconds(), loop.time()
            rss1 = H.rss_bytes()
            waits = await job_waits(client, group, params)
        finally:
            t1 = time.perf_counter()
            try:
                await group.__aexit__(None, None, None)
            except Exception as exc:
                stop_error = f"{type(exc).__name__}: {exc}"
            stop_s = time.perf_counter() - t1
        stop_probe.set()
        await probe_task
        await asyncio.sleep(0)
        tasks_left = len(asyncio.all_tasks()) - tasks_before
    window = w1 - w0
    polls = total(stats1, "polls") - total(stats0, "polls")
    configured = n / idle_s
    expected = min(configured / JITTER_MEAN, BUDGET)
    in_window = [lag for when, lag in lags if w0 <= when <= w1]
    lag = H.latency_summary(in_window)
    errors = [s.last_error for s in stats1.values() if s.last_error][:5]
    return {
        "pollers": n,
        "idle_interval_s": idle_s,
        "rss_before_mib": round(rss0 / 2**20, 2),
        "rss_after_mib": round(rss1 / 2**20, 2),
        "rss_per_poller_kib": round((rss1 - rss0) / n / 1024, 3),
        "cpu_pct": round(100 * (cpu1 - cpu0) / window, 2),
        "cpu_pct_without_pollers": round(base_pct, 2),
        "cpu_us_per_poll": (
            round(1e6 * ((cpu1 - cpu0) - base_pct / 100 * window) / polls, 1) if polls else None
        ),
        "window_s": round(window, 3),
        "polls_in_window": polls,
        "polls_per_s": round(polls / window, 1),
        "configured_polls_per_s": round(configured, 1),
        "expected_polls_per_s": round(expected, 1),
        "poll_rate_ratio": round(polls / window / expected, 3),
        "lag": lag,
        "lag_max_during_start_ms": round(
            1000 * max((lag for when, lag in lags if when < w0), default=0.0), 3
        ),
        "start_s": round(start_s, 4),
        "all_polled_s": None if all_polled_s is None else round(all_polled_s, 3),
        "stop_s": round(stop_s, 4),
        "stop_error": stop_error,
        "tasks_left_after_stop": tasks_left,
        "polls_total": total(stats1, "polls"),
        "poll_errors": total(stats1, "errors"),
        "last_errors": errors,
        "pollers_polled": sum(1 for s in stats1.values() if s.polls > 0),
        "handed_out": total(group.stats, "handed_out"),
        "latency": H.latency_summary(waits),
    }


async def job_waits(client: Any, group: Any, params: dict[str, Any]) -> list[float]:
    """Submit ``latency_jobs`` jobs to random idle clusters at random moments over
    ``latency_spread`` seconds; the seconds from each submit to its hand-out."""
    rng = random.Random(7)
    names = list(params["tokens"])
    count, spread = params["latency_jobs"], params["latency_spread"]
    submitted: dict[int, float] = {}
    handed: dict[int, float] = {}
    loop = asyncio.get_running_loop()

    async def submit_all() -> None:
        for at in sorted(rng.uniform(0, spread) for _ in range(count)):
            await asyncio.sleep(max(0.0, at - (loop.time() - begun)))
            cluster = rng.choice(names)
            sent = loop.time()  # the job may be handed out before this call returns
            job_id = await client.submit_job(cluster, params["tokens"][cluster], "true")
            submitted[job_id] = sent

    async def take_all() -> None:
        while len(handed) < count:
            job = await group.get()
            handed[job.id] = loop.time()
            await job.accept()

    begun = loop.time()
    async with asyncio.timeout(spread + 120):
        await asyncio.gather(submit_all(), take_all())
    return [handed[job_id] - sent for job_id, sent in submitted.items()]
