"""Soak: jobs submitted and polled through a chaos proxy while the server is SIGKILLed.

One run:

1. ``rainbow-aio serve`` runs as a child process on a database file; clusters are
   registered directly (not through the proxy).
2. A chaos proxy (seeded) sits in front of it; it drops, stalls and refuses connections
   for the whole submit phase.
3. Submitter tasks submit uniquely numbered jobs through the proxy until ``jobs`` submits
   have been acknowledged. A submit that raises (its answer was lost, or the server was
   down past the budget) is counted as *unacknowledged*: it may or may not have been
   stored, and it is never repeated (a repeat could store it twice).
4. At the same time one ``poll_many`` group over every cluster, through the proxy, feeds
   consumer tasks that accept each job handed to them.
5. When given fractions of the jobs have been acknowledged, the server is killed with
   SIGKILL and restarted on the same database and port.
6. After the last submit and restart the chaos stops; the run waits until the server has
   no job left and no accept is in flight, then closes everything.

Checked afterwards: every acknowledged job was accepted (``accept()`` returned True)
exactly once, by one consumer, with the content it was submitted with; unacknowledged
jobs that were stored were accepted at most once; no job is left on the server; no
consumer was handed a job twice; nothing was accepted twice; no task is left running;
no credential appears in the server's output. The figures go to a JSON file.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import json
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from support.chaos import ChaosProxy

from rainbow_aio import (
    AcceptUncertainError,
    DeniedError,
    PollerStoppedError,
    RainbowClient,
    RainbowError,
    Registration,
    RetryPolicy,
)
from rainbow_aio.testing import ServerProcess

from ._secretscan import WATCH

FIGURES_FILE = Path(__file__).with_name("soak-figures.json")


@dataclass(frozen=True)
class Plan:
    clusters: int
    jobs: int
    restarts: int
    seed: int
    submitters: int
    consumers: int
    timeout: float  # the whole run, seconds: past it the run is a hang
    drain_timeout: float
    chaos_interval: tuple[float, float] = (0.2, 1.0)  # seconds between two faults
    rate: float = 0.0  # submits per second over all submitters (0: as fast as possible)


@dataclass
class Ledger:
    """Everything the submitters and consumers saw, for the checks and the figures."""

    acked: dict[int, int] = field(default_factory=dict)  # serial -> job id
    unacked: set[int] = field(default_factory=set)  # serials whose submit raised
    submit_errors: collections.Counter[str] = field(default_factory=collections.Counter)
    false_denials: int = 0
    owners: dict[int, list[int]] = field(default_factory=lambda: collections.defaultdict(list))
    content: dict[int, tuple[str, str, str, int]] = field(default_factory=dict)
    handouts: collections.Counter[int] = field(default_factory=collections.Counter)
    uncertain: collections.Counter[int] = field(default_factory=collections.Counter)
    lost_to_others: collections.Counter[int] = field(default_factory=collections.Counter)
    accept_errors: collections.Counter[str] = field(default_factory=collections.Counter)
    same_consumer_repeats: int = 0
    in_flight: int = 0
    restarts: int = 0


def serial_of(command: str) -> int:
    return int(command.split()[1])


def job_fields(serial: int, clusters: list[str]) -> tuple[str, str, str, int]:
    """(cluster, name, command, nodes) of the job numbered ``serial``."""
    return clusters[serial % len(clusters)], f"s{serial}", f"soak {serial}", 1 + serial % 4


async def run_soak(plan: Plan, db: Path) -> dict[str, Any]:
    rng = random.Random(plan.seed)
    ledger = Ledger()
    names = [f"soak-{i:02d}" for i in range(plan.clusters)]
    retry = RetryPolicy(max_attempts=8, initial_backoff=0.05, max_backoff=0.5)
    server = ServerProcess(db, cleanup=True)
    started = time.monotonic()
    try:
        await server.start()
        async with (
            RainbowClient(server.address, retry=retry) as admin,
            ChaosProxy(
                server.address,
                seed=plan.seed,
                chaos=False,
                interval=plan.chaos_interval,
                refuse_weight=0.3,
                stall_time=(0.05, 3.0),  # the longer ones outlast a call's 2 s deadline
                refuse_time=(0.05, 0.5),
            ) as proxy,
            RainbowClient(
                proxy.address, retry=retry, timeout=8, attempt_timeout=2.0, connect_timeout=10
            ) as poll,
            RainbowClient(
                proxy.address, retry=retry, timeout=8, attempt_timeout=2.0, connect_timeout=10
            ) as sub,
        ):
            regs: dict[str, Registration] = {}
            for name in names:
                regs[name] = await admin.register(name, "chocolate-cookies")
            proxy.chaos = True
            counter = iter(range(10**9))

            async def submitter() -> None:
                while len(ledger.acked) < plan.jobs:
                    serial = next(counter)
                    assert serial < 3 * plan.jobs, "too many failed submits"
                    cluster, name, command, nodes = job_fields(serial, names)
                    try:
                        job_id = await sub.submit_job(
                            cluster, regs[cluster].token, command, name=name, nodes=nodes, timeout=8
                        )
                    except DeniedError:
                        ledger.false_denials += 1
                        ledger.unacked.add(serial)
                    except RainbowError as exc:
                        ledger.submit_errors[type(exc).__name__] += 1
                        ledger.unacked.add(serial)
                    else:
                        assert job_id is not None
                        ledger.acked[serial] = job_id
                    if plan.rate:
                        # spread the jobs over time so that the chaos and the restarts
                        # meet a steady flow rather than one burst
                        await asyncio.sleep(plan.submitters / plan.rate)

            async def killer() -> None:
                for i in range(plan.restarts):
                    goal = (i + 1) * plan.jobs // (plan.restarts + 1)
                    # progress is counted by many tasks; a short poll is simplest
                    while len(ledger.acked) < goal:  # noqa: ASYNC110
                        await asyncio.sleep(0.05)
                    await server.kill()
                    await asyncio.sleep(rng.uniform(0.2, 1.5))
                    await server.start()
                    ledger.restarts += 1

            async def consumer(k: int, group: Any) -> None:
                seen: set[int] = set()
                async for pj in group:
                    if pj.id in seen and not ledger.uncertain[pj.id]:
                        ledger.same_consumer_repeats += 1
                    seen.add(pj.id)
                    ledger.handouts[pj.id] += 1
                    ledger.in_flight += 1
                    try:
                        ok = await pj.accept()
                    except AcceptUncertainError:
                        ledger.uncertain[pj.id] += 1
                        continue
                    except PollerStoppedError:
                        ledger.accept_errors["stopped"] += 1
                        continue
                    finally:
                        ledger.in_flight -= 1
                    if not ok:
                        ledger.lost_to_others[pj.id] += 1
                        continue
                    ledger.owners[pj.id].append(k)
                    job = pj.job
                    ledger.content[pj.id] = (job.cluster, job.name, job.command, job.nodes)

            async def drained() -> bool:
                if ledger.in_flight:
                    return False
                for name in names:
                    if await admin.request_jobs(name, regs[name].secret, max_jobs=1):
                        return False
                return True

            secrets = {name: reg.secret for name, reg in regs.items()}
            options = {"max_jobs": 50, "queue_size": 200, "min_interval": 0.05}
            async with poll.poll_many(secrets, max_interval=0.5, **options) as group:
                async with asyncio.TaskGroup() as tg:
                    consumers = [tg.create_task(consumer(k, group)) for k in range(plan.consumers)]
                    async with asyncio.TaskGroup() as producers:
                        for _ in range(plan.submitters):
                            producers.create_task(submitter())
                        producers.create_task(killer())
                    proxy.chaos = False
                    proxy.stop_refusing()
                    proxy.resume()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(plan.drain_timeout):
                            # the condition is the server's state: poll it
                            while not await drained():  # noqa: ASYNC110
                                await asyncio.sleep(0.25)
                    await group.stop()
                    for task in consumers:
                        await task
                poll_stats = group.stats
            leftover = {
                name: [j.id for j in await admin.request_jobs(name, regs[name].secret)]
                for name in names
            }
            faults = proxy.faults.as_dict()
            chaos_history = len(proxy.history)
    finally:
        await server.stop()
    WATCH.add_text("soak:serve-output", server.output)
    elapsed = time.monotonic() - started
    return summarise(plan, ledger, names, leftover, poll_stats, faults, chaos_history, elapsed)


def summarise(
    plan: Plan,
    ledger: Ledger,
    names: list[str],
    leftover: dict[str, list[int]],
    poll_stats: dict[str, Any],
    faults: dict[str, int],
    chaos_history: int,
    elapsed: float,
) -> dict[str, Any]:
    acked_ids = {job_id: serial for serial, job_id in ledger.acked.items()}
    owned = {job_id: owners for job_id, owners in ledger.owners.items() if owners}
    # an acknowledged job is lost when nobody owns it and it is not on the server
    left = {i for ids in leftover.values() for i in ids}
    lost = sorted(i for i in acked_ids if i not in owned and i not in left)
    lost_after_uncertain = [i for i in lost if ledger.uncertain[i]]
    accepted_twice = sorted(i for i, owners in owned.items() if len(owners) > 1)
    # jobs stored from a submit that raised: known by their unique serial in the command
    unacked_owned = {i: serial_of(c[2]) for i, c in ledger.content.items() if i not in acked_ids}
    stored_twice = [
        s
        for s, n in collections.Counter(serial_of(c[2]) for c in ledger.content.values()).items()
        if n > 1
    ]
    wrong_content = sorted(
        i
        for i, serial in acked_ids.items()
        if i in ledger.content and ledger.content[i] != job_fields(serial, names)
    )
    stats = list(poll_stats.values())
    return {
        "plan": dataclasses.asdict(plan),
        "seconds": round(elapsed, 1),
        "jobs_acknowledged": len(ledger.acked),
        "submits_unacknowledged": len(ledger.unacked),
        "unacknowledged_stored_and_accepted": len(unacked_owned),
        "unacknowledged_never_stored_or_not_seen": len(ledger.unacked) - len(unacked_owned),
        "submit_errors": dict(ledger.submit_errors),
        "false_denials": ledger.false_denials,
        "jobs_accepted": len(owned),
        "acknowledged_accepted_once": sum(
            1 for i in acked_ids if len(ledger.owners.get(i, [])) == 1
        ),
        "duplicates": len(accepted_twice) + len(stored_twice) + ledger.same_consumer_repeats,
        "accepted_twice": accepted_twice,
        "stored_twice": stored_twice,
        "same_consumer_repeats": ledger.same_consumer_repeats,
        "lost": len(lost),
        "lost_ids": lost[:50],
        "lost_after_uncertain_accept": len(lost_after_uncertain),
        "left_on_server": sorted(left)[:50],
        "wrong_content": wrong_content[:50],
        "accepts_uncertain": sum(ledger.uncertain.values()),
        "handed_out_again_after_uncertain": sum(
            1 for i, n in ledger.uncertain.items() if ledger.handouts[i] > n
        ),
        "accepts_lost_to_others": sum(ledger.lost_to_others.values()),
        "accept_errors": dict(ledger.accept_errors),
        "restarts": ledger.restarts,
        "faults": faults,
        "chaos_decisions": chaos_history,
        "poll_errors": sum(s.errors for s in stats),
        "polls": sum(s.polls for s in stats),
        "accept_calls": sum(s.accept_calls for s in stats),
    }


async def check(plan: Plan, figures: dict[str, Any]) -> None:
    summary = json.dumps(figures, indent=1)
    assert figures["restarts"] == plan.restarts, summary
    # concurrent submitters may overshoot the goal by a few
    assert figures["jobs_acknowledged"] >= plan.jobs, summary
    assert figures["acknowledged_accepted_once"] == figures["jobs_acknowledged"], summary
    assert figures["lost"] == 0, summary
    assert figures["duplicates"] == 0, summary
    assert figures["left_on_server"] == [], summary
    assert figures["wrong_content"] == [], summary
    assert figures["false_denials"] == 0, summary
    assert figures["faults"]["injected"] > 0, summary
    # no task outlives the run (the test's own task aside)
    current = asyncio.current_task()
    async with asyncio.timeout(10):
        while others := [t for t in asyncio.all_tasks() if t is not current]:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    assert not others
    assert WATCH.leaks() == []


async def test_soak_short(tmp_path: Path) -> None:
    plan = Plan(
        clusters=5,
        jobs=500,
        restarts=1,
        seed=20240214,
        submitters=8,
        consumers=4,
        timeout=120,
        drain_timeout=60,
        chaos_interval=(0.05, 0.3),
    )
    async with asyncio.timeout(plan.timeout):
        figures = await run_soak(plan, tmp_path / "soak.db")
    (tmp_path / "figures.json").write_text(json.dumps(figures, indent=1))
    await check(plan, figures)


@pytest.mark.slow
@pytest.mark.timeout(1800)
async def test_soak_full(tmp_path: Path) -> None:
    plan = Plan(
        clusters=50,
        jobs=10_000,
        restarts=5,
        seed=int(os.environ.get("RAINBOW_SOAK_SEED", "7")),
        submitters=16,
        consumers=8,
        timeout=15 * 60,
        drain_timeout=300,
        chaos_interval=(0.05, 0.5),
        rate=100.0,
    )
    async with asyncio.timeout(plan.timeout):
        figures = await run_soak(plan, tmp_path / "soak.db")
    FIGURES_FILE.write_text(json.dumps(figures, indent=1) + "\n")
    await check(plan, figures)
