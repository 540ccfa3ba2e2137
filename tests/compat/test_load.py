"""The Go server under load, as it really behaves, and what the poller must still hold.

64 submits in flight to 20 clusters while one ``PollerGroup`` polls all 20 and accepts;
then the same at 256 in flight. Under such load the Go server answers "database is
locked", a false "request denied" now and then (to any call), SUBMIT_SUCCESS for some
jobs it never stored, and listings that miss jobs it holds. What must hold anyway:

- no cluster's poller stops (a false denial must not stop a cluster);
- no job is owned twice, and ``accept()`` never says False (nobody else accepts here);
- every job the server really stored (its audit table, see ``support/goserver.py``) is
  owned exactly once, with the command it was submitted with;
- a submit that raised a definite refusal (denied, missing credential, busy) stored
  nothing, and no job was stored twice.

A probe client with retries off lists every cluster throughout the submits, so the
figures also say what the server answered on its own: how often it falsely denied,
and how many times in a row for one cluster. The figures go to ``go-load-figures.json``
beside this file (docs/go-server.md, "Under load", sums them up). Marked ``slow``: it runs
in ``tox -e compat``, not in the default run.
"""

from __future__ import annotations

import asyncio
import collections
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from support.gofixtures import REGISTRATION_SECRET, GoCluster
from support.goserver import GoServer
from support.ledger import Ledger

from rainbow_aio import (
    DeniedError,
    MissingCredentialError,
    RainbowClient,
    RainbowError,
    RetryPolicy,
    ServerBusyError,
)

from . import GO_SERVER

pytestmark = [pytest.mark.compat, pytest.mark.slow]

FIGURES_FILE = Path(__file__).with_name("go-load-figures.json")
CLUSTERS = 20
JOBS = 3000
CONSUMERS = 8
PROBE_LOOPS = 4
DRAIN_WITHIN = 180.0
# a refusal the server sends before it writes anything: the job cannot have been stored
REFUSED_BEFORE_WRITING = (DeniedError, MissingCredentialError, ServerBusyError)


@dataclass
class Submits:
    acknowledged: set[int] = field(default_factory=set)
    refused: set[int] = field(default_factory=set)  # serials refused before writing
    errors: collections.Counter[str] = field(default_factory=collections.Counter)

    async def run(self, client: RainbowClient, clusters: list[GoCluster], in_flight: int) -> None:
        slots = asyncio.Semaphore(in_flight)

        async def submit(serial: int) -> None:
            cluster = clusters[serial % len(clusters)]
            async with slots:
                try:
                    await client.submit_job(
                        cluster.name, cluster.token, f"load {serial}", name=f"j{serial}"
                    )
                except RainbowError as exc:
                    self.errors[f"{type(exc).__name__}: {exc.details or exc.message}"] += 1
                    if isinstance(exc, REFUSED_BEFORE_WRITING):
                        self.refused.add(serial)
                else:
                    self.acknowledged.add(serial)

        await asyncio.gather(*(submit(serial) for serial in range(JOBS)))


@dataclass
class Probe:
    """Lists clusters in loops (each loop one call at a time, never retried) and counts
    the answers."""

    answers: collections.Counter[str] = field(default_factory=collections.Counter)
    runs: collections.Counter[int] = field(default_factory=collections.Counter)
    """Length of a run of consecutive false denials of one cluster -> how many runs."""

    async def run(
        self, address: str, clusters: list[GoCluster], until: asyncio.Event, *, loops: int
    ) -> None:
        """``loops`` loops, each listing its share of ``clusters`` in turn until ``until``."""
        async with RainbowClient(address, retry=RetryPolicy.disabled()) as client:
            await asyncio.gather(
                *(self._loop(client, clusters[i::loops], until) for i in range(loops))
            )

    async def _loop(
        self, client: RainbowClient, clusters: list[GoCluster], until: asyncio.Event
    ) -> None:
        streak = dict.fromkeys((c.name for c in clusters), 0)
        while not until.is_set():
            for cluster in clusters:
                try:
                    await client.request_jobs(cluster.name, cluster.secret, max_jobs=1)
                except DeniedError:
                    self.answers["request denied"] += 1
                    streak[cluster.name] += 1
                    continue
                except RainbowError as exc:
                    self.answers[exc.details or type(exc).__name__] += 1
                else:
                    self.answers["ok"] += 1
                self._end_streak(streak, cluster.name)
        for name in streak:
            self._end_streak(streak, name)

    def _end_streak(self, streak: dict[str, int], name: str) -> None:
        if streak[name]:
            self.runs[streak[name]] += 1
            streak[name] = 0


