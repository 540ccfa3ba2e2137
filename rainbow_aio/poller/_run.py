"""The consumer side shared by :class:`Poller` and :class:`PollerGroup`: iteration, batches
and the handler style (``run(handler)``), written against their queue of entries.

``run()`` owns its worker tasks itself (not a task group that a cancellation would
tear down at once), so that stopping it, by a :class:`~rainbow_aio.Shutdown`, a signal or
a cancellation, is one path: no new work, handlers of jobs already accepted finish within
``shutdown_timeout``, and whatever is cut short is handed to the application.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Final, Literal, TypeVar, overload

import anyio

# anyio loads its asyncio backend (two dozen modules, about 13 ms on a 2-core machine)
# the first time a task group is made in a running loop: inside the first poller or group
# entered, on the event loop, before its first poll. Loading it with this package moves
# that one-time cost to the import, where the rest of the library's (grpc's, protobuf's)
# already is. The module path is anyio's own: where it moves, it loads lazily as before.
with contextlib.suppress(ImportError):
    importlib.import_module("anyio._backends._asyncio")

from .._exceptions import InvalidArgumentError, RainbowError
from .._models import Job
from .._stopping import Shutdown
from ._errors import AcceptUncertainError, PollerStoppedError, UnhandledJobsError
from ._job import ACCEPTING, HELD, LOST, JobBatch, PolledJob
from ._ledger import Entry
from ._options import PollerOptions
from ._queue import JobQueue

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "AcceptWhen",
    "BatchHandler",
    "Handler",
    "JobSource",
    "RunReport",
    "check_batch_size",
]

log = logging.getLogger("rainbow_aio.poller")

Handler = Callable[[PolledJob], Awaitable[object]]
"""``async def handler(job)`` for ``run()``."""
BatchHandler = Callable[[JobBatch], Awaitable[object]]
"""``async def handler(batch)`` for ``run(..., batch_size=N)``."""
AcceptWhen = Literal["before", "after", "manual"]
"""When ``run()`` accepts a job: before the handler runs, after it returned, or never
(the handler accepts or releases it itself)."""

DEFAULT_BATCH_SIZE: Final = 100

_T = TypeVar("_T", PolledJob, JobBatch)


def check_batch_size(max_size: object) -> int:
    if isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 1:
        raise InvalidArgumentError(f"max_size must be a positive int, not {max_size!r}")
    return max_size


def _positive(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidArgumentError(f"{name} must be a positive int, not {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class RunReport:
    """How ``run()`` ended, when it returns (rather than raises).

    - ``stopped_by``: why it stopped taking jobs: the :class:`~rainbow_aio.Shutdown`'s
      reason (a signal's name, such as ``"SIGINT"``), or None when the poller or group
      was stopped (``stop()``) and ``run()`` ran out of jobs.
    - ``handled``: handler calls that returned normally; ``failed``: those that raised.
    """

    stopped_by: str | None
    handled: int = 0
    failed: int = 0


@dataclass(slots=True)
class _Tally:
    handled: int = 0
    failed: int = 0
    cut_short: list[Job] = field(default_factory=list)


class JobSource:
    """What a :class:`Poller` and a :class:`PollerGroup` share as sources of jobs: async
    iteration, batches and the handler style (``run``), on top of their queue (asked
    for with ``_consumer_queue()``, which raises until the source is entered)."""

    __slots__ = ()

    def _consumer_queue(self) -> JobQueue[Entry]:
        raise NotImplementedError

    @property
    def options(self) -> PollerOptions:
        raise NotImplementedError

    def halt(self) -> None:
        """Stop polling and handing out new jobs now, without waiting (``stop()`` then
        waits for the accepts already requested): queued jobs are given back, accepted
        jobs still queued are handed out, then ``get()`` raises
        :class:`PollerStoppedError`."""
        raise NotImplementedError

    async def get(self) -> PolledJob:
        """The next job, waiting for one if needed. Raises :class:`PollerStoppedError`
        once stopped and empty, and the error that stopped polling if one did."""
        (entry,) = await self._consumer_queue().get()
        return entry.hand_out()

    async def get_batch(self, max_size: int = DEFAULT_BATCH_SIZE) -> JobBatch:
        """Up to ``max_size`` jobs of one cluster, as soon as one is ready (see
        :meth:`batches`). Raises like :meth:`get`."""
        size = check_batch_size(max_size)
        first, *others = await self._consumer_queue().get(size)
        return first.hand_out_with(others)

    def __aiter__(self) -> JobSource:
        return self

    async def __anext__(self) -> PolledJob:
        try:
            return await self.get()
        except PollerStoppedError:
            raise StopAsyncIteration from None

    def batches(self, max_size: int = DEFAULT_BATCH_SIZE) -> AsyncIterator[JobBatch]:
        """Batches of up to ``max_size`` jobs of one cluster, each yielded as soon as one
        job is ready (a batch never waits to fill up). Ends when the source is stopped::

            async for batch in poller.batches(max_size=100):
                for job in await batch.accept():    # one AcceptJobs for the batch
                    ...                             # this process owns job
        """
        check_batch_size(max_size)
        return _Batches(self, max_size)

    @overload
    async def run(
        self,
        handler: Handler,
        *,
        concurrency: int = ...,
        per_cluster: int | None = ...,
        accept: AcceptWhen = ...,
        batch_size: None = ...,
        stop: Shutdown | None = ...,
        stop_on_signals: bool = ...,
    ) -> RunReport: ...

    @overload
    async def run(
        self,
        handler: BatchHandler,
        *,
        concurrency: int = ...,
        per_cluster: int | None = ...,
        accept: AcceptWhen = ...,
        batch_size: int,
        stop: Shutdown | None = ...,
        stop_on_signals: bool = ...,
    ) -> RunReport: ...

    async def run(
        self,
        handler: Handler | BatchHandler,
        *,
        concurrency: int = 1,
        per_cluster: int | None = None,
        accept: AcceptWhen = "before",
        batch_size: int | None = None,
        stop: Shutdown | None = None,
        stop_on_signals: bool = False,
    ) -> RunReport:
        """Run ``await handler(job)`` for each job, at most ``concurrency`` at a time and at
        most ``per_cluster`` at a time for any one cluster; with ``batch_size=N``,
        ``await handler(batch)`` for batches of up to N jobs of one cluster (a
        :class:`JobBatch`; ``per_cluster`` then counts batches).

        ``accept`` (docs/delivery.md has the whole table):

        - ``"before"`` (default): accept first; run the handler only for what this
          process now owns (jobs lost to others, or with an uncertain accept, are skipped
          and logged; a batch handler gets the batch of the jobs owned). A handler that
          raises gets the job again after ``redelivery_delay`` (doubling), in this
          process: the server no longer has it. After ``max_deliveries`` failures it is
          given up: logged, counted in ``stats.given_up`` and passed to ``on_give_up``.
        - ``"after"``: run the handler, then accept what it left held if it returned
          normally; if it raised, those jobs are released as failed
          (``release(failed=True)``): they stay on the server and are handed out again
          after a growing delay, and no more by this process after ``max_deliveries``.
        - ``"manual"``: the handler accepts or releases itself; what it left held is
          released (as failed if it raised).

        A handler's exception is logged and does not stop the loop. New work is taken
        only when a handler slot is free: ``run()`` keeps ``concurrency`` worker tasks,
        each running its handlers one after another (a context variable a handler sets
        and does not reset is seen by the next handler of that worker).

        Stopping, one path for every cause: ``stop`` requested (a
        :class:`~rainbow_aio.Shutdown`), a signal with ``stop_on_signals=True`` (SIGINT or
        SIGTERM; a second one forces the stop), or cancellation of the task running
        ``run()``. No new job is taken (queued ones go back to the server); accepted
        jobs already queued are still handed to handlers; running handlers may finish
        within ``shutdown_timeout``. Handlers still running then, or when the stop is
        forced (a second signal, ``stop.force()``, a second cancellation), are cancelled,
        and the accepted jobs they held are passed to ``on_unhandled``, counted in
        ``stats.unhandled`` and raised in an :class:`UnhandledJobsError`; under
        cancellation ``run()`` re-raises the ``CancelledError`` instead, after the same
        steps. ``stop()`` on the poller or group (from a handler, say) ends the intake
        the same way but waits for running handlers without a bound.

        Returns a :class:`RunReport`; raises what ``get()`` raises when the source failed
        (a poller's error; for a group, the ``ExceptionGroup`` once every cluster failed),
        after the running handlers finished.
        """
        _positive("concurrency", concurrency)
        if per_cluster is not None:
            _positive("per_cluster", per_cluster)
        if accept not in ("before", "after", "manual"):
            raise InvalidArgumentError(
                f"accept must be 'before', 'after' or 'manual', not {accept!r}"
            )
        if stop is not None and not isinstance(stop, Shutdown):
            raise InvalidArgumentError("stop must be a rainbow_aio.Shutdown or None")
        size = None if batch_size is None else check_batch_size(batch_size)
        queue = self._consumer_queue()
        shutdown = stop if stop is not None else Shutdown()
        tally = _Tally()
        if size is None:
            one: Handler = handler  # type: ignore[assignment]

            def handle(work: PolledJob | JobBatch) -> Coroutine[object, object, None]:
                assert isinstance(work, PolledJob)
                return _handle_one(work, one, accept, tally)

        else:
            many: BatchHandler = handler  # type: ignore[assignment]

            def handle(work: PolledJob | JobBatch) -> Coroutine[object, object, None]:
                assert isinstance(work, JobBatch)
                return _handle_batch(work, many, accept, tally)

        driver = _Driver(self, queue, handle, concurrency, per_cluster, size, shutdown)
        if stop_on_signals:
            with shutdown.on_signals():
                await driver.drive()
        else:
            await driver.drive()
        if tally.cut_short:
            jobs = tally.cut_short
            raise UnhandledJobsError(
                f"{len(jobs)} accepted job(s) were cut short at shutdown and not finished: "
                f"ids {sorted(job.id for job in jobs)}; they are no longer on the server",
                jobs=jobs,
            )
        return RunReport(shutdown.reason, tally.handled, tally.failed)


class _Batches:
    __slots__ = ("max_size", "source")

    def __init__(self, source: JobSource, max_size: int) -> None:
        self.source = source
        self.max_size = max_size

    def __aiter__(self) -> _Batches:
        return self

    async def __anext__(self) -> JobBatch:
        try:
            return await self.source.get_batch(self.max_size)
        except PollerStoppedError:
            raise StopAsyncIteration from None


class _Driver:
    """One ``run()``: ``concurrency`` workers, each taking work while the intake is open
    (and its cluster is under ``per_cluster``) and running the handler itself, and one
    path to stop, described in :meth:`JobSource.run`.

    A worker runs its handlers in its own task, one after another: no task per job or
    batch (a task per handler cost about a fifth of the client's CPU with a hundred
    clusters and small batches). The workers waiting for work are the only ones cut off
    when the intake ends: waiting in the queue is safe to cancel, a handler is not. A
    worker that dies of what run() does not catch (a ``BaseException`` from a handler)
    ends the intake, and run() raises it once the others are done."""

    def __init__(
        self,
        source: JobSource,
        queue: JobQueue[Entry],
        handle: Callable[[PolledJob | JobBatch], Coroutine[object, object, None]],
        concurrency: int,
        per_cluster: int | None,
        batch: int | None,
        shutdown: Shutdown,
    ) -> None:
        self.source = source
        self.queue = queue
        self.handle = handle
        self.concurrency = concurrency
        self.per_cluster = per_cluster
        self.batch = batch
        self.shutdown = shutdown
        self.by_cluster: Counter[str] = Counter()  # running handlers (with per_cluster)
        self.waiting: set[asyncio.Task[None]] = set()  # workers waiting for work
        self.workers: list[asyncio.Task[None]] = []
        # why run() raises once drained: what the source raised, or what killed a worker
        self.failure: BaseException | None = None
        self.over: asyncio.Future[None] | None = None  # done: take no more work

    def _allowed(self, entry: Entry) -> bool:
        assert self.per_cluster is not None
        return self.by_cluster[entry.cluster] < self.per_cluster

    async def _take(self) -> PolledJob | JobBatch:
        allowed = self._allowed if self.per_cluster is not None else None
        if self.batch is None:
            (entry,) = await self.queue.get(1, allowed)
            return entry.hand_out()
        first, *others = await self.queue.get(self.batch, allowed)
        return first.hand_out_with(others)

    def _end_intake(self, failure: BaseException | None = None) -> None:
        if failure is not None and self.failure is None:
            self.failure = failure
        if self.over is not None and not self.over.done():
            self.over.set_result(None)

    def _open(self) -> bool:
        return not (self.over is None or self.over.done() or self.shutdown.requested)

    async def _work(self) -> None:
        me = asyncio.current_task()
        assert me is not None
        limit = self.per_cluster
        while self._open():
            self.waiting.add(me)
            try:
                work = await self._take()
            except PollerStoppedError:
                self._end_intake()
                return
            except Exception as exc:  # the source failed: let running handlers finish
                self._end_intake(exc)
                return
            finally:
                self.waiting.discard(me)
            if limit is None:
                await self.handle(work)
                continue
            self.by_cluster[work.cluster] += 1
            try:
                await self.handle(work)
            finally:
                left = self.by_cluster[work.cluster] = self.by_cluster[work.cluster] - 1
                if not left:
                    del self.by_cluster[work.cluster]
                if left == limit - 1:  # it was at its limit: its queued jobs may go now
                    self.queue.wake_consumers()

    async def drive(self) -> None:
        loop = asyncio.get_running_loop()
        self.over = loop.create_future()
        self.workers = [loop.create_task(self._work()) for _ in range(self.concurrency)]
        for worker in self.workers:
            worker.add_done_callback(self._worker_ended)
        watcher = loop.create_task(self._halt_on_stop())
        cancelled: asyncio.CancelledError | None = None
        try:
            await self.over
        except asyncio.CancelledError as exc:  # (which also ends the intake: over is done)
            cancelled = exc
        finally:
            watcher.cancel()
        stopping = cancelled is not None or self.shutdown.requested
        if stopping:
            # queued jobs go back; waiting workers still get the accepted ones, then
            # PollerStoppedError
            self.source.halt()
        else:
            # the source stopped or failed by itself: nothing more will be taken (a
            # group's queue could even open again if a cluster were added)
            for worker in list(self.waiting):
                worker.cancel()
        await self._drain(stopping)
        if cancelled is not None:
            raise cancelled
        if self.failure is not None:
            raise self.failure

    def _worker_ended(self, worker: asyncio.Task[None]) -> None:
        died = None if worker.cancelled() else worker.exception()
        if died is not None:
            self._end_intake(died)  # nothing caught it in the worker: stop taking work

    async def _halt_on_stop(self) -> None:
        await self.shutdown.wait()
        self.source.halt()  # waiting workers get what is left to hand out, then stop
        self._end_intake()

    async def _drain(self, stopping: bool) -> None:
        """Wait for the workers: without a bound when the source simply stopped, within
        ``shutdown_timeout`` after a stop request or a cancellation, not at all once
        forced; then cut short the handlers still running. Shielded from the
        cancellation that may have started it; a further cancellation forces the stop."""
        alive = {worker for worker in self.workers if not worker.done()}
        if not alive:
            return
        grace = self.source.options.shutdown_timeout if stopping else None
        why = "shutdown_timeout ran out"
        with anyio.CancelScope(shield=True):
            try:
                with anyio.move_on_after(grace):
                    forced = asyncio.ensure_future(self.shutdown.wait_forced())
                    try:
                        while alive and not self.shutdown.forced:
                            await asyncio.wait(
                                [*alive, forced], return_when=asyncio.FIRST_COMPLETED
                            )
                            alive = {worker for worker in alive if not worker.done()}
                    finally:
                        forced.cancel()
            except asyncio.CancelledError:
                why = "cancelled again"
            if self.shutdown.forced:
                why = f"stop forced: {self.shutdown.forced_reason}"
            left = [worker for worker in self.workers if not worker.done()]
            if left:
                running = sum(1 for worker in left if worker not in self.waiting)
                if running:
                    log.error("run() stopping (%s): cutting short %d handler(s)", why, running)
                for worker in left:
                    worker.cancel()
                await asyncio.wait(left)


async def _handle_one(pj: PolledJob, handler: Handler, accept: AcceptWhen, tally: _Tally) -> None:
    failed = False
    called = True
    try:
        if accept == "before":
            if not await _accept(pj):
                called = False
                return
            try:
                await handler(pj)
            except Exception:
                failed = True
                log.exception("cluster %r: the handler of job %d failed", pj.cluster, pj.id)
                pj.retry_later()  # ours alone: handed to a handler again, or given up
            return
        if accept == "after":
            await handler(pj)
            if pj.state in (HELD, ACCEPTING):
                try:
                    ours = await pj.accept()
                except AcceptUncertainError as exc:
                    log.warning("cluster %r: job %d ran; %s", pj.cluster, pj.id, exc.message)
                except RainbowError as exc:  # certainly not taken: it stays on the server
                    log.warning(
                        "cluster %r: job %d ran, but accepting it failed: %s",
                        pj.cluster,
                        pj.id,
                        exc,
                    )
                else:
                    if not ours:
                        _ran_but_lost(pj)
        else:
            await handler(pj)
    except Exception:
        failed = True
        log.exception("cluster %r: the handler of job %d failed", pj.cluster, pj.id)
    except asyncio.CancelledError:
        if pj.accepted:
            _cut_short(pj, tally)
        raise
    finally:
        # whatever the handler did not settle goes back to the server
        pj.release(failed=failed)
        _count(tally, called=called, failed=failed)


async def _handle_batch(
    batch: JobBatch, handler: BatchHandler, accept: AcceptWhen, tally: _Tally
) -> None:
    failed = False
    called = True
    try:
        if accept == "before":
            owned = await _accept_all(batch)
            called = bool(owned)
            if owned:
                try:
                    await handler(owned)
                except Exception:
                    failed = True
                    log.exception(
                        "cluster %r: the handler of jobs %s failed", batch.cluster, owned.ids
                    )
                    for pj in owned:
                        pj.retry_later()
        elif accept == "after":
            await handler(batch)
            ran = batch.held
            if ran:
                await _accept_all(batch.subset(ran))
                for pj in ran:
                    if pj.state is LOST:
                        _ran_but_lost(pj)
        else:
            await handler(batch)
    except Exception:
        failed = True
        log.exception("cluster %r: the handler of jobs %s failed", batch.cluster, batch.ids)
    except asyncio.CancelledError:
        for pj in batch:
            if pj.accepted:
                _cut_short(pj, tally)
        raise
    finally:
        batch.release(failed=failed)
        _count(tally, called=called, failed=failed)


def _count(tally: _Tally, *, called: bool, failed: bool) -> None:
    task = asyncio.current_task()
    if failed:
        tally.failed += 1
    elif called and not (task is not None and task.cancelling()):
        tally.handled += 1


def _cut_short(pj: PolledJob, tally: _Tally) -> None:
    tally.cut_short.append(pj.job)
    pj.report_unhandled("its handler was cut short when run() stopped")


async def _accept(pj: PolledJob) -> bool:
    """Accept before the handler: False (and logged) unless this process owns the job. A
    job whose accept certainly did not happen is given back (not as failed: no handler
    ran)."""
    try:
        return await pj.accept()
    except AcceptUncertainError as exc:
        log.warning("cluster %r: job %d skipped: %s", pj.cluster, pj.id, exc.message)
    except RainbowError as exc:
        log.warning("cluster %r: job %d not accepted: %s", pj.cluster, pj.id, exc)
    return False


async def _accept_all(batch: JobBatch) -> JobBatch:
    """Accept ``batch``; the owned jobs as a batch (the others are logged)."""
    try:
        owned = await batch.accept()
    except RainbowError as exc:
        log.warning("cluster %r: jobs %s not accepted: %s", batch.cluster, batch.ids, exc)
        return batch.subset([])
    if len(owned) == len(batch):
        return batch
    for pj in batch.uncertain:
        log.warning(
            "cluster %r: job %d skipped: its accept had an unknown outcome", pj.cluster, pj.id
        )
    return batch.subset(owned)


def _ran_but_lost(pj: PolledJob) -> None:
    log.warning("cluster %r: job %d ran, but another process took it first", pj.cluster, pj.id)
