"""6. Server: SubmitJob and RequestJobs calls/s and latency, by calls in flight and jobs stored.

The load generator is a separate process using the raw generated ``grpc.aio`` stub (so
the figure is the server's, not the client library's). For each number of jobs stored
(pre-loaded into one cluster's queue) it runs, for each RPC and each number of calls in
flight, a short warm-up and then a timed phase, recording every call's latency.
RequestJobs runs first, so it sees exactly that many jobs stored; SubmitJob phases then
add their own jobs (the result records the table size at the start of every phase), and
those are deleted before the next level, so each level starts from its exact count.

Correctness, checked while it runs: every SubmitJob answers SUBMIT_SUCCESS with a real,
distinct id, and afterwards exactly the acknowledged ids are waiting on the server (none
lost, none extra); every RequestJobs answers the 10 lowest ids of the stored cluster.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc

from benchmarks import _harness as H
from rainbow_aio._proto import rainbow_pb2 as pb
from rainbow_aio._proto import rainbow_pb2_grpc as pb_grpc

NAME = "server"
TITLE = "Server: SubmitJob and RequestJobs calls/s and latency"
LIST_SIZE = 10

SIZES: dict[str, dict[str, Any]] = {
    "toy": {"stored": [LIST_SIZE], "in_flight": [1, 4], "seconds": 0.15, "warmup": 0.05},
    "quick": {
        "stored": [LIST_SIZE, 1_000],
        "in_flight": [1, 16, 64],
        "seconds": 0.4,
        "warmup": 0.1,
    },
    "full": {
        "stored": [LIST_SIZE, 1_000, 100_000],
        "in_flight": [1, 16, 64],
        "seconds": 3.0,
        "warmup": 0.5,
    },
}


async def run(ctx: H.RunContext, checks: H.Checks) -> dict[str, Any]:
    p = SIZES[ctx.size]
    phases: list[dict[str, Any]] = []
    preloads: list[dict[str, Any]] = []
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
                    1000,
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
    return {
        "params": {**p, "list_size": LIST_SIZE, "load_generator": "raw grpc.aio stub, 1 process"},
        "preload": preloads,
        "results": {"phases": phases},
        "targets": targets,
    }


def chart(payload: dict[str, Any], path: str) -> bool:
    import matplotlib.pyplot as plt

    phases = payload["results"]["phases"]
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


async def timed_lanes(call: Any, k: int, seconds: float) -> dict[str, Any]:
    """Run ``k`` concurrent loops of ``call`` until ``seconds`` pass; latency of each call.

    Calls started before the deadline are allowed to finish and are counted; the rate
    divides by the time until the last one finished.
    """
    latencies: list[float] = []
    counts = {"calls": 0, "errors": 0, "wrong": 0}
    samples: list[str] = []
    perf = time.perf_counter
    start = perf()
    deadline = start + seconds

    async def lane() -> None:
        while perf() < deadline:
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
