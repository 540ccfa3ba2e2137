"""6. Server: calls/s and latency by calls in flight and jobs stored; a 1M-job backlog; a flood.

The load generators are separate processes using the raw generated ``grpc.aio`` stub (so
the figures are the server's, not the client library's), except the flood, which uses
``RainbowClient`` because its retries are part of what is measured.

Part 1, rates: for each number of jobs stored (pre-loaded into one cluster's queue) it
runs, for each RPC and each number of calls in flight, a short warm-up and then a timed
phase, recording every call's latency. RequestJobs runs first, so it sees exactly that
many jobs stored; SubmitJob phases then add their own jobs (the result records the table
size at the start of every phase), and those are deleted before the next level, so each
level starts from its exact count. Checks: every SubmitJob answers SUBMIT_SUCCESS with a
real, distinct id, and afterwards exactly the acknowledged ids are waiting on the server
(none lost, none extra); every RequestJobs answers the 10 lowest ids of the stored cluster.

Part 2, backlog: one cluster holds 10 waiting jobs, then a backlog of a million (written
by the bulk loader, jobs of about 150 bytes of JSON), then only 1% of it after the
lowest 99% were accepted through AcceptJobs. At each of the three states it measures,
in this order: RequestJobs(maxJobs 10) latency at 1 call in flight, served from the
server's cache of short answers and fresh from the database (each fresh listing follows
an untimed AcceptJobs of an id that does not exist, which drops the cache without
changing the jobs); Serial, a call that does no work, as the floor; the server's CPU per
fresh listing at 16 in flight; the cached listing rate at 16 in flight; SubmitJob at 64
in flight; the server's RSS; then the restart time on the file (process start to the
first RequestJobs answered). At a million waiting, one client lists every job
(maxJobs 0) while another process keeps making small calls (SubmitJob and
RequestJobs(10) of other clusters); the slowest small call that overlapped the listing
is the figure. Checks: every answer holds exactly the expected lowest ids; the full
listing holds exactly the backlog.

Part 3, flood: many client processes, each with one ``RainbowClient`` (default retry
policy), start their share of 10,000 submits at the same moment, against a server with
the default limits and then against one allowing 100 calls in flight (whether 10,000
calls get past the default 500 depends on how fast the event loop takes them in). The
server answers the calls past its bounds ``database is locked`` and the clients retry
them. Checks: exactly the acknowledged jobs are stored (by a serial in each command); a
submit that failed for good failed only with that retryable answer; with the bound of
100, the server did refuse calls. Its RSS is sampled throughout.

Part 4, cost per job: one process on the raw stub drains a pre-loaded backlog of 100
clusters (600 jobs each at full size) as the batch cells do, each cluster in turn
RequestJobs(maxJobs 100) then AcceptJobs of every id listed, so every job is listed
once and accepted once; the figure is the server process's CPU (all its threads) per
job, from /proc, with the event loop's thread apart. Checks: every loaded job accepted
exactly once, every accept SUCCESS, nothing left. ``--size cost`` runs only this part.

With ``--compare-tree DIR``, RequestJobs(10) at 16 in flight and SubmitJob at 64, and
the drain of part 4, also run against the server of another source tree (an older
commit) and this one's, in alternating ABBA rounds, each on a fresh server, for a
before/after comparison that background load cannot tilt.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import grpc

from benchmarks import _harness as H
from benchmarks._harness import slug
from rainbow_aio._proto import rainbow_pb2 as pb
from rainbow_aio._proto import rainbow_pb2_grpc as pb_grpc

NAME = "server"
TITLE = "Server: calls/s and latency, a 1M-job backlog, and a flood of submits"
LIST_SIZE = 10
MB = 1 << 20

# issue 13's goals
GOAL_SUBMIT_RATE = 3000  # SubmitJob calls/s at 64 in flight
GOAL_RSS_MB = 150  # RSS at 1M waiting, above the server with 10 waiting
GOAL_RESTART_S = 1.0  # restart on a 1M-job file, to the first RequestJobs answered
GOAL_LIST_RATIO = 2.0  # RequestJobs(10) at 1M waiting (and after 99% accepted) / at 10
GOAL_STALL_MS = 200  # slowest small call while another client lists 1M jobs

SIZES: dict[str, dict[str, Any]] = {
    "toy": {
        "stored": [LIST_SIZE],
        "in_flight": [1, 4],
        "seconds": 0.15,
        "warmup": 0.05,
        "backlog": 2_000,
        "restarts": 1,
        "probe_seconds": 0.15,
        "listings": 1,
        "flood_clients": 2,
        "flood_each": 150,
        # low bounds, so that even the toy flood surely gets past them
        "side_by_side_rounds": 1,
        "floods": [("bounds of 5", ["--max-calls-in-flight", "5", "--max-queued-writes", "5"])],
        "drain": {"clusters": 3, "per_cluster": 150, "rounds": 1},
    },
    "quick": {
        "stored": [LIST_SIZE, 1_000],
        "in_flight": [1, 16, 64],
        "seconds": 0.4,
        "warmup": 0.1,
        "backlog": 100_000,
        "restarts": 2,
        "probe_seconds": 0.5,
        "listings": 1,
        "flood_clients": 4,
        "flood_each": 500,
        "side_by_side_rounds": 1,
        "floods": [("100 calls in flight", ["--max-calls-in-flight", "100"])],
        "drain": {"clusters": 100, "per_cluster": 100, "rounds": 1},
    },
    "full": {
        "stored": [LIST_SIZE, 1_000, 100_000],
        "in_flight": [1, 16, 64],
        "seconds": 3.0,
        "warmup": 0.5,
        "backlog": 1_000_000,
        "restarts": 3,
        "probe_seconds": 2.0,
        "listings": 2,
        "flood_clients": 10,
        "flood_each": 1_000,
        "side_by_side_rounds": 2,  # ABBA twice
        # the defaults, then a bound the flood surely passes (whether 10,000 calls get
        # past 500 in flight depends on how fast the event loop takes them in)
        "floods": [("defaults", []), ("100 calls in flight", ["--max-calls-in-flight", "100"])],
        "drain": {"clusters": 100, "per_cluster": 600, "rounds": 1},
    },
}
# part 2 alone, at full size, with a third full listing (``--size backlog``): the
# slowest small call during a million-job listing, in a few minutes rather than twenty
SIZES["backlog"] = {**SIZES["full"], "stored": [], "floods": [], "listings": 3, "drain": None}
# part 4 alone, at full size, three ABBA rounds with --compare-tree (``--size cost``)
SIZES["cost"] = {**SIZES["full"], "stored": [], "backlog": 0, "floods": [],
                 "side_by_side_rounds": 0,
                 "drain": {"clusters": 100, "per_cluster": 600, "rounds": 3}}  # fmt: skip


async def run(ctx: H.RunContext, checks: H.Checks) -> dict[str, Any]:
    p = SIZES[ctx.size]
    phases: list[dict[str, Any]] = []
    preloads: list[dict[str, Any]] = []
    if p["stored"]:
        await _rates(ctx, checks, p, phases, preloads)
    for ph in phases:
        ph.pop("acked_ids", None)

    def rate(rpc: str, k: int, level: int) -> float | None:
        for ph in phases:
            if ph["rpc"] == rpc and ph["in_flight"] == k and ph["stored"] == level:
                return float(ph["calls_per_s"])
        return None

    def p99(rpc: str, k: int, level: int) -> float | None:
        for ph in phases:
            if ph["rpc"] == rpc and ph["in_flight"] == k and ph["stored"] == level:
                return ph["latency"]["p99_ms"]  # type: ignore[no-any-return]
        return None

    targets = []
    for level in p["stored"]:
        if 64 in p["in_flight"]:
            targets.append(
                H.target(
                    f"SubmitJob calls/s, 64 in flight, {level:,} stored",
                    rate("SubmitJob", 64, level),
                    GOAL_SUBMIT_RATE,
                    unit="calls/s",
                )
            )
            targets.append(
                H.target(
                    f"SubmitJob p99 ms, 64 in flight, {level:,} stored",
                    p99("SubmitJob", 64, level),
                    250,
                    higher_is_better=False,
                    unit="ms",
                )
            )
        if 16 in p["in_flight"]:
            targets.append(
                H.target(
                    f"RequestJobs calls/s, 16 in flight, {level:,} stored",
                    rate("RequestJobs", 16, level),
                    2000,
                    unit="calls/s",
                )
            )
    backlog = None
    if p["backlog"]:
        H.say(f"  backlog of {p['backlog']:,} jobs")
        backlog = await _backlog(ctx, checks, p)
        targets += backlog.pop("targets")
    drain = None
    if p["drain"]:
        d = p["drain"]
        H.say(f"  cost per job: {d['clusters']} clusters x {d['per_cluster']} jobs drained")
        drain = await _drain_cost(ctx, checks, d, ctx.compare_tree)
    side_by_side = None
    if ctx.compare_tree is not None and p["side_by_side_rounds"]:
        H.say(f"  side by side with the server of {ctx.compare_tree}")
        side_by_side = await _side_by_side(ctx, checks, p, ctx.compare_tree)
    floods = []
    for label, args in p["floods"]:
        if args and ctx.server_tree is not None:
            H.say(f"  flood, {label}: skipped (another tree's server may lack the options)")
            continue
        H.say(f"  flood of {p['flood_clients'] * p['flood_each']:,} submits, {label}")
        floods.append(await _flood(ctx, checks, p, label, args))
    return {
        "params": {
            **p,
            "list_size": LIST_SIZE,
            "backlog_server_args": BACKLOG_SERVER_ARGS,
            "load_generator": "raw grpc.aio stub, 1 process; the flood: RainbowClient",
        },
        "preload": preloads,
        "results": {
            "phases": phases,
            **({"backlog": backlog} if backlog else {}),
            **({"drain": drain} if drain else {}),
            "floods": floods,
            **({"side_by_side": side_by_side} if side_by_side else {}),
        },
        "targets": targets,
    }


async def _rates(
    ctx: H.RunContext,
    checks: H.Checks,
    p: dict[str, Any],
    phases: list[dict[str, Any]],
    preloads: list[dict[str, Any]],
) -> None:
    """Part 1: each RPC's rate and latency at each number of jobs stored (into ``phases``)."""
    async with H.server_process(ctx, NAME) as server:
        async with H.Admin(server.address) as admin:
            creds = await admin.register_many(["stored", "submits"])
        stored_now = 0
        lowest: list[int] = []
        for level in p["stored"]:
            loaded, note = await H.preload(server, creds, {"stored": level - stored_now})
            preloads.append({"to_level": level, **note})
            stored_now = level
            if not lowest:
                lowest = sorted(loaded["stored"])[:LIST_SIZE]
            H.say(f"  {level:,} jobs stored (loaded by {note['method']} in {note['seconds']} s)")
            result = await H.run_worker(
                "benchmarks.server:load",
                {
                    "address": server.address,
                    "server_pid": server.pid,
                    "creds": creds,
                    "in_flight": p["in_flight"],
                    "seconds": p["seconds"],
                    "warmup": p["warmup"],
                    "expect_ids": lowest,
                },
                limit=120 + 4 * len(p["in_flight"]) * p["seconds"],
            )
            submitted_before = 0  # the previous level's submits were deleted
            for ph in result["phases"]:
                ph["stored"] = level
                # every job in the table when the phase began: the level, plus what the
                # SubmitJob phases of this level before it added
                ph["stored_total_at_start"] = level + submitted_before
                submitted_before += len(ph.get("acked_ids", []))
                phases.append(ph)
                lat = ph["latency"]
                H.say(
                    f"    {ph['rpc']:<11} {ph['in_flight']:>3} in flight: "
                    f"{ph['calls_per_s']:>8,.0f} calls/s  p50 {lat['p50_ms']} ms  "
                    f"p99 {lat['p99_ms']} ms  server CPU {ph['server_cpu_pct']}%"
                )
                checks.check(
                    f"{ph['rpc']} x{ph['in_flight']} @{level}: every call answered correctly",
                    ph["errors"] == 0 and ph["wrong"] == 0,
                    f"{ph['calls']} calls, {ph['errors']} errors, {ph['wrong']} wrong answers",
                )
            acked = [i for ph in result["phases"] for i in ph.get("acked_ids", [])]
            async with H.Admin(server.address) as admin:
                waiting = await admin.waiting("submits", creds["submits"][1])
                checks.check(
                    f"SubmitJob @{level}: ids distinct",
                    len(acked) == len(set(acked)),
                    f"{len(acked)} acknowledged",
                )
                checks.check(
                    f"SubmitJob @{level}: exactly the acknowledged jobs are stored",
                    waiting == set(acked),
                    f"{len(waiting)} waiting vs {len(set(acked))} acknowledged",
                )
                # delete them, so that the next level starts with exactly its jobs stored
                gone = await admin.accept_all("submits", creds["submits"][1], sorted(waiting))
                checks.check(f"SubmitJob @{level}: submitted jobs deleted after", gone)


