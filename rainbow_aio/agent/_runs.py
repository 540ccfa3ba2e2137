"""The jobs an agent has started: a task each, watching its job through the executor.

:class:`Runs` is the one place that knows which jobs run: it starts them (or re-attaches
to those a previous start left running), records in the journal that each runs and how
it ended, and at a stop either lets them end, cancels them, or leaves them running for
the next start. What an end means for the rest of the agent (nodes given back, counters,
a wake-up of the scheduler) is the agent's: it is told through ``on_end``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .._stopping import Shutdown
from ._executor import Ended, Executor, Launch, LaunchError
from ._journal import JobStateName
from ._writer import JournalWriter

__all__ = ["Runs"]

log = logging.getLogger("rainbow_aio.agent")

S = JobStateName


@dataclass(slots=True)
class _Running:
    launch: Launch
    task: asyncio.Task[None] | None = None
    handle: str | None = None
    cancelling: bool = False


class Runs:
    """The running jobs of one agent (see the module's text).

    ``on_end(launch, state)`` is called once for each job that ended (FINISHED, FAILED
    or INTERRUPTED), after the journal has it (deferred) and it left the running set;
    ``on_start()`` once a job has been started."""

    def __init__(
        self,
        executor: Executor,
        writer: JournalWriter,
        cluster: str,
        on_end: Callable[[Launch, JobStateName], None],
        on_start: Callable[[], None],
    ) -> None:
        self._executor = executor
        self._writer = writer
        self._on_end = on_end
        self._on_start = on_start
        self._running: dict[int, _Running] = {}
        self._telemetry = _Telemetry.load(cluster, executor.name)

    def __len__(self) -> int:
        return len(self._running)

    def start(self, launch: Launch) -> None:
        """Start ``launch`` (its nodes are taken already, its launch journaled)."""
        run = _Running(launch)
        self._running[launch.job_id] = run
        run.task = asyncio.create_task(self._run_job(run, started=False))

    async def reattach(self, launch: Launch, handle: str | None) -> None:
        """Take back a job the journal says runs (``handle``: the executor's, if it was
        recorded): watch it if it still runs, record its end if it ended, start it if it
        never started."""
        found = await self._executor.reattach(launch, handle)
        run = _Running(launch, handle=handle)
        self._running[launch.job_id] = run
        if isinstance(found, Ended):
            self._record_end(run, found)
            return
        if found is None:
            log.info("job %d was never started: starting it", launch.job_id)
        else:
            run.handle = found
            if found != handle:
                self._writer.journal.running(
                    launch.cluster, launch.job_id, self._executor.name, found
                )
        run.task = asyncio.create_task(self._run_job(run, started=found is not None))

    async def _run_job(self, run: _Running, *, started: bool) -> None:
        """Start (unless ``started``), wait, record."""
        launch = run.launch
        span = self._telemetry.start(launch) if self._telemetry else None
        try:
            if not started:
                run.handle = await self._executor.start(launch)
                self._writer.journal.running(
                    launch.cluster, launch.job_id, self._executor.name, run.handle, defer=True
                )
                self._writer.flush_soon()
                self._on_start()
            assert run.handle is not None
            ended = await self._executor.wait(launch, run.handle)
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
        self._writer.journal.ended(
            launch.cluster, launch.job_id, state, ended.exit_code, ended.reason, defer=True
        )
        self._writer.flush_soon()
        if state is S.FAILED:
            log.warning("job %d failed: %s", launch.job_id, ended.reason)
        self._running.pop(launch.job_id, None)
        self._on_end(launch, state)

    async def stop(self, stop: Shutdown, *, grace: float, cancel: bool, at_once: bool) -> int:
        """Let the running jobs end within ``grace`` seconds (not at all if ``at_once``
        or the stop is forced); then cancel those still running if ``cancel`` (and not
        ``at_once``), and stop watching the others, which go on running for the next
        start to re-attach (the journal says so). Returns how many were left running."""
        tasks = [r.task for r in self._running.values() if r.task is not None]
        if tasks and not stop.forced and not at_once:
            log.info("stopping: waiting up to %g s for %d running jobs", grace, len(tasks))
            all_done = asyncio.create_task(asyncio.wait(tasks))
            forced = asyncio.create_task(stop.wait_forced())
            try:
                await asyncio.wait(
                    {all_done, forced}, timeout=grace, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                all_done.cancel()
                forced.cancel()
                await asyncio.gather(all_done, forced, return_exceptions=True)
        left = [r for r in self._running.values() if r.task is not None and not r.task.done()]
        if not left:
            return 0
        if cancel and not at_once:
            for run in left:
                run.cancelling = True
            await asyncio.gather(
                *(
                    self._executor.cancel(run.launch, run.handle)
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
            self._writer.journal.note(
                run.launch.cluster,
                run.launch.job_id,
                "left running when the agent stopped; the next start re-attaches to it",
            )
        log.info(
            "stopped: %d jobs cancelled, %d left running for the next start",
            len(left) - len(still),
            len(still),
        )
        return len(still)


class _Telemetry:
    """Spans and metrics of job runs, when opentelemetry-api is installed (the ``otel``
    extra), with the client's conventions: scope ``rainbow_aio``, ``rainbow.*``
    attributes, no command text and no credential on either."""

    def __init__(self, cluster: str, executor: str, trace_api: Any, metrics_api: Any) -> None:
        from .._version import __version__

        self.attrs = {"rainbow.cluster": cluster, "rainbow.agent.executor": executor}
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
                **self.attrs,
                "rainbow.job.id": launch.job_id,
                "rainbow.job.nodes": launch.nodes,
                "rainbow.job.tasks": launch.tasks,
            },
        )
        self.nodes_taken(launch.nodes)
        return _JobSpan(self, span, launch.nodes, time.monotonic())

    def nodes_taken(self, nodes: int) -> None:
        self._nodes.add(nodes, self.attrs)

    def job_ended(self, state: str, seconds: float) -> None:
        self._jobs.add(1, {**self.attrs, "rainbow.job.state": state})
        self._duration.record(seconds, self.attrs)


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
        self.owner.job_ended(state, time.monotonic() - self.began)
        self.owner.nodes_taken(-self.nodes)

    def end_left(self) -> None:
        self.span.set_attribute("rainbow.job.state", "left_running")
        self.span.end()
        self.owner.nodes_taken(-self.nodes)
