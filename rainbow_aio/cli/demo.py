"""``rainbow-aio demo``: many clusters, thousands of jobs, one process, nothing lost.

The demo starts an embedded server in this process (loopback, free port, in-memory
database, a random registration secret), registers ``--clusters`` clusters, and submits
``--jobs`` jobs to them round-robin while one :class:`~rainbow_aio.PollerGroup` polls
every cluster and accepts what it is given. Every job id that ``submit_job`` returns is
tracked, and so is every id whose ``accept()`` said "this process owns it". At the end
:func:`account` compares the two: a job accepted more than once is a *duplicate*; a job
never accepted is *not accepted in time* when it is still waiting on the server once
``--timeout`` has run out, and *lost* when it is not. Any of them makes the command exit
non-zero.

Ctrl-C ends the demo with one line. What the interrupted pollers would log about the jobs
they were accepting is not shown: those jobs belong to the demo's own in-memory server,
which goes away with it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import secrets
import sys
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TextIO

from .._client import RainbowClient
from .._exceptions import RainbowError
from ..poller import JobBatch, PolledJob
from ..server import RainbowServer, ServerStartError
from ._common import (
    EXIT_ERROR,
    Interrupted,
    error,
    explain,
    interrupted,
    run_until_interrupted,
    seconds,
    whole_number,
)

__all__ = ["DemoOptions", "DemoReport", "account", "add_parser", "render", "run_demo"]


@dataclass(frozen=True, slots=True)
class DemoOptions:
    """What the demo does; the command-line options map one to one."""

    clusters: int = 50
    jobs: int = 5000
    concurrency: int = 32
    max_jobs: int = 100
    timeout: float = 60.0
    batch: int | None = None  # jobs per batch handed to a handler; None: one job at a time


@dataclass(frozen=True, slots=True)
class DemoReport:
    """The demo's final accounting (see :func:`account`)."""

    clusters: int
    submitted: int
    """Jobs whose ``submit_job`` returned an id."""
    submit_errors: int
    """``submit_job`` calls that raised (the client said the job was not taken)."""
    accepted: int
    """Distinct submitted ids that this process accepted."""
    duplicates: int
    """Extra acceptances: each acceptance of an id beyond its first."""
    late: int
    """Submitted ids never accepted and still waiting on the server when ``--timeout`` ran
    out: the demo gave up on them, nothing lost them."""
    lost: int
    """Submitted ids never accepted and no longer on the server."""
    unexpected: int
    """Accepted ids that no ``submit_job`` call returned."""
    elapsed: float
    """Seconds from the first submission to the end of the run."""
    latency_p50: float | None
    """Median seconds from the start of a job's submission to its acceptance."""
    latency_p99: float | None

    @property
    def throughput(self) -> float:
        """Accepted jobs per second over the whole run."""
        return self.accepted / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def ok(self) -> bool:
        """True when every submitted job was accepted exactly once and nothing else was."""
        return not (
            self.late or self.lost or self.duplicates or self.unexpected or self.submit_errors
        )

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else EXIT_ERROR


def _percentile(ordered: Sequence[float], fraction: float) -> float | None:
    """Nearest-rank percentile of already sorted values (None when there are none)."""
    if not ordered:
        return None
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def account(
    *,
    clusters: int,
    submitted: Mapping[int, float],
    accepted: Iterable[tuple[int, float]],
    elapsed: float,
    submit_errors: int = 0,
    waiting: Collection[int] = (),
) -> DemoReport:
    """Compare what was submitted with what was accepted.

    ``submitted`` maps each id ``submit_job`` returned to the time its submission began;
    ``accepted`` lists one ``(id, time)`` pair for every ``accept()`` that returned True,
    in any order, repeats included (a repeat is exactly what this function looks for);
    ``waiting`` holds the ids the server still listed at the end.
    """
    counts: Counter[int] = Counter()
    first_accept: dict[int, float] = {}
    for job_id, at in accepted:
        counts[job_id] += 1
        if job_id not in first_accept or at < first_accept[job_id]:
            first_accept[job_id] = at
    latencies = sorted(
        first_accept[job_id] - started
        for job_id, started in submitted.items()
        if job_id in first_accept
    )
    return DemoReport(
        clusters=clusters,
        submitted=len(submitted),
        submit_errors=submit_errors,
        accepted=sum(1 for job_id in counts if job_id in submitted),
        duplicates=sum(n - 1 for n in counts.values()),
        late=sum(1 for job_id in submitted if job_id not in counts and job_id in waiting),
        lost=sum(1 for job_id in submitted if job_id not in counts and job_id not in waiting),
        unexpected=sum(1 for job_id in counts if job_id not in submitted),
        elapsed=elapsed,
        latency_p50=_percentile(latencies, 0.50),
        latency_p99=_percentile(latencies, 0.99),
    )


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:,.1f} ms"