# -- part 2: a backlog of a million jobs --------------------------------------------------

BACKLOG_SERVER_ARGS = ["--max-held-bytes", str(512 * MB)]
"""The full listing's answer (161 MB) is larger than the default bound on bytes held
(128 MiB), which lets an answer past it through only while no other call holds bytes:
with the small calls going on it would be answered 'database is locked'. The bound is
raised so that the listing is served and the small calls' wait can be measured."""


def backlog_command(cluster: str, i: int) -> str:
    """A command that makes each job's JSON about 150 bytes, as in issue 13's figures."""
    return f"run-step --input /data/{cluster}/batch-{i:07d}.dat --threads 4 --out /scratch"


class RssWatch:
    """Samples a process's RSS every few milliseconds while in use; keeps the peak."""

    def __init__(self, pid: int | None, every: float = 0.02) -> None:
        self.pid = pid
        self.every = every
        self.first: int | None = None
        self.peak = 0
        self.last: int | None = None

    async def _sample(self) -> None:
        while True:
            rss = H.process_rss(self.pid)
            if rss is not None:
                self.first = rss if self.first is None else self.first
                self.peak = max(self.peak, rss)
                self.last = rss
            await asyncio.sleep(self.every)

    @contextlib.asynccontextmanager
    async def watching(self) -> AsyncIterator[RssWatch]:
        task = asyncio.create_task(self._sample())
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def summary(self) -> dict[str, float | None]:
        def mb(v: int | None) -> float | None:
            return None if v is None else round(v / MB, 1)

        return {"start_mb": mb(self.first), "peak_mb": mb(self.peak), "end_mb": mb(self.last)}


