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

The jobs started are watched and stopped by ``Runs`` (``_runs.py``), and the journal's
commits go through a ``JournalWriter`` (``_writer.py``); this module holds the steps
above, the counters and the nodes (:class:`Capacity`).

The secret is given to the poller and to the one listing of the reconcile step, and to
nothing else: not the journal, not the logs, not the jobs' environment or folders.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from .._exceptions import InvalidArgumentError, RainbowError
from .._models import Job
from .._stopping import Shutdown
from ..poller import AcceptUncertainError, JobBatch, JobState, PolledJob, PollerOptions
from ._capacity import Capacity, Waiting
from ._executor import Executor, Launch
from ._journal import JobRecord, JobStateName, Journal, Sync
from ._local import LocalExecutor
from ._runs import Runs
from ._writer import JournalWriter

if TYPE_CHECKING:
    from .._client import RainbowClient

__all__ = ["Agent", "AgentError", "AgentOptions", "AgentStats"]

log = logging.getLogger("rainbow_aio.agent")

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
        self._writer: JournalWriter | None = None  # and through it, the journal
        self._runs: Runs | None = None
        self._capacity: Capacity | None = None
        self._waiting: list[Waiting[PolledJob]] = []
        self._batch_of: dict[int, JobBatch] = {}  # a waiting job's batch, by job id
        self._owned: list[Waiting[JobRecord]] = []  # accepted before a restart, not started
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

    # -- public -------------------------------------------------------------------------

    @property
    def stats(self) -> AgentStats:
        """What the agent is doing and has done since it started (a snapshot)."""
        cap = self._capacity
        blocked = cap.blocked(self._waiting) if cap is not None else None
        return AgentStats(
            running=len(self._runs) if self._runs is not None else 0,
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
        writer = self._writer = JournalWriter(journal)
        self._runs = Runs(self.executor, writer, opts.cluster, self._ended, self._changed)
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
            await writer.aclose()
            journal.close()
            self._writer = None
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
        self._cap.take(launch.nodes)  # (given back by _ended, if it ended already)
        try:
            await self._rs.reattach(launch, record.handle)
        except BaseException:
            self._cap.give(launch.nodes)
            raise
        self._counts["reattached"] += 1

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
            self._owned[0].nodes <= self._cap.free or not self._rs  # bigger than now
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
            self._rs.start(launch)

    async def _accept(self, jobs: list[PolledJob]) -> None:
        journal = self._jl
        cluster = self.options.cluster
        try:
            await self._jw.call(journal.intend, [pj.job for pj in jobs], cluster)
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
            await self._jw.call(settle)
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
        await self._jw.call(_launching, journal, cluster, [pj.id for pj in ours], ready)
        self._counts["accepted"] += len(ours)
        for pj, launch in launches:
            if isinstance(launch, str):
                journal.ended(cluster, pj.id, S.FAILED, None, launch, defer=True)
                self._jw.flush_soon()
                self._counts["failed"] += 1
                self._cap.give(pj.job.nodes)
                log.warning("job %d failed: %s", pj.id, launch)
                continue
            self._rs.start(launch)
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

    def _ended(self, launch: Launch, state: JobStateName) -> None:
        """A job this agent started has ended (the journal has it): its nodes are free."""
        self._counts[state.value] += 1
        self._cap.give(launch.nodes)
        self._wake.set()
        self._changed()

    # -- stopping -----------------------------------------------------------------------

    async def _drain(self, stop: Shutdown, *, at_once: bool = False) -> None:
        opts = self.options
        left = await self._rs.stop(
            stop, grace=opts.drain_timeout, cancel=opts.cancel_on_stop, at_once=at_once
        )
        self._counts["left_running"] += left

    # -- helpers ------------------------------------------------------------------------

    @property
    def _jl(self) -> Journal:
        return self._jw.journal

    @property
    def _jw(self) -> JournalWriter:
        assert self._writer is not None
        return self._writer

    @property
    def _rs(self) -> Runs:
        assert self._runs is not None
        return self._runs

    @property
    def _cap(self) -> Capacity:
        assert self._capacity is not None
        return self._capacity

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
