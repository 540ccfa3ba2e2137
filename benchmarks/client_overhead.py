"""1. Client overhead: RainbowClient calls/s against the raw generated grpc.aio stub.

One worker process holds both a connected :class:`RainbowClient` and a raw
``RainbowSchedulerStub`` on its own ``grpc.aio`` channel, against the same server
process. For each RPC and each number of calls in flight it runs short timed rounds,
alternating raw and client in an ABBA order (raw, client, client, raw, ...) so that
load from the rest of the machine falls on both alike, and reports the ratio of total
calls/s (client / raw). It also reports the worker's CPU time per call for both, which
shows the client's own cost even when the server is the bottleneck.

- ``request_jobs``: the cluster has 10 jobs waiting and each call lists them
  (``max_jobs=10``); the client parses them into ``Job`` objects, sorted by id.
- ``request_jobs_parsed``: the same client call against the stub plus ``json.loads`` of
  each job's text, what a caller of the bare stub does to use the jobs (goal: 1.0).
- ``accept_jobs``: each call accepts one id that does not exist, so the server answers
  PARTIAL and the queue never changes (accepting real jobs would need a fresh job per
  call). Both sides do exactly the same server work.

Correctness, checked on every call: the listing is exactly the 10 expected ids (client:
in ascending order); the accept answers PARTIAL (client: ``AcceptStatus.PARTIAL``).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from benchmarks import _harness as H
from rainbow_aio._proto import rainbow_pb2 as pb
from rainbow_aio._proto import rainbow_pb2_grpc as pb_grpc

NAME = "client_overhead"
TITLE = "Client overhead: RainbowClient vs the raw grpc.aio stub"
LIST_SIZE = 10
MISSING_ID = 2**31 - 1  # never a real job id in these runs
GOAL = 0.90
# against the stub plus json.loads of each listed job, the client must be no slower
GOAL_PARSED = 1.0
GOALS = {"request_jobs": GOAL, "request_jobs_parsed": GOAL_PARSED, "accept_jobs": GOAL}

SIZES: dict[str, dict[str, Any]] = {
    "toy": {"in_flight": [1, 4], "rounds": 2, "round_seconds": 0.05, "warmup": 0.02},
    "quick": {"in_flight": [1, 64], "rounds": 2, "round_seconds": 0.4, "warmup": 0.15},
    "full": {"in_flight": [1, 64], "rounds": 6, "round_seconds": 0.8, "warmup": 0.3},
}


async def run(ctx: H.RunContext, checks: H.Checks) -> dict[str, Any]:
    p = SIZES[ctx.size]
    async with H.server_process(ctx, NAME) as server:
        async with H.Admin(server.address) as admin:
            creds = await admin.register_many(["overhead"])
            token, secret = creds["overhead"]
            ids = await admin.submit_many(
                [("overhead", token, f"j{i}", "echo hi") for i in range(LIST_SIZE)]
            )
        budget = 2 * 2 * len(p["in_flight"]) * (p["rounds"] * p["round_seconds"] + p["warmup"])
        result = await H.run_worker(
            "benchmarks.client_overhead:compare",
            {
                "address": server.address,
                "cluster": "overhead",
                "secret": secret,
                "expect_ids": sorted(ids),
                **p,
            },
            limit=60 + 3 * budget,
            profile=str(ctx.result_path(NAME, ".pyspy.txt")) if ctx.profile else None,
        )
    targets = []
    for row in result["rows"]:
        H.say(
            f"  {row['op']:<12} {row['in_flight']:>3} in flight: "
            f"raw {row['raw_calls_per_s']:>7,.0f}/s  "
            f"client {row['client_calls_per_s']:>7,.0f}/s  ratio {row['ratio']:.3f}  "
            f"CPU/call raw {row['raw_cpu_us_per_call']} us client "
            f"{row['client_cpu_us_per_call']} us"
        )
        checks.check(
            f"{row['op']} x{row['in_flight']}: every call answered as expected",
            row["errors"] == 0 and row["wrong"] == 0,
            f"{row['raw_calls'] + row['client_calls']} calls, {row['errors']} errors, "
            f"{row['wrong']} wrong",
        )
        targets.append(
            H.target(
                f"{row['op']} client/raw calls/s, {row['in_flight']} in flight",
                row["ratio"],
                GOALS[row["op"]],
                unit="x raw",
            )
        )
    return {"params": {**p, "list_size": LIST_SIZE}, "results": result, "targets": targets}


# -- worker side ----------------------------------------------------------------------------


async def compare(params: dict[str, Any]) -> dict[str, Any]:
    from rainbow_aio import AcceptStatus, RainbowClient

    address, cluster, secret = params["address"], params["cluster"], params["secret"]
    expect_sorted = list(params["expect_ids"])
    expect = set(expect_sorted)
    channel = grpc.aio.insecure_channel(address)
    stub = pb_grpc.RainbowSchedulerStub(channel)
    await asyncio.wait_for(channel.channel_ready(), 30)
    client = RainbowClient(address)
    await client.connect()

    list_req = pb.RequestJobsRequest(cluster=cluster, secret=secret, maxJobs=LIST_SIZE)
    accept_req = pb.AcceptJobsRequest(cluster=cluster, secret=secret, jobids=[MISSING_ID])
    partial = pb.AcceptJobsResponse.RESULT_TYPE_PARTIAL
    listed = pb.RequestJobsResponse.REQUEST_JOBS_SUCCESS

    async def raw_list() -> bool:
        r = await stub.RequestJobs(list_req, timeout=10)
        return r.status == listed and set(r.jobs) == expect

    async def client_list() -> bool:
        jobs = await client.request_jobs(cluster, secret, LIST_SIZE)
        return [j.id for j in jobs] == expect_sorted

    async def raw_list_parsed() -> bool:
        r = await stub.RequestJobs(list_req, timeout=10)
        parsed = [json.loads(text) for text in r.jobs.values()]
        return r.status == listed and {d["id"] for d in parsed} == expect

    async def raw_accept() -> bool:
        r = await stub.AcceptJobs(accept_req, timeout=10)
        return r.status == partial

    async def client_accept() -> bool:
        res = await client.accept_jobs(cluster, secret, [MISSING_ID])
        return res.status is AcceptStatus.PARTIAL

    ops: dict[str, tuple[Callable[[], Awaitable[bool]], Callable[[], Awaitable[bool]]]] = {
        "request_jobs": (raw_list, client_list),
        "request_jobs_parsed": (raw_list_parsed, client_list),
        "accept_jobs": (raw_accept, client_accept),
    }
    rows = []
    try:
        for op, (raw_fn, client_fn) in ops.items():
            for k in params["in_flight"]:
                await lanes(raw_fn, k, params["warmup"])
                await lanes(client_fn, k, params["warmup"])
                tot = {m: {"calls": 0, "secs": 0.0, "cpu": 0.0} for m in ("raw", "client")}
                errors = wrong = 0
                pair_ratios = []
                for r in range(params["rounds"]):
                    order = ("raw", "client") if r % 2 == 0 else ("client", "raw")
                    rates = {}
                    for mode in order:
                        fn = raw_fn if mode == "raw" else client_fn
                        c0 = H.cpu_seconds()
                        res = await lanes(fn, k, params["round_seconds"])
                        tot[mode]["cpu"] += H.cpu_seconds() - c0
                        tot[mode]["calls"] += res["calls"]
                        tot[mode]["secs"] += res["elapsed"]
                        errors += res["errors"]
                        wrong += res["wrong"]
                        rates[mode] = res["calls"] / res["elapsed"]
                    pair_ratios.append(rates["client"] / rates["raw"])
                raw_rate = tot["raw"]["calls"] / tot["raw"]["secs"]
                cl_rate = tot["client"]["calls"] / tot["client"]["secs"]
                rows.append(
                    {
                        "op": op,
                        "in_flight": k,
                        "raw_calls": tot["raw"]["calls"],
                        "client_calls": tot["client"]["calls"],
                        "raw_calls_per_s": round(raw_rate, 1),
                        "client_calls_per_s": round(cl_rate, 1),
                        "ratio": round(cl_rate / raw_rate, 4),
                        "round_ratios": [round(x, 3) for x in pair_ratios],
                        "raw_cpu_us_per_call": round(
                            1e6 * tot["raw"]["cpu"] / max(1, tot["raw"]["calls"]), 1
                        ),
                        "client_cpu_us_per_call": round(
                            1e6 * tot["client"]["cpu"] / max(1, tot["client"]["calls"]), 1
                        ),
                        "errors": errors,
                        "wrong": wrong,
                    }
                )
                print(f"  [worker] {op} x{k}: ratio {cl_rate / raw_rate:.3f}", flush=True)
    finally:
        await client.close()
        await channel.close()
    return {"rows": rows}


async def lanes(fn: Callable[[], Awaitable[bool]], k: int, seconds: float) -> dict[str, Any]:
    """``k`` concurrent loops of ``fn`` for ``seconds``; calls, errors and wrong answers."""
    counts = {"calls": 0, "errors": 0, "wrong": 0}
    perf = time.perf_counter
    start = perf()
    deadline = start + seconds

    async def lane() -> None:
        while perf() < deadline:
            try:
                ok = await fn()
            except Exception:
                counts["errors"] += 1
                continue
            counts["calls"] += 1
            if not ok:
                counts["wrong"] += 1

    await asyncio.gather(*(lane() for _ in range(k)))
    return {**counts, "elapsed": perf() - start}