async def _first_answer(address: str, cluster: str, secret: str) -> float:
    """Seconds until a fresh channel gets a RequestJobs(10) answer (retrying refusals)."""
    t0 = time.perf_counter()
    async with H.Admin(address) as admin:
        await admin.stub.RequestJobs(
            pb.RequestJobsRequest(cluster=cluster, secret=secret, maxJobs=LIST_SIZE),
            timeout=60,
            wait_for_ready=True,
        )
    return time.perf_counter() - t0


async def _restarts(server: Any, creds: H.Creds, times: int) -> dict[str, Any]:
    """Restart the server ``times`` times; seconds from the process start to listening,
    and to the first RequestJobs answer on a new connection."""
    listening, answered = [], []
    for _ in range(times):
        await server.stop()
        t0 = time.perf_counter()
        await server.start()
        listening.append(time.perf_counter() - t0)
        first = await _first_answer(server.address, "stored", creds["stored"][1])
        answered.append(listening[-1] + first)
    return {
        "to_listening_s": [round(x, 3) for x in listening],
        "to_first_answer_s": [round(x, 3) for x in answered],
        "worst_s": round(max(answered), 3),
    }


async def _state(
    checks: H.Checks,
    p: dict[str, Any],
    server: Any,
    creds: H.Creds,
    label: str,
    waiting: int,
    lowest: Sequence[int],
) -> dict[str, Any]:
    """The probe figures and RSS with ``waiting`` jobs in "stored", then restart times.

    The probe comes first, so that it meets the server as the state was reached (after
    99% were accepted, that is, not after a restart rebuilt whatever it keeps).
    """
    probe = await H.run_worker(
        "benchmarks.server:probe",
        {
            "address": server.address,
            "server_pid": server.pid,
            "creds": creds,
            "seconds": p["probe_seconds"],
            "expect_ids": list(lowest),
        },
        limit=120 + 8 * p["probe_seconds"],
    )
    rss = H.process_rss(server.pid)
    restart = await _restarts(server, creds, p["restarts"])
    H.say(
        f"    {label}: restart {restart['worst_s']} s (worst of {p['restarts']}), "
        f"RSS {rss and round(rss / MB, 1)} MB, RequestJobs(10) p50 "
        f"{probe['request_fresh_1']['latency']['p50_ms']} ms fresh, "
        f"{probe['request_1']['latency']['p50_ms']} ms cached (Serial "
        f"{probe['serial_1']['latency']['p50_ms']} ms), server CPU "
        f"{probe['request_fresh_16'].get('server_cpu_us_per_listing')} us fresh, "
        f"{probe['request_16']['calls_per_s']:,.0f}/s cached at 16, SubmitJob "
        f"{probe['submit_64']['calls_per_s']:,.0f}/s at 64"
    )
    for key, ph in probe.items():
        checks.check(
            f"backlog, {label}: {key} answered correctly",
            ph["errors"] == 0 and ph["wrong"] == 0,
            f"{ph['calls']} calls, {ph['errors']} errors, {ph['wrong']} wrong",
        )
    return {
        "label": label,
        "waiting": waiting,
        "restart": restart,
        "rss_mb": rss and round(rss / MB, 1),
        "probe": probe,
    }