def render(report: DemoReport) -> str:
    """The final table, one row per figure, and a closing verdict line."""
    rows = [
        ("clusters", f"{report.clusters:,}"),
        ("jobs submitted", f"{report.submitted:,}"),
        ("accepted", f"{report.accepted:,}"),
        ("duplicates", f"{report.duplicates:,}"),
        ("lost", f"{report.lost:,}"),
    ]
    if report.late:
        rows.append(("not accepted in time", f"{report.late:,}"))
    if report.unexpected:
        rows.append(("accepted, never submitted", f"{report.unexpected:,}"))
    if report.submit_errors:
        rows.append(("submit errors", f"{report.submit_errors:,}"))
    rows += [
        ("elapsed", f"{report.elapsed:,.2f} s"),
        ("throughput", f"{report.throughput:,.0f} jobs/s"),
        ("submit-to-accept p50", _ms(report.latency_p50)),
        ("submit-to-accept p99", _ms(report.latency_p99)),
    ]
    width = max(len(name) for name, _ in rows)
    value_width = max(len(value) for _, value in rows)
    rule = "─" * (width + value_width + 3)
    lines = [rule, *(f"{name:<{width}}   {value:>{value_width}}" for name, value in rows), rule]
    if report.ok:
        lines.append("✅️ every job was accepted exactly once")
    else:
        problems = []
        if report.late:
            problems.append(f"{report.late:,} not accepted in time (a longer --timeout waits more)")
        if report.lost:
            problems.append(f"{report.lost:,} lost")
        if report.duplicates:
            problems.append(f"{report.duplicates:,} accepted twice")
        if report.unexpected:
            problems.append(f"{report.unexpected:,} accepted but never submitted")
        if report.submit_errors:
            problems.append(f"{report.submit_errors:,} failed submissions")
        lines.append("❌️ " + ", ".join(problems))
    return "\n".join(lines)


class _Tracker:
    """Records submissions and acceptances, and notices when every job is in."""

    def __init__(self, jobs: int) -> None:
        self.jobs = jobs
        self.submitted: dict[int, float] = {}
        self.accepted: list[tuple[int, float]] = []
        self.submit_errors = 0
        self.finished_submitting = False
        self._accepted_ids: set[int] = set()
        self._waiting: set[int] = set()  # submitted, not accepted yet
        self.all_in = asyncio.Event()

    @property
    def outstanding(self) -> int:
        """Submitted jobs not accepted yet."""
        return len(self._waiting)

    def on_submitted(self, job_id: int, started: float) -> None:
        self.submitted[job_id] = started
        if job_id not in self._accepted_ids:  # the poller can be faster than our answer
            self._waiting.add(job_id)

    def on_accepted(self, job_id: int) -> None:
        self.accepted.append((job_id, time.monotonic()))
        self._accepted_ids.add(job_id)
        self._waiting.discard(job_id)
        self._check()

    def done_submitting(self) -> None:
        self.finished_submitting = True
        self._check()

    def _check(self) -> None:
        if self.finished_submitting and not self._waiting:
            self.all_in.set()


