"""The agent's loop: poll, keep what fits, journal the intent, accept, run, record.

One :class:`Agent` serves one cluster. Its life:

1. refuse to run as root (unless ``allow_root``), take the journal's lock;
2. reconcile the journal with the server: an intent (``accepting``) whose job is still
   listed was not taken (``not_taken``); one whose job is gone was taken by this agent
   (``accepted``; in the shared accept mode ``uncertain``, never run); ``accepted`` jobs
   are started; ``running`` ones are re-attached through the executor;
3. poll: a job that can never fit is refused (journal, log and stats, once) and kept
   out of the poller's hands; the others wait, held and not accepted, until
   :class:`Capacity` gives them nodes; then, for those, the intent is journaled,
   AcceptJobs is sent, the outcome journaled, and the accepted jobs started;
4. on stop: no more polling or accepting, held jobs are given back untouched, running
   jobs get ``drain_timeout`` seconds to end, and then are left running for the next
   start to re-attach (the default) or cancelled (``cancel_on_stop``); the journal says
   which.

The secret is given to the poller and to the one listing of the reconcile step, and to
nothing else: not the journal, not the logs, not the jobs' environment or folders.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import os
import shlex
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from .._exceptions import InvalidArgumentError, RainbowError
from .._models import Job
from .._stopping import Shutdown
from ..poller import AcceptUncertainError, JobBatch, JobState, PolledJob, PollerOptions
from ._capacity import Capacity, Waiting
from ._executor import Ended, Executor, Launch, LaunchError
from ._journal import JobRecord, JobStateName, Journal, Sync
from ._local import LocalExecutor

if TYPE_CHECKING:
    from .._client import RainbowClient

__all__ = ["Agent", "AgentError", "AgentOptions", "AgentStats"]

log = logging.getLogger("rainbow_aio.agent")

T = TypeVar("T")

FLUSH_DELAY = 0.01
"""Seconds the journal's deferred writes (handles, ends) wait to be committed together."""

S = JobStateName


class AgentError(RainbowError):
    """The agent cannot run (as root without ``allow_root``, a bad option, ...)."""


@dataclass(frozen=True, slots=True)
class AgentOptions:
    """What an :class:`Agent` does (the command line's options, one for one).

    - ``cluster``, ``journal`` (the SQLite file), ``workdir`` (job folders go in
      ``workdir/<job id>``).
    - ``nodes``: the nodes this agent may fill; None asks the executor (Flux: the
      instance's free nodes at start).
    - ``time_limit``: seconds each job may run (None: no limit).
    - ``drain_timeout`` (30 s): how long a stop waits for running jobs to end;
      ``cancel_on_stop``: then cancel those still running instead of leaving them
      running for the next start to re-attach.
    - ``reserve_after`` (30 s): how long the oldest waiting job lets smaller, younger
      ones start before nodes are kept for it (the bound on its wait, plus the runs in
      progress then).
    - ``hold``: how many jobs may wait for nodes, held (not accepted); default
      ``max(64, 2 * nodes)``.
    - ``accept_mode``: ``"batched"`` (this agent is the cluster's only accepter: a job
      gone from the server after a journaled intent is ours) or ``"shared"`` (such a
      job is reported ``uncertain`` and never run).
    - ``allow_root``: run jobs even as root.
    - ``journal_sync``: ``"full"`` (each journal commit survives a power cut) or
      ``"normal"`` (it survives the agent being killed).
    - ``poller``: options for the poller (intervals...); ``max_jobs``, ``queue_size``,
      ``max_hold`` and ``accept_mode`` are set by the agent.
    """

    cluster: str
    journal: Path
    workdir: Path
    nodes: int | None = None
    time_limit: float | None = None
    drain_timeout: float = 30.0
    cancel_on_stop: bool = False
    reserve_after: float = 30.0
    hold: int | None = None
    accept_mode: Literal["batched", "shared"] = "batched"
    allow_root: bool = False
    journal_sync: Sync = "full"
    poller: PollerOptions = field(default_factory=PollerOptions)

    def __post_init__(self) -> None:
        # absolute, so that a job (which runs in its own folder) and a later start from
        # another directory find the same files
        object.__setattr__(self, "journal", Path(self.journal).absolute())
        object.__setattr__(self, "workdir", Path(self.workdir).absolute())
        if self.nodes is not None and (isinstance(self.nodes, bool) or self.nodes < 1):
            raise InvalidArgumentError(f"nodes must be 1 or more, not {self.nodes!r}")
        if self.time_limit is not None and not self.time_limit > 0:
            raise InvalidArgumentError("time_limit must be more than 0 seconds")
        if not self.drain_timeout >= 0 or not self.reserve_after >= 0:
            raise InvalidArgumentError("drain_timeout and reserve_after must be 0 or more")
        if self.hold is not None and self.hold < 1:
            raise InvalidArgumentError("hold must be 1 or more")
        if self.accept_mode not in ("batched", "shared"):
            raise InvalidArgumentError("accept_mode must be 'batched' or 'shared'")
        if self.journal_sync not in ("full", "normal"):
            raise InvalidArgumentError("journal_sync must be 'full' or 'normal'")