async def _listing_under_load(
    ctx: H.RunContext,
    checks: H.Checks,
    server: Any,
    creds: H.Creds,
    expect: Sequence[int],
    probe_lowest: Sequence[int],
    round_no: int,
) -> dict[str, Any]:
    """One client lists every job of "stored" while another makes small calls."""
    ready = ctx.tmp / f"server-small-ready-{round_no}"
    stop = ctx.tmp / f"server-small-stop-{round_no}"
    small = await H.start_worker(
        "benchmarks.server:small_calls",
        {
            "address": server.address,
            "creds": creds,
            "in_flight": 4,
            "ready_file": str(ready),
            "stop_file": str(stop),
            "expect_ids": list(probe_lowest),
        },
        limit=600,
    )
    try:
        await H.wait_for_file(ready, 60, [small])
        watch = RssWatch(server.pid)
        async with watch.watching():
            await asyncio.sleep(0.5)  # small calls alone first
            big = await H.run_worker(
                "benchmarks.server:list_all",
                {"address": server.address, "cluster": "stored", "secret": creds["stored"][1]},
                limit=600,
            )
            await asyncio.sleep(0.5)
            _signal(str(stop))
            calls = await small.result()
        await asyncio.sleep(1.0)
        rss_after = H.process_rss(server.pid)
    finally:
        await small.kill()
    begin, end = big["began"], big["ended"]
    calls_seen = list(zip(calls["rpcs"], calls["starts"], calls["ends"], strict=True))
    overlapping = [(rpc, s, e) for rpc, s, e in calls_seen if s < end and e > begin]
    during = [e - s for _, s, e in overlapping]
    other = [e - s for _, s, e in calls_seen if not (s < end and e > begin)]
    # where the slowest calls fell: seconds after the listing began, how long, which RPC
    slowest = sorted(
        ((round(s - begin, 3), round(1000 * (e - s), 1), rpc) for rpc, s, e in overlapping),
        key=lambda x: -x[1],
    )[:8]
    by_rpc = {
        rpc: H.latency_summary([e - s for r, s, e in overlapping if r == rpc])
        for rpc in ("SubmitJob", "RequestJobs")
    }
    checks.check(
        f"listing {round_no}: every waiting job listed, nothing else",
        big["count"] == len(expect) and big["min"] == expect[0] and big["max"] == expect[-1],
        f"{big['count']:,} jobs, ids {big['min']}..{big['max']}",
    )
    checks.check(
        f"listing {round_no}: every small call answered correctly",
        calls["errors"] == 0 and calls["wrong"] == 0 and bool(during),
        f"{len(during)} calls during the listing, {calls['errors']} errors, {calls['wrong']} wrong",
    )
    out = {
        "listing_s": round(end - begin, 3),
        "jobs": big["count"],
        "answer_mb": round(big["bytes"] / MB, 1),
        "small_calls_during": H.latency_summary(during),
        "small_calls_over_100ms": sum(x > 0.1 for x in during),
        "slowest_small_calls": slowest,
        "small_calls_during_by_rpc": by_rpc,
        "small_calls_outside": H.latency_summary(other),
        "server_rss": {**watch.summary(), "after_1s_mb": rss_after and round(rss_after / MB, 1)},
    }
    H.say(
        f"    listing {round_no}: {big['count']:,} jobs ({out['answer_mb']} MB) in "
        f"{out['listing_s']} s; slowest of {len(during)} small calls meanwhile "
        f"{out['small_calls_during']['max_ms']} ms (p50 "
        f"{out['small_calls_during']['p50_ms']} ms); server RSS peak "
        f"{out['server_rss']['peak_mb']} MB"
    )
    return out


async def _backlog(ctx: H.RunContext, checks: H.Checks, p: dict[str, Any]) -> dict[str, Any]:
    states: list[dict[str, Any]] = []
    loads: list[dict[str, Any]] = []
    listings: list[dict[str, Any]] = []
    async with H.server_process(ctx, f"{NAME}-backlog", args=BACKLOG_SERVER_ARGS) as server:
        async with H.Admin(server.address) as admin:
            creds = await admin.register_many(["stored", "probe", "submits"])
        # an otherwise empty server: 10 jobs in the listed cluster, 10 in the probe one
        head, note = await H.bulk_load(server, "stored", LIST_SIZE, command=backlog_command)
        loads.append(note)
        probe_ids, note = await H.bulk_load(server, "probe", LIST_SIZE, command=backlog_command)
        loads.append(note)
        states.append(await _state(checks, p, server, creds, "10 waiting", LIST_SIZE, head))
        rest, note = await H.bulk_load(
            server, "stored", p["backlog"] - LIST_SIZE, command=backlog_command
        )
        loads.append(note)
        H.say(f"    bulk-loaded {note['jobs']:,} jobs in {note['seconds']} s")
        # the probes' SubmitJob phase took the ids in between
        every = [*head, *rest]
        states.append(
            await _state(checks, p, server, creds, f"{len(every):,} waiting", len(every), head)
        )
        for n in range(p["listings"]):
            listings.append(
                await _listing_under_load(ctx, checks, server, creds, every, probe_ids, n)
            )
        cut = len(every) * 99 // 100
        t0 = time.perf_counter()
        async with H.Admin(server.address) as admin:
            gone = await admin.accept_all("stored", creds["stored"][1], every[:cut])
        accept_s = time.perf_counter() - t0
        checks.check("backlog: the lowest 99% accepted", gone, f"{cut:,} in {accept_s:.1f} s")
        H.say(f"    accepted the lowest {cut:,} in {accept_s:.1f} s")
        states.append(
            await _state(
                checks,
                p,
                server,
                creds,
                "after 99% accepted",
                len(every) - cut,
                every[cut : cut + LIST_SIZE],
            )
        )
    empty, full, drained = states

    def ratio(state: dict[str, Any], key: str, metric: str) -> float | None:
        base = empty["probe"][key].get(metric)
        value = state["probe"][key].get(metric)
        return None if not base or value is None else value / base

    def p50(state: dict[str, Any]) -> float:
        return float(state["probe"]["request_fresh_1"]["latency"]["p50_ms"])

    big = f"{full['waiting']:,}"
    targets = [
        H.target(
            f"server RSS at {big} waiting, above 10 waiting",
            (full["rss_mb"] - empty["rss_mb"]) if full["rss_mb"] and empty["rss_mb"] else None,
            GOAL_RSS_MB,
            higher_is_better=False,
            unit="MB",
        ),
        H.target(
            f"restart on a {big}-job file, to the first answer (worst)",
            full["restart"]["worst_s"],
            GOAL_RESTART_S,
            higher_is_better=False,
            unit="s",
        ),
    ]
    for state in (full, drained):
        targets.append(
            H.target(
                f"RequestJobs(10) p50 latency, not cached, {state['label']} / 10 waiting",
                p50(state) / p50(empty),
                GOAL_LIST_RATIO,
                higher_is_better=False,
                unit="x",
            )
        )
        targets.append(
            H.target(
                f"RequestJobs(10) server CPU, not cached, {state['label']} / 10 waiting",
                ratio(state, "request_fresh_16", "server_cpu_us_per_listing"),
                GOAL_LIST_RATIO,
                higher_is_better=False,
                unit="x",
            )
        )
    targets.append(
        H.target(
            f"slowest small call while another client lists {big} jobs",
            max(x["small_calls_during"]["max_ms"] for x in listings),
            GOAL_STALL_MS,
            higher_is_better=False,
            unit="ms",
        )
    )
    targets.append(
        H.target(
            f"SubmitJob calls/s, 64 in flight, {big} waiting",
            full["probe"]["submit_64"]["calls_per_s"],
            GOAL_SUBMIT_RATE,
            unit="calls/s",
        )
    )
    return {
        "loads": loads,
        "states": states,
        "listings": listings,
        "accept_99pct_s": round(accept_s, 2),
        "targets": targets,
    }


# -- side by side with another tree's server (--compare-tree) ----------------------------

SIDE_BY_SIDE_ORDER = ("this", "other", "other", "this")