class _Progress:
    """Live progress: one refreshing line on a terminal, a plain line now and then else."""

    def __init__(self, tracker: _Tracker, out: TextIO) -> None:
        self.tracker = tracker
        self.out = out
        self.tty = out.isatty()
        self.interval = 0.25 if self.tty else 2.0
        self._last = (time.monotonic(), 0, 0)
        self._mid_line = False  # a terminal line is drawn and not ended yet

    def line(self) -> str:
        now = time.monotonic()
        submitted = len(self.tracker.submitted)
        accepted = len(self.tracker.accepted)
        then, prev_sub, prev_acc = self._last
        span = max(now - then, 1e-9)
        self._last = (now, submitted, accepted)
        submit_rate = (submitted - prev_sub) / span
        accept_rate = (accepted - prev_acc) / span
        return (
            f"submitted {submitted:,}/{self.tracker.jobs:,} ({submit_rate:,.0f}/s)"
            f"  accepted {accepted:,} ({accept_rate:,.0f}/s)"
        )

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self.show()

    def show(self) -> None:
        if self.tty:
            self.out.write("\r\x1b[2K" + self.line())
            self._mid_line = True
        else:
            self.out.write(self.line() + "\n")
        self.out.flush()

    def finish(self) -> None:
        self.show()
        self.end_line()

    def end_line(self) -> None:
        """On a terminal, move off the line being redrawn."""
        if self._mid_line:
            self.out.write("\n")
            self.out.flush()
            self._mid_line = False


async def run_demo(options: DemoOptions, out: TextIO = sys.stdout) -> DemoReport:
    """Run the whole demo against a fresh in-process server and return its accounting."""
    tracker = _Tracker(options.jobs)
    progress = _Progress(tracker, out)
    try:
        return await _run(options, tracker, progress, out)
    except asyncio.CancelledError:
        progress.end_line()  # whatever is printed next starts on a line of its own
        raise


async def _run(
    options: DemoOptions, tracker: _Tracker, progress: _Progress, out: TextIO
) -> DemoReport:
    registration_secret = secrets.token_urlsafe(16)
    names = [f"demo-{i:03d}" for i in range(options.clusters)]
    async with (
        RainbowServer("127.0.0.1:0", db=":memory:", secret=registration_secret) as server,
        RainbowClient(server.address) as client,
    ):
        print(
            f"🌈️ embedded server on {server.address}; registering {options.clusters:,} "
            f"clusters, submitting {options.jobs:,} jobs",
            file=out,
            flush=True,
        )
        gate = asyncio.Semaphore(options.concurrency)

        async def register(name: str) -> tuple[str, str, str]:
            async with gate:
                reg = await client.register(name, registration_secret)
            return name, reg.token, reg.secret

        registered = await asyncio.gather(*(register(name) for name in names))
        tokens = {name: token for name, token, _ in registered}
        cluster_secrets = {name: secret for name, _, secret in registered}
        next_job = iter(range(options.jobs))

        async def submitter() -> None:
            for index in next_job:
                cluster = names[index % len(names)]
                started = time.monotonic()
                try:
                    job_id = await client.submit_job(
                        cluster, tokens[cluster], f"echo job {index}", name=f"job-{index}"
                    )
                except RainbowError:
                    tracker.submit_errors += 1
                    continue
                if job_id is None:  # only the Go server hides ids; ours never does
                    tracker.submit_errors += 1
                    continue
                tracker.on_submitted(job_id, started)

        async def handle(job: PolledJob) -> None:
            if await job.accept():  # True: this process, and nobody else, owns the job
                tracker.on_accepted(job.id)

        async def handle_batch(batch: JobBatch) -> None:
            for job in await batch.accept():  # one AcceptJobs for the whole batch
                tracker.on_accepted(job.id)

        async def still_waiting(cluster: str) -> list[int]:
            async with gate:
                jobs = await client.request_jobs(cluster, cluster_secrets[cluster])
            return [job.id for job in jobs]

        started = time.monotonic()
        group = client.poll_many(
            cluster_secrets,
            max_jobs=options.max_jobs,
            queue_size=max(100, options.concurrency * 4),
            # idle pollers back off to at most half a second, so the demo's latency shows
            # the library rather than a long idle wait
            min_interval=0.05,
            max_interval=0.5,
        )

        async def poll_and_accept() -> None:
            async with group:
                if options.batch is None:
                    await group.run(handle, concurrency=options.concurrency, accept="manual")
                else:
                    await group.run(
                        handle_batch,
                        batch_size=options.batch,
                        concurrency=options.concurrency,
                        accept="manual",
                    )

        async with asyncio.TaskGroup() as tasks:
            # The group lives in its own task: it returns when group.stop() is called.
            tasks.create_task(poll_and_accept())
            showing = tasks.create_task(progress.run())
            await asyncio.gather(*(submitter() for _ in range(options.concurrency)))
            tracker.done_submitting()
            try:
                async with asyncio.timeout(options.timeout):
                    await tracker.all_in.wait()
            except TimeoutError:
                progress.end_line()
                print(
                    f"--timeout: {options.timeout:g} s after the last submission, "
                    f"{tracker.outstanding:,} jobs were not accepted yet; stopping",
                    file=out,
                )
            elapsed = time.monotonic() - started
            showing.cancel()
            await group.stop()
        progress.finish()
        waiting: list[int] = []
        if tracker.outstanding:
            # the group gave back what it held: what is still listed was never taken
            for ids in await asyncio.gather(*(still_waiting(name) for name in names)):
                waiting += ids

    return account(
        clusters=options.clusters,
        submitted=tracker.submitted,
        accepted=tracker.accepted,
        elapsed=elapsed,
        submit_errors=tracker.submit_errors,
        waiting=set(waiting),
    )