@dataclass(frozen=True, slots=True)
class AgentStats:
    """A snapshot of what the agent did since it started (``agent.stats``)."""

    running: int = 0
    nodes_total: int = 0
    nodes_in_use: int = 0
    waiting: int = 0
    """Jobs held, waiting for nodes (not accepted: still on the server)."""
    reserved_for: int | None = None
    """The id of the job that nodes are being kept for (see ``reserve_after``)."""
    accepted: int = 0
    finished: int = 0
    failed: int = 0
    interrupted: int = 0
    refused: int = 0
    not_taken: int = 0
    uncertain: int = 0
    reattached: int = 0
    """Jobs found in the journal as running at start: re-attached, or found ended."""
    left_running: int = 0

    def line(self) -> str:
        """The progress line."""
        text = (
            f"running {self.running} ({self.nodes_in_use}/{self.nodes_total} nodes) · "
            f"finished {self.finished} · failed {self.failed} · "
            f"waiting for nodes {self.waiting}"
        )
        if self.refused:
            text += f" · refused {self.refused}"
        if self.reserved_for is not None:
            text += f" · keeping nodes for job {self.reserved_for}"
        return text


@dataclass(slots=True)
class _Running:
    launch: Launch
    task: asyncio.Task[None] | None = None
    handle: str | None = None
    cancelling: bool = False