async def _side_by_side(
    ctx: H.RunContext, checks: H.Checks, p: dict[str, Any], other: Path
) -> dict[str, Any]:
    """RequestJobs(10) at 16 in flight and SubmitJob at 64 against this tree's server and
    the other's, in ABBA rounds (each round a fresh server with 10 jobs stored), so that
    the machine's background load falls on both alike."""
    rounds = []
    for n, which in enumerate(SIDE_BY_SIDE_ORDER * p["side_by_side_rounds"]):
        tree = other if which == "other" else None
        async with H.server_process(ctx, f"{NAME}-ab", tree=tree) as server:
            async with H.Admin(server.address) as admin:
                creds = await admin.register_many(["stored", "submits"])
            loaded, _ = await H.preload(server, creds, {"stored": LIST_SIZE})
            result = await H.run_worker(
                "benchmarks.server:load",
                {
                    "address": server.address,
                    "server_pid": server.pid,
                    "creds": creds,
                    "in_flight": [16, 64],
                    "seconds": p["seconds"],
                    "warmup": p["warmup"],
                    "expect_ids": sorted(loaded["stored"]),
                },
                limit=120 + 8 * p["seconds"],
            )
        row: dict[str, Any] = {"round": n, "server": which}
        for ph in result["phases"]:
            if (ph["rpc"], ph["in_flight"]) in (("RequestJobs", 16), ("SubmitJob", 64)):
                row[ph["rpc"]] = ph["calls_per_s"]
                checks.check(
                    f"side by side, round {n} ({which}): {ph['rpc']} answered correctly",
                    ph["errors"] == 0 and ph["wrong"] == 0,
                    f"{ph['calls']} calls, {ph['errors']} errors, {ph['wrong']} wrong",
                )
        H.say(
            f"    round {n}, {which} server: SubmitJob {row['SubmitJob']:,.0f}/s at 64, "
            f"RequestJobs {row['RequestJobs']:,.0f}/s at 16"
        )
        rounds.append(row)
    means = {
        which: {
            rpc: round(statistics.mean(r[rpc] for r in rounds if r["server"] == which), 1)
            for rpc in ("SubmitJob", "RequestJobs")
        }
        for which in ("this", "other")
    }
    return {
        "other_tree": H.tree_info(other),
        "rounds": rounds,
        "means": means,
        "this_over_other": {
            rpc: round(means["this"][rpc] / means["other"][rpc], 3)
            for rpc in ("SubmitJob", "RequestJobs")
        },
    }


# -- part 4: the server's CPU per listed and accepted job ---------------------------------

DRAIN_MAX_JOBS = 100


def _thread_cpu(pid: int | None) -> dict[str, float]:
    """CPU seconds of each thread of a process so far ("main" for the one that runs the
    event loop, the process's first), from /proc; empty when unreadable."""
    out: dict[str, float] = {}
    if pid is None:
        return out
    tick = os.sysconf("SC_CLK_TCK")
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                with open(f"/proc/{pid}/task/{tid}/stat") as f:
                    fields = f.read().rpartition(")")[2].split()
                key = "main" if tid == str(pid) else tid
                out[key] = (int(fields[11]) + int(fields[12])) / tick
    return out


async def _drain_cost(
    ctx: H.RunContext, checks: H.Checks, d: dict[str, Any], other: Path | None
) -> dict[str, Any]:
    """Part 4: server CPU per job drained by a raw-stub client (each job listed once and
    accepted once), on a fresh server per round; ABBA rounds with another tree's server
    when ``other`` is given."""
    order = SIDE_BY_SIDE_ORDER if other is not None else ("this",)
    rounds = []
    for n, which in enumerate(order * d["rounds"]):
        tree = other if which == "other" else None
        async with H.server_process(ctx, f"{NAME}-drain", tree=tree) as server:
            names = H.names(f"drain{n}", d["clusters"])
            async with H.Admin(server.address) as admin:
                creds = await admin.register_many(names)
            loaded, _ = await H.preload(server, creds, dict.fromkeys(names, d["per_cluster"]))
            threads0, cpu0 = _thread_cpu(server.pid), H.process_cpu(server.pid)
            result = await H.run_worker(
                "benchmarks.server:raw_drain",
                {
                    "address": server.address,
                    "secrets": {c: creds[c][1] for c in names},
                    "max_jobs": DRAIN_MAX_JOBS,
                },
                limit=600,
            )
            threads1, cpu1 = _thread_cpu(server.pid), H.process_cpu(server.pid)
            async with H.Admin(server.address) as admin:
                left = await admin.waiting_many(creds)
        jobs = sum(len(ids) for ids in loaded.values())
        accepted = result["accepted"]
        label = f"drain, round {n} ({which})"
        checks.check(
            f"{label}: every job accepted once, nothing else",
            all(sorted(accepted[c]) == sorted(loaded[c]) for c in names),
            f"{sum(len(a) for a in accepted.values()):,} accepted of {jobs:,}",
        )
        checks.check(
            f"{label}: every accept answered SUCCESS",
            result["not_success"] == 0,
            f"{result['not_success']} not SUCCESS",
        )
        checks.check(f"{label}: nothing left", not any(left.values()))
        main = threads1.get("main", 0.0) - threads0.get("main", 0.0)
        others = sum(v - threads0.get(k, 0.0) for k, v in threads1.items() if k != "main")
        row = {
            "round": n,
            "server": which,
            "jobs": jobs,
            "listed": result["listed"],
            "calls": result["calls"],
            "seconds": result["seconds"],
            "jobs_per_s": round(jobs / result["seconds"], 1),
            "server_us_per_job": (
                round(1e6 * (cpu1 - cpu0) / jobs, 2)
                if cpu0 is not None and cpu1 is not None
                else None
            ),
            "event_loop_thread_us_per_job": round(1e6 * main / jobs, 2),
            "other_threads_us_per_job": round(1e6 * others / jobs, 2),
        }
        H.say(
            f"    round {n}, {which} server: {jobs:,} jobs in {row['seconds']} s, server "
            f"{row['server_us_per_job']} us/job (event loop thread "
            f"{row['event_loop_thread_us_per_job']}, others {row['other_threads_us_per_job']})"
        )
        rounds.append(row)

    def median(which: str, key: str) -> float | None:
        values = [r[key] for r in rounds if r["server"] == which and r[key] is not None]
        return round(statistics.median(values), 2) if values else None

    keys = ("server_us_per_job", "event_loop_thread_us_per_job", "other_threads_us_per_job")
    medians = {which: {k: median(which, k) for k in keys} for which in dict.fromkeys(order)}
    out: dict[str, Any] = {
        "params": {**d, "max_jobs": DRAIN_MAX_JOBS},
        "rounds": rounds,
        "medians": medians,
    }
    if other is not None:
        out["other_tree"] = H.tree_info(other)
        this, them = medians["this"]["server_us_per_job"], medians["other"]["server_us_per_job"]
        out["this_over_other"] = round(this / them, 3) if this and them else None
    return out