def add_parser(subparsers: Any) -> None:
    """Register ``demo`` on the ``rainbow-aio`` parser."""
    d = DemoOptions()
    p = subparsers.add_parser(
        "demo",
        help="run an embedded server and push many jobs through many clusters",
        description="🌈️ Start an embedded rainbow server in this process, register many "
        "clusters, submit jobs to them while one poller group accepts them, and show "
        "that every job was accepted exactly once. Exits 1 if any job was lost or "
        "accepted twice.",
    )
    p.add_argument(
        "--clusters",
        type=whole_number(1),
        default=d.clusters,
        help=f"clusters to register (default {d.clusters})",
    )
    p.add_argument(
        "--jobs",
        type=whole_number(1),
        default=d.jobs,
        help=f"jobs to submit in all (default {d.jobs:,})",
    )
    p.add_argument(
        "--concurrency",
        type=whole_number(1),
        default=d.concurrency,
        help=f"submissions, and job handlers, in flight at once (default {d.concurrency})",
    )
    p.add_argument(
        "--max-jobs",
        type=whole_number(1),
        default=d.max_jobs,
        help=f"most jobs one poll of a cluster asks for (default {d.max_jobs})",
    )
    p.add_argument(
        "--timeout",
        type=seconds(),
        default=d.timeout,
        help=f"seconds to wait for the last jobs after submitting ends (default {d.timeout:g})",
    )
    p.add_argument(
        "--batch",
        type=whole_number(1),
        default=None,
        metavar="N",
        help="hand jobs to the handlers in batches of up to N jobs of one cluster, each "
        "accepted with one call (default: one job at a time)",
    )
    p.set_defaults(func=demo)


def demo(args: argparse.Namespace) -> int:
    """Run the demo, print the table, and exit 1 unless every job was accepted once."""
    options = DemoOptions(
        clusters=args.clusters,
        jobs=args.jobs,
        concurrency=args.concurrency,
        max_jobs=args.max_jobs,
        timeout=args.timeout,
        batch=args.batch,
    )
    with _shutdown_logs_hidden() as hide:
        try:
            report = asyncio.run(run_until_interrupted(run_demo(options), on_interrupt=hide))
        except Interrupted:
            return interrupted()
        except ServerStartError as exc:
            return error(f"the embedded server could not start: {exc}")
        except RainbowError as exc:
            return error(explain(exc, host="the embedded server"))
    print(render(report))
    return report.exit_code


@contextmanager
def _shutdown_logs_hidden() -> Iterator[Callable[[], None]]:
    """Show rainbow-aio's warnings on stderr, one line each, until the returned function is
    called (at Ctrl-C); drop them from then on.

    An interrupted demo cancels its pollers in the middle of accepts, and they say so for
    each job; those jobs live on the demo's in-memory server, which is about to go away,
    so the messages would only alarm.
    """
    hidden = False

    def keep(record: logging.LogRecord) -> bool:
        return not hidden

    def hide() -> None:
        nonlocal hidden
        hidden = True

    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.WARNING)
    handler.setFormatter(logging.Formatter("rainbow-aio demo: %(message)s"))
    handler.addFilter(keep)
    logger = logging.getLogger("rainbow_aio")
    logger.addHandler(handler)
    try:
        yield hide
    finally:
        logger.removeHandler(handler)
