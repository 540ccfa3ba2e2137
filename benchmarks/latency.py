"""5. Latency: submit-to-handed-out and submit-to-accepted, idle and under steady load.

Three processes: the server; a consumer worker running a ``PollerGroup`` over 10
clusters with 64 consumers that accept every job they get; and a submitter worker (raw
stub) that submits jobs into those clusters at scheduled (Poisson) times. The submitter
writes ``time.monotonic_ns()`` into each job's name just before sending it; the consumer
reads it back, and both clocks are the same system-wide CLOCK_MONOTONIC, so

- *handed out* = when ``group.get()`` returned the job - when the submit was sent;
- *accepted* = when ``await job.accept()`` returned True - when the submit was sent.

Loads: *idle*, one job at a time with a mean gap of a few hundred ms, so pollers are
backed off when a job arrives; *steady*, a constant Poisson stream of jobs/s, timed only
after a warm-up longer than ``max_interval`` (the pollers start the phase backed off,
and jobs meeting that backoff are the idle case, not the steady one). Poller
settings: the defaults (``min_interval`` 0.25 s, ``max_interval`` 5 s) and a low
``min_interval`` (0.01 s; ``max_interval`` unchanged).

Correctness, checked per phase: the accepted jobs are exactly the acknowledged submits,
each accepted once, and none is left waiting.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from pathlib import Path
from typing import Any

import grpc

from benchmarks import _harness as H
from rainbow_aio._proto import rainbow_pb2 as pb
from rainbow_aio._proto import rainbow_pb2_grpc as pb_grpc

NAME = "latency"
TITLE = "Latency: submit to handed out and to accepted, p50/p99"
CLUSTERS = 10
CONSUMERS = 64  # enough that accepting never makes jobs wait in the queue

CONFIGS: dict[str, dict[str, Any]] = {
    "default": {},
    "low_min_interval": {"min_interval": 0.01},
}

SIZES: dict[str, dict[str, Any]] = {
    # toy: correctness only; a short max_interval so no job waits out a 5 s backoff
    "toy": {"idle": {"jobs": 3, "mean_gap": 0.05},
            "steady": {"rate": 50, "seconds": 0.3, "warmup": 0.1},
            "settle": 0.1, "override": {"max_interval": 0.25}},
    "quick": {"idle": {"jobs": 6, "mean_gap": 0.15},
              "steady": {"rate": 200, "seconds": 1.0, "warmup": 0.6}, "settle": 0.4},
    # warm-up > max_interval (5 s): no timed job meets a poller still backed off from idle
    "full": {"idle": {"jobs": 60, "mean_gap": 0.4},
             "steady": {"rate": 200, "seconds": 15.0, "warmup": 6.0}, "settle": 6.0},
}  # fmt: skip


async def run(ctx: H.RunContext, checks: H.Checks) -> dict[str, Any]:
    p = SIZES[ctx.size]
    phases = []
    async with H.server_process(ctx, NAME) as server:
        plan = [(cfg, load) for cfg in CONFIGS for load in ("idle", "steady")]
        if ctx.size == "toy":  # each config and each load once is enough to prove the code
            plan = [("default", "idle"), ("low_min_interval", "steady")]
        sets = {key: H.names(f"l-{key[0]}-{key[1]}", CLUSTERS) for key in plan}
        async with H.Admin(server.address) as admin:
            creds = await admin.register_many([c for s in sets.values() for c in s])
        for n, (cfg, load) in enumerate(plan):
            cs = sets[(cfg, load)]
            rng = random.Random(1000 + n)
            if load == "idle":
                count = p["idle"]["jobs"]
                gaps = [rng.expovariate(1 / p["idle"]["mean_gap"]) for _ in range(count)]
                warmup = 0.0
            else:
                warmup = p["steady"]["warmup"]
                span = p["steady"]["seconds"] + warmup
                count = int(p["steady"]["rate"] * span)
                gaps = [rng.expovariate(p["steady"]["rate"]) for _ in range(count)]
            offsets, t = [], 0.0
            for g in gaps:
                t += g
                offsets.append(round(t, 6))
            # jobs sent during the warm-up are accepted and checked but not timed: the
            # pollers start the phase backed off from idle, which is the idle figure
            timed = [o >= warmup for o in offsets]
            targets_ = [cs[rng.randrange(CLUSTERS)] for _ in range(count)]
            ready = ctx.tmp / f"latency-ready-{n}"
            consumer = await H.start_worker(
                "benchmarks.latency:consume",
                {
                    "address": server.address,
                    "secrets": {c: creds[c][1] for c in cs},
                    "total": count,
                    "options": {**CONFIGS[cfg], **p.get("override", {})},
                    "ready_file": str(ready),
                    "settle": p["settle"],
                },
                limit=120 + 3 * offsets[-1],
            )
            try:
                await H.wait_for_file(ready, 60, [consumer])
                sub = await H.run_worker(
                    "benchmarks.latency:submit",
                    {
                        "address": server.address,
                        "tokens": {c: creds[c][0] for c in cs},
                        "offsets": offsets,
                        "clusters": targets_,
                        "timed": timed,
                    },
                    limit=120 + 3 * offsets[-1],
                )
                res = await consumer.result()
            finally:
                await consumer.kill()
            async with H.Admin(server.address) as admin:
                remaining = await admin.waiting_many({c: creds[c] for c in cs})
            acked: dict[str, list[int]] = {}
            for cluster, job_id in sub["acked"]:
                acked.setdefault(cluster, []).append(job_id)
            label = f"{cfg}/{load}"
            checks.check(
                f"{label}: every submit acknowledged",
                sub["errors"] == 0 and len(sub["acked"]) == count,
                f"{len(sub['acked'])}/{count}, {sub['errors']} errors",
            )
            ok = H.verify_drain(checks, label, acked, res["accepted"], remaining)
            checks.check(
                f"{label}: every accept() returned True",
                res["failed_accepts"] == 0,
                f"{res['failed_accepts']} false",
            )
            handed = H.latency_summary(res["handed_out_s"])
            accepted = H.latency_summary(res["accepted_s"])
            phases.append(
                {
                    "config": cfg,
                    "options": {**CONFIGS[cfg], **p.get("override", {})},
                    "load": load,
                    "jobs": count,
                    "timed_jobs": len(res["handed_out_s"]),
                    "warmup_s": warmup,
                    "offered_rate_per_s": round(count / offsets[-1], 1),
                    "submit_seconds": sub["seconds"],
                    "submit_lag_p99_ms": sub["lag_p99_ms"],
                    # SubmitJob answered = committed (fsync'd): a job cannot be listed sooner
                    "submit_ack": sub["submit_ack"],
                    "handed_out": handed,
                    "accepted": accepted,
                    "consumer_cpu_s": res["cpu_s"],
                    "polls": res["polls"],
                    "accept_calls": res["accept_calls"],
                    "correct": ok,
                }
            )
            H.say(
                f"  {label:<24} {count:>5} jobs: handed out p50 {handed['p50_ms']} / p99 "
                f"{handed['p99_ms']} ms; accepted p50 {accepted['p50_ms']} / p99 "
                f"{accepted['p99_ms']} ms; {res['polls']} polls; SubmitJob answered p50 "
                f"{sub['submit_ack']['p50_ms']} / p99 {sub['submit_ack']['p99_ms']} ms"
            )
    params = {**p, "clusters": CLUSTERS, "consumers": CONSUMERS, "configs": CONFIGS}
    return {"params": params, "results": {"phases": phases}, "targets": []}


# -- worker side ----------------------------------------------------------------------------


async def consume(params: dict[str, Any]) -> dict[str, Any]:
    from rainbow_aio import RainbowClient

    total = params["total"]
    accepted: list[int] = []
    handed: list[float] = []
    acc: list[float] = []
    failed = 0
    done = asyncio.Event()
    clock = time.monotonic_ns
    client = RainbowClient(params["address"])
    async with client, client.poll_many(params["secrets"], **params["options"]) as group:

        async def consumer() -> None:
            nonlocal failed
            while not done.is_set():
                job = await group.get()
                t_got = clock()
                name = job.job.name
                sent = int(name[1:])
                ok = await job.accept()
                t_acc = clock()
                if not ok:
                    failed += 1
                    continue
                accepted.append(job.id)
                if name[0] == "t":  # "w": a warm-up job, not timed
                    handed.append((t_got - sent) / 1e9)
                    acc.append((t_acc - sent) / 1e9)
                if len(accepted) >= total:
                    done.set()

        tasks = [asyncio.create_task(consumer()) for _ in range(CONSUMERS)]
        cpu0 = H.cpu_seconds()
        try:
            # let the pollers back off to idle before the first job is submitted
            await asyncio.sleep(params["settle"])
            _touch(params["ready_file"])
            await asyncio.wait_for(done.wait(), 900)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        cpu = H.cpu_seconds() - cpu0
        stats = group.stats
        polls = sum(s.polls for s in stats.values())
        accept_calls = sum(s.accept_calls for s in stats.values())
    return {
        "accepted": accepted,
        "handed_out_s": handed,
        "accepted_s": acc,
        "failed_accepts": failed,
        "cpu_s": round(cpu, 4),
        "polls": polls,
        "accept_calls": accept_calls,
    }


def _touch(path: str) -> None:
    Path(path).write_text(str(os.getpid()))


async def submit(params: dict[str, Any]) -> dict[str, Any]:
    """Submit one job per offset (seconds from start), each at its time, without waiting
    for the previous one; the job's name carries the send time (monotonic ns)."""
    channel = grpc.aio.insecure_channel(params["address"])
    stub = pb_grpc.RainbowSchedulerStub(channel)
    await asyncio.wait_for(channel.channel_ready(), 30)
    tokens = params["tokens"]
    acked: list[tuple[str, int]] = []
    errors = 0
    lags: list[float] = []
    ack_s: list[float] = []
    loop = asyncio.get_running_loop()

    async def one(cluster: str, timed: bool) -> None:
        nonlocal errors
        req = pb.SubmitJobRequest(
            cluster=cluster,
            token=tokens[cluster],
            name=f"{'t' if timed else 'w'}{time.monotonic_ns()}",
            command="true",
            nodes=1,
        )
        t0 = time.perf_counter()
        try:
            r = await stub.SubmitJob(req, timeout=30)
        except grpc.aio.AioRpcError:
            errors += 1
            return
        ack_s.append(time.perf_counter() - t0)
        if r.status == pb.SubmitJobResponse.SUBMIT_SUCCESS and r.jobid > 0:
            acked.append((cluster, r.jobid))
        else:
            errors += 1

    tasks = []
    start = loop.time()
    try:
        plan = zip(params["offsets"], params["clusters"], params["timed"], strict=True)
        for offset, cluster, timed in plan:
            delay = start + offset - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            lags.append(max(0.0, loop.time() - (start + offset)))
            tasks.append(asyncio.create_task(one(cluster, timed)))
        await asyncio.gather(*tasks)
    finally:
        await channel.close()
    p99 = H.percentile(lags, 99)
    return {
        "acked": acked,
        "errors": errors,
        "seconds": round(loop.time() - start, 3),
        "lag_p99_ms": None if p99 is None else round(p99 * 1000, 3),
        "submit_ack": H.latency_summary(ack_s),
    }