# -- part 3: a flood of submits ----------------------------------------------------------

_BUSY_LINE = re.compile(r"(\d+) calls were answered 'database is locked'")


async def _flood(
    ctx: H.RunContext, checks: H.Checks, p: dict[str, Any], label: str, args: list[str]
) -> dict[str, Any]:
    """Every client starts its submits at once against a server run with ``args``.

    Checks: exactly the acknowledged jobs are stored; a submit that failed for good
    failed only with the retryable busy answer; and with a bound set below the flood,
    the server did refuse calls.
    """
    clients, each = p["flood_clients"], p["flood_each"]
    go = ctx.tmp / f"server-flood-go-{slug(label)}"
    async with H.server_process(ctx, f"{NAME}-flood", args=args) as server:
        async with H.Admin(server.address) as admin:
            creds = await admin.register_many(["flood"])
        workers = []
        try:
            for w in range(clients):
                workers.append(
                    await H.start_worker(
                        "benchmarks.server:flood",
                        {
                            "address": server.address,
                            "token": creds["flood"][0],
                            "client": w,
                            "count": each,
                            "ready_file": str(ctx.tmp / f"server-flood-ready-{go.name}-{w}"),
                            "go_file": str(go),
                        },
                        limit=600,
                    )
                )
            for w in range(clients):
                await H.wait_for_file(ctx.tmp / f"server-flood-ready-{go.name}-{w}", 60, workers)
            watch = RssWatch(server.pid)
            async with watch.watching():
                await asyncio.sleep(0.2)
                t0 = time.perf_counter()
                _signal(str(go))
                results = [await w.result() for w in workers]
                seconds = time.perf_counter() - t0
        finally:
            for w in workers:
                await w.kill()
        async with H.Admin(server.address) as admin:
            r = await admin.stub.RequestJobs(
                pb.RequestJobsRequest(cluster="flood", secret=creds["flood"][1], maxJobs=0),
                timeout=120,
            )
        stored = {json.loads(text)["command"]: job_id for job_id, text in r.jobs.items()}
        await server.stop()
        busy_lines = _BUSY_LINE.findall(server.output)
    acked = {cmd: job_id for res in results for cmd, job_id in res["acked"]}
    errors: dict[str, int] = {}
    for res in results:
        for name, n in res["errors"].items():
            errors[name] = errors.get(name, 0) + n
    latencies = [x for res in results for x in res["latencies"]]
    busy = int(busy_lines[-1]) if busy_lines else 0
    checks.check(
        f"flood, {label}: exactly the acknowledged jobs are stored, with their ids",
        stored == acked,
        f"{len(acked):,} acknowledged, {len(stored):,} stored, "
        f"{len(set(stored) - set(acked))} stored unacknowledged",
    )
    checks.check(
        f"flood, {label}: no submit failed but with the retryable busy answer",
        set(errors) <= {"ServerBusyError"},
        f"errors {errors or 'none'}",
    )
    if args:  # a bound set below the flood: it must have been reached
        checks.check(
            f"flood, {label}: past the bound the server answered 'database is locked'",
            busy > 0,
            f"{busy:,} answers 'database is locked'",
        )
    out = {
        "label": label,
        "clients": clients,
        "in_flight_each": each,
        "submits": clients * each,
        "acknowledged": len(acked),
        "stored": len(stored),
        "errors": errors,
        "error_samples": [m for res in results for m in res["error_samples"]][:5],
        "busy_answers": busy,
        "seconds": round(seconds, 2),
        "acknowledged_per_s": round(len(acked) / seconds, 1),
        "latency_with_retries": H.latency_summary(latencies),
        "server_rss": watch.summary(),
        "server_args": args,
    }
    H.say(
        f"    {out['acknowledged']:,}/{out['submits']:,} acknowledged in {out['seconds']} s, "
        f"{busy:,} answers 'database is locked' (retried), errors {errors or 'none'}; "
        f"server RSS {out['server_rss']['start_mb']} -> peak {out['server_rss']['peak_mb']} MB"
    )
    return out


def chart(payload: dict[str, Any], path: str) -> bool:
    import matplotlib.pyplot as plt

    phases = payload["results"]["phases"]
    if not phases:  # a size without part 1
        return False
    levels = sorted({ph["stored"] for ph in phases})
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, metric, label in (
        (axes[0], "calls_per_s", "calls/s"),
        (axes[1], "p99", "p99 latency (ms)"),
    ):
        for rpc, style in (("SubmitJob", "-o"), ("RequestJobs", "--s")):
            for level in levels:
                pts = sorted(
                    (
                        ph["in_flight"],
                        ph["calls_per_s"] if metric == "calls_per_s" else ph["latency"]["p99_ms"],
                    )
                    for ph in phases
                    if ph["rpc"] == rpc and ph["stored"] == level
                )
                ax.plot(
                    [x for x, _ in pts],
                    [y for _, y in pts],
                    style,
                    label=f"{rpc}, {level:,} stored",
                )
        ax.set_xscale("log", base=2)
        ax.set_xlabel("calls in flight")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle("Embedded server (separate process), raw grpc.aio load generator")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# -- worker side ----------------------------------------------------------------------------