class Agent:
    """Runs the jobs of one cluster that this process accepts (see the module's text).

    ::

        async with RainbowClient(host) as client:
            agent = Agent(client, secret, AgentOptions(cluster="c", journal=Path("j.db"),
                                                       workdir=Path("jobs"), nodes=4))
            stop = Shutdown()
            with stop.on_signals():
                await agent.run(stop)

    ``executor``: a :class:`~rainbow_aio.agent.Executor` (default: a
    :class:`LocalExecutor`). ``on_change`` is called (without arguments) whenever the
    stats change, for a progress display.
    """

    def __init__(
        self,
        client: RainbowClient,
        secret: str,
        options: AgentOptions,
        *,
        executor: Executor | None = None,
        on_change: Callable[[], object] | None = None,
    ) -> None:
        self._client = client
        self._secret = secret
        self.options = options
        self.executor: Executor = executor if executor is not None else LocalExecutor()
        self._on_change = on_change
        self._journal: Journal | None = None
        self._capacity: Capacity | None = None
        self._waiting: list[Waiting[PolledJob]] = []
        self._batch_of: dict[int, JobBatch] = {}  # a waiting job's batch, by job id
        self._owned: list[Waiting[JobRecord]] = []  # accepted before a restart, not started
        self._running: dict[int, _Running] = {}
        self._accepting: set[asyncio.Task[None]] = set()
        self._intending = 0  # accepts not answered yet (at most one: see _schedule)
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._counts: dict[str, int] = dict.fromkeys(
            [
                "accepted",
                "finished",
                "failed",
                "interrupted",
                "refused",
                "not_taken",
                "uncertain",
                "reattached",
                "left_running",
            ],
            0,
        )
        self._telemetry = _Telemetry.load(options.cluster, self.executor.name)
        self._flush_handle: asyncio.TimerHandle | None = None
        # commits (and their fsyncs) run on this thread, off the event loop, in order
        self._writer: concurrent.futures.ThreadPoolExecutor | None = None

    # -- public -------------------------------------------------------------------------

    @property
    def stats(self) -> AgentStats:
        """What the agent is doing and has done since it started (a snapshot)."""
        cap = self._capacity
        blocked = cap.blocked(self._waiting) if cap is not None else None
        return AgentStats(
            running=len(self._running),
            nodes_total=cap.total if cap else 0,
            nodes_in_use=cap.used if cap else 0,
            waiting=len(self._waiting) + len(self._owned),
            reserved_for=blocked.item.id if blocked is not None else None,
            **self._counts,
        )

    @property
    def peak_nodes(self) -> int:
        """The most nodes in use at once since the agent started."""
        return self._capacity.peak if self._capacity else 0

    async def run(self, stop: Shutdown | None = None) -> AgentStats:
        """Run until ``stop`` is requested (or the poller fails: wrong secret...).

        Raises :class:`AgentError` (root), :class:`JournalLockedError`,
        :class:`JournalCorruptError`, and the client's errors for a denied listing.
        """
        stop = stop if stop is not None else Shutdown()
        opts = self.options
        if os.geteuid() == 0 and not opts.allow_root:
            raise AgentError(
                "refusing to run jobs as root: they run what anyone with the cluster's "
                "token submitted; run the agent as an unprivileged user, or pass "
                "--allow-root (allow_root=True) if you mean it"
            )
        try:
            opts.workdir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise AgentError(f"cannot create the workdir {opts.workdir}: {exc}") from None
        journal = Journal.open(opts.journal, sync=opts.journal_sync)
        self._journal = journal
        self._writer = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="rainbow-agent-journal"
        )
        try:
            total = opts.nodes
            if total is None:
                total = await self.executor.free_nodes()
                if total is None or total < 1:
                    raise AgentError("say how many nodes this agent may fill (nodes / --nodes)")
            self._capacity = Capacity(total, reserve_after=opts.reserve_after)
            log.info(
                "agent for cluster %r: %d nodes, executor %s, journal %s",
                opts.cluster,
                total,
                self.executor.name,
                opts.journal,
            )
            failed = True
            try:
                await self._reconcile()
                await self._serve(stop)
                failed = False
            finally:
                # on an error (the poller failed: denied...) or a cancellation, running
                # jobs are left running at once, for the next start to re-attach, and the
                # journal says so (``stop`` is the caller's: read, never changed)
                await self._drain(stop, at_once=failed)
        finally:
            with contextlib.suppress(Exception):
                await self.executor.aclose()
            if self._flush_handle is not None:
                self._flush_handle.cancel()
                self._flush_handle = None
            if self._writer is not None:
                await asyncio.to_thread(self._writer.shutdown, wait=True)
                self._writer = None
            journal.close()
            self._journal = None
            self._changed()
        return self.stats

    # -- reconcile ----------------------------------------------------------------------

    async def _reconcile(self) -> None:
        journal = self._jl
        cluster = self.options.cluster
        intents = journal.records([S.ACCEPTING], cluster=cluster)
        if intents:
            listed = {  # max_jobs None: every waiting job
                job.id for job in await self._client.request_jobs(cluster, self._secret, None)
            }
            still = [r.id for r in intents if r.id in listed]
            gone = [r.id for r in intents if r.id not in listed]
            journal.settle(
                cluster, still, S.NOT_TAKEN, "still on the server after a restart: not taken"
            )
            self._counts["not_taken"] += len(still)
            if self.options.accept_mode == "batched":
                journal.accepted(cluster, gone, reason="taken before a restart (reconciled)")
            else:
                journal.settle(
                    cluster,
                    gone,
                    S.UNCERTAIN,
                    "gone from the server after a restart; another accepter may have it: not run",
                )
                self._counts["uncertain"] += len(gone)
            log.info(
                "reconciled %d intents: %d not taken, %d %s",
                len(intents),
                len(still),
                len(gone),
                "taken by this agent" if self.options.accept_mode == "batched" else "uncertain",
            )
        now = time.monotonic()
        for record in journal.records([S.ACCEPTED], cluster=cluster):
            self._owned.append(Waiting(record, max(record.job.nodes, 1), now))
        for record in journal.records([S.RUNNING], cluster=cluster):
            await self._reattach(record)
        self._changed()

    async def _reattach(self, record: JobRecord) -> None:
        launch = self._launch_of(record.job)
        if isinstance(launch, str):
            self._jl.ended(record.cluster, record.id, S.FAILED, None, launch)
            self._counts["failed"] += 1
            return
        found = await self.executor.reattach(launch, record.handle)
        self._cap.take(launch.nodes)
        run = _Running(launch, handle=record.handle)
        self._running[record.id] = run
        self._counts["reattached"] += 1
        if isinstance(found, Ended):
            self._record_end(run, found)
            return
        if found is None:
            log.info("job %d was never started: starting it", record.id)
        else:
            run.handle = found
            if found != record.handle:
                self._jl.running(record.cluster, record.id, self.executor.name, found)
        run.task = asyncio.create_task(self._run_job(run, started=found is not None))

    # -- serving ------------------------------------------------------------------------

    async def _serve(self, stop: Shutdown) -> None:
        opts = self.options
        hold = opts.hold or max(64, 2 * self._cap.total)
        poller_opts = opts.poller.updated(
            accept_mode=opts.accept_mode,
            # the agent holds waiting jobs itself (at most `hold`, given back at stop); a
            # job released after max_hold would lose its place, and its bounded wait
            max_hold=None,
            max_jobs=min(hold, 1000),
            queue_size=max(opts.poller.queue_size, min(hold, 1000)),
        )
        async with self._client.poller(opts.cluster, self._secret, poller_opts) as poller:
            feeder = asyncio.create_task(self._feed(poller.get_batch, hold))
            scheduler = asyncio.create_task(self._schedule())
            stopped = asyncio.create_task(stop.wait())
            try:
                done, _ = await asyncio.wait(
                    {feeder, scheduler, stopped}, return_when=asyncio.FIRST_COMPLETED
                )
                for task in done - {stopped}:
                    task.result()  # a failed poller (denied...) ends the agent with its error
            finally:
                for task in (feeder, scheduler, stopped):
                    task.cancel()
                await asyncio.gather(feeder, scheduler, stopped, return_exceptions=True)
                if self._accepting:  # accepts in flight: let them settle (never cancel one)
                    await asyncio.gather(*self._accepting, return_exceptions=True)
                for entry in self._waiting:
                    entry.item.release()
                self._waiting.clear()
                self._batch_of.clear()
                self._changed()

    async def _feed(self, get_batch: Callable[[int], Awaitable[JobBatch]], hold: int) -> None:
        cap = self._cap
        while True:
            while len(self._waiting) >= hold:
                self._room.clear()
                await self._room.wait()
            batch = await get_batch(hold - len(self._waiting))
            now = time.monotonic()
            for pj in batch:
                why = cap.never_fits(pj.job.nodes)
                if why is not None:
                    self._decline(pj, why)
                    continue
                self._batch_of[pj.id] = batch  # accepted together with its batch-mates
                self._waiting.append(Waiting(pj, pj.job.nodes, now))
            self._wake.set()

    def _decline(self, pj: PolledJob, reason: str) -> None:
        """A job that can never run here: left on the server, reported once (journal,
        log, stats), and declined, so this poller never hands it out again."""
        pj.decline()
        if self._jl.refuse(pj.job, self.options.cluster, reason):
            log.warning("job %d %s: not accepting it (it stays on the server)", pj.id, reason)
        self._counts["refused"] += 1
        self._changed()

    async def _schedule(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            self._start_owned()
            # a job the poller took back (held too long, or its poller stopping) is not ours
            # to accept any more
            if any(e.item.state is not JobState.HELD for e in self._waiting):
                kept = []
                for entry in self._waiting:
                    if entry.item.state is JobState.HELD:
                        kept.append(entry)
                    else:
                        self._batch_of.pop(entry.item.id, None)
                self._waiting = kept
            if self._intending:
                # one intent and AcceptJobs at a time: the nodes that free up meanwhile go
                # into the next batch, which the answer wakes us for (one intent commit
                # and one AcceptJobs per batch, not per job ended: one per job made the
                # writer thread a queue of fsyncs, each job waiting for all before it)
                self._changed()
                continue
            free = await self.executor.free_nodes()
            plan = self._cap.plan(self._waiting, free)
            if plan:
                chosen = {id(entry) for entry in plan}
                self._waiting = [e for e in self._waiting if id(e) not in chosen]
                self._room.set()
                for entry in plan:
                    self._cap.take(entry.nodes)
                task = asyncio.create_task(self._accept([entry.item for entry in plan]))
                self._accepting.add(task)
                self._intending += 1
                task.add_done_callback(self._accepting.discard)
            elif self._waiting and self._cap.blocked(self._waiting) is not None:
                # nodes are kept for a job that waited too long; a finish wakes us
                pass
            if self._waiting and not plan and self._cap.free > 0:
                # a backfill may become possible only by the clock (reserve_after)
                self._wake_later(0.5)
            self._changed()

    def _wake_later(self, delay: float) -> None:
        asyncio.get_running_loop().call_later(delay, self._wake.set)

    def _start_owned(self) -> None:
        """Start the jobs accepted before a restart, as nodes allow (oldest first)."""
        while self._owned and (
            self._owned[0].nodes <= self._cap.free or not self._running  # bigger than now
        ):
            record = self._owned.pop(0).item
            launch = self._launch_of(record.job)
            if isinstance(launch, str):
                self._jl.ended(record.cluster, record.id, S.FAILED, None, launch)
                self._counts["failed"] += 1
                continue
            self._cap.take(launch.nodes)
            _set_aside_old_folders([launch])
            self._jl.running(record.cluster, record.id, self.executor.name, None)
            run = _Running(launch)
            self._running[record.id] = run
            run.task = asyncio.create_task(self._run_job(run, started=False))

    async def _accept(self, jobs: list[PolledJob]) -> None:
        journal = self._jl
        cluster = self.options.cluster
        try:
            await self._write(journal.intend, [pj.job for pj in jobs], cluster)
            outcomes = await self._accept_together(jobs)
        finally:
            # the next batch may go now, while this one is launched
            self._intending -= 1
            self._wake.set()
        ours: list[PolledJob] = []
        lost: list[int] = []
        unsure: list[int] = []
        retry: list[PolledJob] = []
        for pj, outcome in zip(jobs, outcomes, strict=True):
            if outcome is True:
                ours.append(pj)
            elif outcome is False:
                lost.append(pj.id)
            elif isinstance(outcome, AcceptUncertainError):
                unsure.append(pj.id)
            elif isinstance(outcome, BaseException):
                log.warning("accepting job %d failed, it stays on the server: %s", pj.id, outcome)
                retry.append(pj)
            if outcome is not True:
                self._cap.give(pj.job.nodes)

        def settle() -> None:
            journal.settle(cluster, lost, S.NOT_TAKEN, "taken by another accepter")
            journal.settle(
                cluster, unsure, S.UNCERTAIN, "the accept may have taken it or not: not run"
            )
            journal.settle(
                cluster, [pj.id for pj in retry], S.NOT_TAKEN, "the accept failed; still listed"
            )

        if lost or unsure or retry:
            await self._write(settle)
        for pj in retry:
            pj.release(failed=True)
        self._counts["not_taken"] += len(lost) + len(retry)
        self._counts["uncertain"] += len(unsure)
        if unsure:
            log.error("jobs %s: accept outcome unknown; not run (see the journal)", unsure)
        launches: list[tuple[PolledJob, Launch | str]] = []
        for pj in ours:
            launch = self._launch_of(pj.job)
            launches.append((pj, launch))
        ready = [launch for _, launch in launches if not isinstance(launch, str)]
        # folders of older jobs of the same ids out of the way, before the journal says
        # these are being launched (then the folders, made by the executor after, are
        # theirs); one trip to the writer thread for both, in this order
        await self._in_writer(_launching, journal, cluster, [pj.id for pj in ours], ready)
        self._counts["accepted"] += len(ours)
        for pj, launch in launches:
            if isinstance(launch, str):
                journal.ended(cluster, pj.id, S.FAILED, None, launch, defer=True)
                self._flush_soon()
                self._counts["failed"] += 1
                self._cap.give(pj.job.nodes)
                log.warning("job %d failed: %s", pj.id, launch)
                continue
            run = _Running(launch)
            self._running[pj.id] = run
            run.task = asyncio.create_task(self._run_job(run, started=False))
        self._wake.set()
        self._changed()

    async def _accept_together(self, jobs: list[PolledJob]) -> list[object]:
        """Accept ``jobs`` with one AcceptJobs per batch they came in; per job: True
        (ours), False (taken by another), or the error (uncertain, or not sent)."""
        groups: dict[int, tuple[JobBatch, list[PolledJob]]] = {}
        for pj in jobs:
            batch = self._batch_of.pop(pj.id)
            groups.setdefault(id(batch), (batch, []))[1].append(pj)

        async def one(batch: JobBatch, mine: list[PolledJob]) -> BaseException | None:
            try:
                await batch.subset(mine).accept()
            except Exception as exc:
                return exc
            return None

        errors = await asyncio.gather(*(one(b, mine) for b, mine in groups.values()))
        failed = {
            pj.id: error
            for (_, mine), error in zip(groups.values(), errors, strict=True)
            if error is not None
            for pj in mine
        }
        outcomes: list[object] = []
        for pj in jobs:
            state = pj.state
            if state is JobState.ACCEPTED:
                outcomes.append(True)
            elif state is JobState.LOST:
                outcomes.append(False)
            elif state is JobState.UNCERTAIN:
                try:  # not a new call: the job's own accept() raises the reason at once
                    outcomes.append(await pj.accept())
                except Exception as exc:
                    outcomes.append(exc)
            else:  # still held: its call certainly did not act
                outcomes.append(failed.get(pj.id) or RainbowError("the accept did not act"))
        return outcomes

    # -- running one job ----------------------------------------------------------------

    def _launch_of(self, job: Job) -> Launch | str:
        """The job's launch, or why it cannot be launched."""
        try:
            argv = tuple(shlex.split(job.command))
        except ValueError as exc:
            return f"cannot parse the command: {exc}"
        if not argv or not argv[0]:
            return "empty command"
        return Launch(
            job_id=job.id,
            cluster=self.options.cluster,
            command=job.command,
            argv=argv,
            nodes=max(job.nodes, 1),
            tasks=job.tasks,
            folder=self.options.workdir / str(job.id),
            time_limit=self.options.time_limit,
        )

    async def _run_job(self, run: _Running, *, started: bool) -> None:
        """Start (unless ``started``), wait, record."""
        launch = run.launch
        journal = self._jl
        span = self._telemetry.start(launch) if self._telemetry else None
        try:
            if not started:
                run.handle = await self.executor.start(launch)
                journal.running(
                    launch.cluster, launch.job_id, self.executor.name, run.handle, defer=True
                )
                self._flush_soon()
                self._changed()
            assert run.handle is not None
            ended = await self.executor.wait(launch, run.handle)
        except LaunchError as exc:
            ended = Ended(None, exc.reason)
        except asyncio.CancelledError:
            if span is not None:
                span.end_left()
            raise
        self._record_end(run, ended)
        if span is not None:
            span.end(ended)

    def _record_end(self, run: _Running, ended: Ended) -> None:
        launch = run.launch
        if run.cancelling and ended.exit_code != 0:
            state = S.INTERRUPTED
        else:
            state = S.FINISHED if ended.ok else S.FAILED
        self._jl.ended(
            launch.cluster, launch.job_id, state, ended.exit_code, ended.reason, defer=True
        )
        self._flush_soon()
        self._counts[state.value] += 1
        if state is S.FAILED:
            log.warning("job %d failed: %s", launch.job_id, ended.reason)
        self._running.pop(launch.job_id, None)
        self._cap.give(launch.nodes)
        self._wake.set()
        self._changed()

    # -- stopping -----------------------------------------------------------------------

    async def _drain(self, stop: Shutdown, *, at_once: bool = False) -> None:
        tasks = [r.task for r in self._running.values() if r.task is not None]
        if tasks and not stop.forced and not at_once:
            log.info(
                "stopping: waiting up to %g s for %d running jobs",
                self.options.drain_timeout,
                len(tasks),
            )
            all_done = asyncio.create_task(asyncio.wait(tasks))
            forced = asyncio.create_task(stop.wait_forced())
            try:
                await asyncio.wait(
                    {all_done, forced},
                    timeout=self.options.drain_timeout,
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                all_done.cancel()
                forced.cancel()
                await asyncio.gather(all_done, forced, return_exceptions=True)
        left = [r for r in self._running.values() if r.task is not None and not r.task.done()]
        if not left:
            return
        cancel = self.options.cancel_on_stop and not at_once
        if cancel:
            for run in left:
                run.cancelling = True
            await asyncio.gather(
                *(
                    self.executor.cancel(run.launch, run.handle)
                    for run in left
                    if run.handle is not None
                ),
                return_exceptions=True,
            )
            await asyncio.wait([r.task for r in left if r.task is not None], timeout=30)
        still = [r for r in left if r.task is not None and not r.task.done()]
        for run in still:
            assert run.task is not None
            run.task.cancel()  # stop watching; the job itself keeps running
        # (a cancellation of the agent itself still propagates from here)
        await asyncio.gather(*(r.task for r in still if r.task), return_exceptions=True)
        for run in still:
            self._jl.note(
                run.launch.cluster,
                run.launch.job_id,
                "left running when the agent stopped; the next start re-attaches to it",
            )
            self._counts["left_running"] += 1
        log.info(
            "stopped: %d jobs cancelled, %d left running for the next start",
            len(left) - len(still),
            len(still),
        )

    # -- helpers ------------------------------------------------------------------------

    @property
    def _jl(self) -> Journal:
        assert self._journal is not None
        return self._journal

    @property
    def _cap(self) -> Capacity:
        assert self._capacity is not None
        return self._capacity

    def _flush_soon(self) -> None:
        """Commit the deferred journal writes (handles, ends) a few ms from now, together.

        Deferring them is safe: a restart learns both again from the executor (the
        folder's claim and exit files), and every write that must come first (the
        intent before AcceptJobs, the launch before the spawn) is written at once."""
        if self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_later(FLUSH_DELAY, self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        if self._journal is not None and self._writer is not None:
            future = self._writer.submit(self._journal.flush)
            future.add_done_callback(_log_failure)

    async def _write(self, fn: Callable[..., object], *args: Any, **kwargs: Any) -> None:
        """Run one journal write on the writer thread and wait until it is committed."""
        await self._in_writer(fn, *args, **kwargs)

    async def _in_writer(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn`` on the writer thread, in order with the journal's writes."""
        assert self._writer is not None
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._writer, functools.partial(fn, *args, **kwargs))

    def _changed(self) -> None:
        if self._on_change is not None:
            with contextlib.suppress(Exception):
                self._on_change()


def _launching(journal: Journal, cluster: str, ids: list[int], launches: list[Launch]) -> None:
    """Older folders of these ids aside, then the journal says the jobs are being
    launched (committed)."""
    _set_aside_old_folders(launches)
    journal.accepted(cluster, ids, launching=True)


def _set_aside_old_folders(launches: list[Launch]) -> None:
    """Move folders left by older jobs of the same ids (another server, a reused
    workdir) aside, before the journal says these jobs are being launched: the folder
    the executor makes then is the job's own, and a restart that finds it knows the job
    was started."""
    for launch in launches:
        folder = launch.folder
        if folder.exists():
            n = 1
            while (aside := folder.with_name(f"{folder.name}.old-{n}")).exists():
                n += 1
            with contextlib.suppress(OSError):
                folder.rename(aside)


def _log_failure(future: concurrent.futures.Future[None]) -> None:
    exc = future.exception()
    if exc is not None:
        log.error("journal write failed: %s", exc)


class _Telemetry:
    """Spans and metrics of job runs, when opentelemetry-api is installed (the ``otel``
    extra), with the client's conventions: scope ``rainbow_aio``, ``rainbow.*``
    attributes, no command text and no credential on either."""

    def __init__(self, cluster: str, executor: str, trace_api: Any, metrics_api: Any) -> None:
        from .._version import __version__

        self._attrs = {"rainbow.cluster": cluster, "rainbow.agent.executor": executor}
        self._tracer = trace_api.get_tracer("rainbow_aio", __version__)
        meter = metrics_api.get_meter("rainbow_aio", __version__)
        self._jobs = meter.create_counter(
            "rainbow.agent.jobs", unit="{job}", description="Jobs the agent ran, by end state"
        )
        self._duration = meter.create_histogram(
            "rainbow.agent.job.duration", unit="s", description="How long each job ran"
        )
        self._nodes = meter.create_up_down_counter(
            "rainbow.agent.nodes.in_use", unit="{node}", description="Nodes taken by running jobs"
        )

    @classmethod
    def load(cls, cluster: str, executor: str) -> _Telemetry | None:
        try:
            from opentelemetry import metrics, trace
        except ImportError:
            return None
        return cls(cluster, executor, trace, metrics)

    def start(self, launch: Launch) -> _JobSpan:
        span = self._tracer.start_span(
            "rainbow.agent/run",
            attributes={
                **self._attrs,
                "rainbow.job.id": launch.job_id,
                "rainbow.job.nodes": launch.nodes,
                "rainbow.job.tasks": launch.tasks,
            },
        )
        self._nodes.add(launch.nodes, self._attrs)
        return _JobSpan(self, span, launch.nodes, time.monotonic())


@dataclass(slots=True)
class _JobSpan:
    owner: _Telemetry
    span: Any
    nodes: int
    began: float

    def end(self, ended: Ended) -> None:
        state = "finished" if ended.ok else "failed"
        self.span.set_attribute("rainbow.job.state", state)
        if ended.exit_code is not None:
            self.span.set_attribute("rainbow.job.exit_code", ended.exit_code)
        if not ended.ok:
            from opentelemetry.trace import Status, StatusCode

            # not ended.reason: it can quote the command (a program not found)
            code = ended.exit_code
            self.span.set_status(
                Status(StatusCode.ERROR, f"exit {code}" if code is not None else "failed")
            )
        self.span.end()
        attrs = {**self.owner._attrs, "rainbow.job.state": state}
        self.owner._jobs.add(1, attrs)
        self.owner._duration.record(time.monotonic() - self.began, self.owner._attrs)
        self.owner._nodes.add(-self.nodes, self.owner._attrs)

    def end_left(self) -> None:
        self.span.set_attribute("rainbow.job.state", "left_running")
        self.span.end()
        self.owner._nodes.add(-self.nodes, self.owner._attrs)