@pytest.fixture
def go_server(tmp_path: Path) -> Iterator[GoServer]:
    """A Go server of its own for each run (not the module's shared one): the checks
    count every job it stored."""
    with GoServer(GO_SERVER, tmp_path) as server:
        yield server


@pytest.mark.timeout(900)
@pytest.mark.parametrize("in_flight", [64, 256])
async def test_under_load_pollers_keep_going_and_each_stored_job_is_owned_once(
    go_server: GoServer, in_flight: int
) -> None:
    began = time.monotonic()
    async with RainbowClient(go_server.address) as admin:
        clusters = []
        for i in range(CLUSTERS):
            reg = await admin.register(f"load-{i}", REGISTRATION_SECRET)
            clusters.append(GoCluster(reg.cluster, reg.token, reg.secret))

    submits, probe, ledger = Submits(), Probe(), Ledger()
    submitted = asyncio.Event()
    stopped: dict[str, str] = {}
    try:
        async with (
            RainbowClient(go_server.address) as poll_client,
            RainbowClient(go_server.address) as submit_client,
            poll_client.poll_many({c.name: c.secret for c in clusters}) as group,
        ):
            consumers = ledger.start(group, CONSUMERS)
            prober = asyncio.create_task(
                probe.run(go_server.address, clusters, submitted, loops=PROBE_LOOPS)
            )
            await submits.run(submit_client, clusters, in_flight)
            submit_seconds = time.monotonic() - began
            submitted.set()
            await prober
            left = await go_server.wait_drained(DRAIN_WITHIN, every=0.5)
            stopped = {name: repr(error) for name, error in group.errors.items()}
            await group.stop()
            await consumers
            stats = group.stats
    except* RainbowError:
        # leaving the group raises the errors of stopped clusters: `stopped` has them,
        # and the checks below report them with the figures
        if not stopped:
            raise

    stored = go_server.stored_jobs()
    serials = collections.Counter(int(job.command.split()[1]) for job in stored)
    expected = {job.id: job.command for job in stored}
    lost = submits.acknowledged - serials.keys()  # confirmed, never stored
    waiting = {job.id for job in go_server.waiting_jobs()}
    figures = {
        "plan": {
            "clusters": CLUSTERS,
            "submits_in_flight": in_flight,
            "jobs": JOBS,
            "consumers": CONSUMERS,
            "probe_loops": PROBE_LOOPS,
        },
        "seconds": round(time.monotonic() - began, 1),
        "submit_seconds": round(submit_seconds, 1),
        "submits_acknowledged": len(submits.acknowledged),
        "submit_errors": dict(submits.errors),
        "jobs_stored": len(stored),
        "acknowledged_not_stored": len(lost),
        "lost_submit_rate": round(len(lost) / max(len(submits.acknowledged), 1), 4),
        "stored_though_the_submit_raised": len(serials.keys() - submits.acknowledged),
        "probe": {
            "answers": dict(probe.answers),
            "false_denial_runs": {str(k): v for k, v in sorted(probe.runs.items())},
        },
        "group": {
            "polls": sum(s.polls for s in stats.values()),
            "poll_errors": sum(s.errors for s in stats.values()),
            "last_poll_error": {s.cluster: s.last_error for s in stats.values() if s.errors},
            "accept_calls": sum(s.accept_calls for s in stats.values()),
            "lost_to_others": sum(s.lost_to_others for s in stats.values()),
            "stopped_clusters": stopped,
        },
        "ledger": ledger.summary(),
        # accepted on the server (gone from its queue), yet owned by no consumer
        "uncertain_and_gone": sorted(set(ledger.uncertain) - waiting),
        "left_on_server": len(left),
    }
    summary = json.dumps(figures, indent=1)
    recorded = json.loads(FIGURES_FILE.read_text()) if FIGURES_FILE.exists() else {}
    recorded[f"{in_flight} submits in flight"] = figures
    FIGURES_FILE.write_text(json.dumps(recorded, indent=1) + "\n")

    assert stopped == {}, summary  # no cluster stopped (by a false denial or anything)
    assert left == [], summary
    assert ledger.owned_twice == [], summary
    assert ledger.lost == [], summary  # accept() False: only if someone else took it
    assert ledger.uncertain == [], summary
    assert ledger.commands == expected, summary  # each stored job owned once, as stored
    assert [s for s, times in serials.items() if times > 1] == [], summary
    assert submits.refused & serials.keys() == set(), summary