async def load(params: dict[str, Any]) -> dict[str, Any]:
    address = params["address"]
    creds = params["creds"]
    expect = set(params["expect_ids"])
    channel = grpc.aio.insecure_channel(address, options=H.UNLIMITED)
    stub = pb_grpc.RainbowSchedulerStub(channel)
    await asyncio.wait_for(channel.channel_ready(), 30)
    submit_req = pb.SubmitJobRequest(
        cluster="submits",
        token=creds["submits"][0],
        name="bench",
        command="echo hello world",
        nodes=1,
    )
    request_req = pb.RequestJobsRequest(
        cluster="stored", secret=creds["stored"][1], maxJobs=LIST_SIZE
    )
    phases = []
    try:
        # RequestJobs first: it sees exactly the level's jobs stored; SubmitJob then adds
        for rpc in ("RequestJobs", "SubmitJob"):
            for k in params["in_flight"]:
                acked: list[int] = []
                wrong = 0

                async def call(record: bool, rpc: str = rpc, acked: list[int] = acked) -> bool:
                    if rpc == "SubmitJob":
                        r = await stub.SubmitJob(submit_req, timeout=30)
                        ok = r.status == pb.SubmitJobResponse.SUBMIT_SUCCESS and r.jobid > 0
                        if ok:
                            acked.append(r.jobid)
                        return ok
                    r2 = await stub.RequestJobs(request_req, timeout=30)
                    return (
                        r2.status == pb.RequestJobsResponse.REQUEST_JOBS_SUCCESS
                        and set(r2.jobs) == expect
                    )

                await timed_lanes(call, k, params["warmup"])  # warm-up, not recorded
                cpu0 = H.cpu_seconds()
                scpu0 = H.process_cpu(params.get("server_pid"))
                res = await timed_lanes(call, k, params["seconds"])
                cpu1 = H.cpu_seconds()
                scpu1 = H.process_cpu(params.get("server_pid"))
                wrong = res["wrong"]
                elapsed = res["elapsed"]
                phases.append(
                    {
                        "rpc": rpc,
                        "in_flight": k,
                        "calls": res["calls"],
                        "errors": res["errors"],
                        "error_samples": res["error_samples"],
                        "wrong": wrong,
                        "seconds": round(elapsed, 3),
                        "calls_per_s": round(res["calls"] / elapsed, 1),
                        "latency": H.latency_summary(res["latencies"]),
                        "client_cpu_pct": round(100 * (cpu1 - cpu0) / elapsed, 1),
                        "server_cpu_pct": (
                            round(100 * (scpu1 - scpu0) / elapsed, 1)
                            if scpu0 is not None and scpu1 is not None
                            else None
                        ),
                        "acked_ids": acked,
                    }
                )
    finally:
        await channel.close()
    return {"phases": phases}


async def timed_lanes(
    call: Any, k: int, seconds: float, before: Callable[[], Awaitable[Any]] | None = None
) -> dict[str, Any]:
    """Run ``k`` concurrent loops of ``call`` until ``seconds`` pass; latency of each call.

    Calls started before the deadline are allowed to finish and are counted; the rate
    divides by the time until the last one finished. ``before``, when given, is awaited
    before each call, outside its timing.
    """
    latencies: list[float] = []
    counts = {"calls": 0, "errors": 0, "wrong": 0}
    samples: list[str] = []
    perf = time.perf_counter
    start = perf()
    deadline = start + seconds

    async def lane() -> None:
        while perf() < deadline:
            if before is not None:
                await before()
            t = perf()
            try:
                ok = await call(True)
            except grpc.aio.AioRpcError as exc:
                counts["errors"] += 1
                if len(samples) < 5:
                    samples.append(f"{exc.code().name}: {exc.details()}")
                continue
            latencies.append(perf() - t)
            counts["calls"] += 1
            if not ok:
                counts["wrong"] += 1

    await asyncio.gather(*(lane() for _ in range(k)))
    return {**counts, "elapsed": perf() - start, "latencies": latencies, "error_samples": samples}


def _signal(path: str) -> None:
    """Tell the orchestrator (waiting with ``H.wait_for_file``) that this worker is ready."""
    Path(path).write_text(str(os.getpid()))


async def _connect(address: str) -> tuple[grpc.aio.Channel, pb_grpc.RainbowSchedulerStub]:
    channel = grpc.aio.insecure_channel(address, options=H.UNLIMITED)
    await asyncio.wait_for(channel.channel_ready(), 30)
    return channel, pb_grpc.RainbowSchedulerStub(channel)


async def probe(params: dict[str, Any]) -> dict[str, Any]:
    """RequestJobs(10) of "stored", Serial (the floor of any call) and SubmitJob to
    "submits"; latencies, rates and server CPU per call.

    The server caches short answers until a write touches the cluster, so a repeated
    RequestJobs(10) of "stored" is an idle poll served from that cache. The ``fresh``
    phases read the database every time: before each listing (untimed), an AcceptJobs
    of an id that does not exist touches "stored" and so drops its cached answers
    without changing its jobs. ``accept_16`` times those accepts alone, so that their
    CPU can be taken out of the fresh listings' CPU.
    """
    creds = params["creds"]
    expect = set(params["expect_ids"])
    seconds = params["seconds"]
    channel, stub = await _connect(params["address"])
    request = pb.RequestJobsRequest(cluster="stored", secret=creds["stored"][1], maxJobs=LIST_SIZE)
    nothing = pb.AcceptJobsRequest(cluster="stored", secret=creds["stored"][1], jobids=[2**31 - 1])
    submit = pb.SubmitJobRequest(
        cluster="submits", token=creds["submits"][0], name="probe", command="echo hi", nodes=1
    )

    async def request_jobs(record: bool) -> bool:
        r = await stub.RequestJobs(request, timeout=30)
        return set(r.jobs) == expect

    async def touch() -> None:
        r = await stub.AcceptJobs(nothing, timeout=30)
        assert r.status == pb.AcceptJobsResponse.RESULT_TYPE_PARTIAL

    async def accept_nothing(record: bool) -> bool:
        await touch()
        return True

    async def serial(record: bool) -> bool:
        r = await stub.Serial(pb.Request(content=pb.Content(id="p")), timeout=30)
        return r.request_id == "p"

    async def submit_job(record: bool) -> bool:
        r = await stub.SubmitJob(submit, timeout=30)
        return r.status == pb.SubmitJobResponse.SUBMIT_SUCCESS and r.jobid > 0

    async def phase(call: Any, k: int, length: float, before: Any = None) -> dict[str, Any]:
        await timed_lanes(call, k, min(0.3, length), before)  # warm-up
        cpu0 = H.process_cpu(params["server_pid"])
        res = await timed_lanes(call, k, length, before)
        cpu1 = H.process_cpu(params["server_pid"])
        return {
            "in_flight": k,
            "calls": res["calls"],
            "errors": res["errors"],
            "error_samples": res["error_samples"],
            "wrong": res["wrong"],
            "calls_per_s": round(res["calls"] / res["elapsed"], 1),
            "latency": H.latency_summary(res["latencies"]),
            # for the fresh phases: the listing and the accept before it
            "server_cpu_us_per_call": (
                round(1e6 * (cpu1 - cpu0) / res["calls"], 1)
                if cpu0 is not None and cpu1 is not None and res["calls"]
                else None
            ),
        }

    out: dict[str, Any] = {}
    try:
        out["request_1"] = await phase(request_jobs, 1, seconds)
        out["request_fresh_1"] = await phase(request_jobs, 1, seconds, touch)
        out["serial_1"] = await phase(serial, 1, seconds)
        out["request_16"] = await phase(request_jobs, 16, seconds)
        # A fresh listing's CPU is that of (accept + listing) less that of an accept:
        # a difference of two measurements, so it is taken in alternating rounds and
        # the median is kept.
        rounds = []
        for _ in range(3):
            fresh = await phase(request_jobs, 16, seconds / 2, touch)
            accepts = await phase(accept_nothing, 16, seconds / 2)
            rounds.append((fresh, accepts))
        fresh, accepts = rounds[0]
        for other_fresh, other_accepts in rounds[1:]:  # one entry for the checks
            for part, more in ((fresh, other_fresh), (accepts, other_accepts)):
                for field in ("calls", "errors", "wrong"):
                    part[field] += more[field]
        cpu = [
            f["server_cpu_us_per_call"] - a["server_cpu_us_per_call"]
            for f, a in rounds
            if f["server_cpu_us_per_call"] is not None and a["server_cpu_us_per_call"] is not None
        ]
        fresh["server_cpu_us_per_listing"] = round(statistics.median(cpu), 1) if cpu else None
        fresh["server_cpu_us_per_listing_rounds"] = [round(x, 1) for x in cpu]
        out["request_fresh_16"], out["accept_16"] = fresh, accepts
        out["submit_64"] = await phase(submit_job, 64, seconds)
    finally:
        await channel.close()
    return out


