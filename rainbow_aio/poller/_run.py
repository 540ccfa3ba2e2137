"""The consumer side shared by :class:`Poller` and :class:`PollerGroup`: iteration, batches
and the handler style (``run(handler)``), written against ``get()`` and ``get_batch()``."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Final, Literal, TypeVar, overload

import anyio

from .._exceptions import InvalidArgumentError, RainbowError
from ._errors import AcceptUncertainError, PollerStoppedError
from ._job import JobBatch, JobState, PolledJob

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "AcceptWhen",
    "BatchHandler",
    "Handler",
    "JobSource",
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

_T = TypeVar("_T")


def check_batch_size(max_size: object) -> int:
    if isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 1:
        raise InvalidArgumentError(f"max_size must be a positive int, not {max_size!r}")
    return max_size


class JobSource:
    """What a :class:`Poller` and a :class:`PollerGroup` share as sources of jobs: async
    iteration, batches and the handler style (``run``), on top of their ``get()`` and
    ``get_batch()``."""

    __slots__ = ()

    async def get(self) -> PolledJob:
        raise NotImplementedError

    async def get_batch(self, max_size: int = DEFAULT_BATCH_SIZE) -> JobBatch:
        raise NotImplementedError

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
        accept: AcceptWhen = ...,
        batch_size: None = ...,
    ) -> None: ...

    @overload
    async def run(
        self,
        handler: BatchHandler,
        *,
        concurrency: int = ...,
        accept: AcceptWhen = ...,
        batch_size: int,
    ) -> None: ...

    async def run(
        self,
        handler: Handler | BatchHandler,
        *,
        concurrency: int = 1,
        accept: AcceptWhen = "before",
        batch_size: int | None = None,
    ) -> None:
        """Run ``await handler(job)`` for each job, at most ``concurrency`` at a time; with
        ``batch_size=N``, ``await handler(batch)`` for batches of up to N jobs of one
        cluster (a :class:`JobBatch`).

        ``accept``:

        - ``"before"`` (default): accept first; run the handler only for what this
          process now owns (jobs lost to others, or with an uncertain accept, are skipped
          and logged; a batch handler gets the batch of the jobs owned).
        - ``"after"``: run the handler, then accept what it left held if it returned
          normally; if it raised, those jobs are released as failed
          (``release(failed=True)``): handed out again after a growing delay, and no
          more after ``max_deliveries`` failures.
        - ``"manual"``: the handler accepts or releases itself.

        In every style what the handler left unsettled is released (as failed when the
        handler raised), and a handler's exception is logged and does not stop the loop.
        New work is taken only when a handler slot is free. Returns once the source is
        stopped (``stop()``, possibly from a handler) and the running handlers have
        finished; raises what ``get()`` raises when the source failed (a poller's error;
        for a group, the ``ExceptionGroup`` of errors once every cluster failed).
        Cancelling it cancels the running handlers.
        """
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise InvalidArgumentError(f"concurrency must be a positive int, not {concurrency!r}")
        if accept not in ("before", "after", "manual"):
            raise InvalidArgumentError(
                f"accept must be 'before', 'after' or 'manual', not {accept!r}"
            )
        if batch_size is None:
            one: Handler = handler  # type: ignore[assignment]
            await _drive(self.get, lambda job: _handle_one(job, one, accept), concurrency)
        else:
            size = check_batch_size(batch_size)
            many: BatchHandler = handler  # type: ignore[assignment]
            await _drive(
                lambda: self.get_batch(size),
                lambda batch: _handle_batch(batch, many, accept),
                concurrency,
            )


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


async def _drive(
    take: Callable[[], Awaitable[_T]], handle: Callable[[_T], Awaitable[None]], concurrency: int
) -> None:
    """Take work and handle it, ``concurrency`` pieces at a time, until the source stops."""
    slots = anyio.Semaphore(concurrency)
    failure: BaseException | None = None

    async def handle_and_free(work: _T) -> None:
        try:
            await handle(work)
        finally:
            slots.release()

    async with anyio.create_task_group() as tg:
        while True:
            # take a slot before work, so no job waits in this loop for a free handler
            await slots.acquire()
            try:
                work = await take()
            except PollerStoppedError:
                slots.release()
                break
            except Exception as exc:  # the source failed: let running handlers finish
                slots.release()
                failure = exc
                break
            except BaseException:
                slots.release()
                raise
            tg.start_soon(handle_and_free, work)
    if failure is not None:
        raise failure


async def _handle_one(pj: PolledJob, handler: Handler, accept: AcceptWhen) -> None:
    failed = False
    try:
        if accept == "before":
            if not await _accept(pj):
                return
            await handler(pj)
        elif accept == "after":
            await handler(pj)
            if pj.state in (JobState.HELD, JobState.ACCEPTING):
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
    finally:
        # whatever the handler did not settle goes back to the server
        pj.release(failed=failed)


async def _handle_batch(batch: JobBatch, handler: BatchHandler, accept: AcceptWhen) -> None:
    failed = False
    try:
        if accept == "before":
            owned = await _accept_all(batch)
            if owned:
                await handler(owned)
        elif accept == "after":
            await handler(batch)
            ran = batch.held
            if ran:
                await _accept_all(batch.subset(ran))
                for pj in ran:
                    if pj.state is JobState.LOST:
                        _ran_but_lost(pj)
        else:
            await handler(batch)
    except Exception:
        failed = True
        log.exception("cluster %r: the handler of jobs %s failed", batch.cluster, batch.ids)
    finally:
        batch.release(failed=failed)


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
    for pj in batch.uncertain:
        log.warning(
            "cluster %r: job %d skipped: its accept had an unknown outcome", pj.cluster, pj.id
        )
    return batch if len(owned) == len(batch) else batch.subset(owned)


def _ran_but_lost(pj: PolledJob) -> None:
    log.warning("cluster %r: job %d ran, but another process took it first", pj.cluster, pj.id)