async def list_all(params: dict[str, Any]) -> dict[str, Any]:
    """One RequestJobs with maxJobs 0 (every waiting job); when it began and ended on the
    system-wide monotonic clock, so that another process's calls can be set against it."""
    channel, stub = await _connect(params["address"])
    try:
        began = time.monotonic()
        r = await stub.RequestJobs(
            pb.RequestJobsRequest(cluster=params["cluster"], secret=params["secret"], maxJobs=0),
            timeout=600,
        )
        ended = time.monotonic()
        ids = list(r.jobs)
        size = r.ByteSize()
    finally:
        await channel.close()
    return {
        "began": began,
        "ended": ended,
        "count": len(ids),
        "min": min(ids, default=None),
        "max": max(ids, default=None),
        "bytes": size,
    }


async def small_calls(params: dict[str, Any]) -> dict[str, Any]:
    """Small calls in ``in_flight`` lanes until the stop file appears: SubmitJob to
    "submits" and RequestJobs(10) of "probe", alternating; each call's start and end on
    the system-wide monotonic clock."""
    creds = params["creds"]
    expect = set(params["expect_ids"])
    stop = params["stop_file"]
    channel, stub = await _connect(params["address"])
    submit = pb.SubmitJobRequest(
        cluster="submits", token=creds["submits"][0], name="small", command="echo hi", nodes=1
    )
    request = pb.RequestJobsRequest(cluster="probe", secret=creds["probe"][1], maxJobs=LIST_SIZE)
    starts: list[float] = []
    ends: list[float] = []
    rpcs: list[str] = []
    counts = {"errors": 0, "wrong": 0}
    stopping = asyncio.Event()

    async def lane(n: int) -> None:
        while not stopping.is_set():
            n += 1
            t = time.monotonic()
            try:
                if n % 2:
                    r = await stub.SubmitJob(submit, timeout=30)
                    ok = r.status == pb.SubmitJobResponse.SUBMIT_SUCCESS
                else:
                    r2 = await stub.RequestJobs(request, timeout=30)
                    ok = set(r2.jobs) == expect
            except grpc.aio.AioRpcError:
                counts["errors"] += 1
                continue
            starts.append(t)
            ends.append(time.monotonic())
            rpcs.append("SubmitJob" if n % 2 else "RequestJobs")
            counts["wrong"] += not ok

    async def watch() -> None:
        while not os.path.exists(stop):  # noqa: ASYNC110, ASYNC240 - a stat every 10 ms
            await asyncio.sleep(0.01)
        stopping.set()

    try:
        lanes = [asyncio.create_task(lane(i)) for i in range(params["in_flight"])]
        await asyncio.sleep(0.2)
        _signal(params["ready_file"])
        await watch()
        await asyncio.gather(*lanes)
    finally:
        await channel.close()
    return {"rpcs": rpcs, "starts": starts, "ends": ends, **counts}


async def flood(params: dict[str, Any]) -> dict[str, Any]:
    """``count`` submits through one RainbowClient (default retry policy), all started at
    once when the go file appears; each job's command carries a serial."""
    from rainbow_aio import RainbowClient, RainbowError

    go = params["go_file"]
    client_no = params["client"]
    acked: list[tuple[str, int]] = []
    errors: dict[str, int] = {}
    samples: list[str] = []
    latencies: list[float] = []
    async with RainbowClient(params["address"]) as client:
        _signal(params["ready_file"])
        while not os.path.exists(go):  # noqa: ASYNC110, ASYNC240 - a stat every 5 ms
            await asyncio.sleep(0.005)

        async def one(i: int) -> None:
            command = f"flood {client_no} {i}"
            t = time.perf_counter()
            try:
                job_id = await client.submit_job("flood", params["token"], command)
            except RainbowError as exc:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                if len(samples) < 5:
                    samples.append(str(exc))
                return
            latencies.append(time.perf_counter() - t)
            if job_id is not None:
                acked.append((command, job_id))

        await asyncio.gather(*(one(i) for i in range(params["count"])))
    return {"acked": acked, "errors": errors, "error_samples": samples, "latencies": latencies}


async def raw_drain(params: dict[str, Any]) -> dict[str, Any]:
    """Drain every cluster of ``secrets`` on one channel, all clusters at once, each in
    turn listing ``max_jobs`` and accepting every id listed, until a listing is empty."""
    channel, stub = await _connect(params["address"])
    accepted: dict[str, list[int]] = {}
    counts = {"listed": 0, "calls": 0, "not_success": 0}

    async def one(cluster: str, secret: str) -> None:
        mine = accepted.setdefault(cluster, [])
        listing = pb.RequestJobsRequest(cluster=cluster, secret=secret, maxJobs=params["max_jobs"])
        while True:
            ids = list((await stub.RequestJobs(listing, timeout=60)).jobs)
            counts["calls"] += 1
            if not ids:
                return
            counts["listed"] += len(ids)
            r = await stub.AcceptJobs(
                pb.AcceptJobsRequest(cluster=cluster, secret=secret, jobids=ids), timeout=60
            )
            counts["calls"] += 1
            counts["not_success"] += r.status != pb.AcceptJobsResponse.RESULT_TYPE_SUCCESS
            mine.extend(ids)

    try:
        t0 = time.perf_counter()
        await asyncio.gather(*(one(c, s) for c, s in params["secrets"].items()))
        seconds = time.perf_counter() - t0
    finally:
        await channel.close()
    return {"seconds": round(seconds, 4), "accepted": accepted, **counts}
