"""The consumer side shared by :class:`Poller` and :class:`PollerGroup`: iteration and
the handler style (``run(handler)``), written against ``get()`` alone."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Literal, Protocol

import anyio

from .._exceptions import InvalidArgumentError
from ._errors import AcceptUncertainError, PollerStoppedError
from ._job import JobState, PolledJob

__all__ = ["AcceptWhen", "Handler", "JobSource", "run_handler"]

log = logging.getLogger("rainbow_aio.poller")

Handler = Callable[[PolledJob], Awaitable[object]]
AcceptWhen = Literal["before", "after", "manual"]


class _Source(Protocol):
    async def get(self) -> PolledJob: ...


class JobSource:
    """What a :class:`Poller` and a :class:`PollerGroup` share as sources of jobs: async
    iteration and the handler style (``run``), both on top of their ``get()``."""

    __slots__ = ()

    async def get(self) -> PolledJob:
        raise NotImplementedError

    def __aiter__(self) -> JobSource:
        return self

    async def __anext__(self) -> PolledJob:
        try:
            return await self.get()
        except PollerStoppedError:
            raise StopAsyncIteration from None

    async def run(
        self, handler: Handler, *, concurrency: int = 1, accept: AcceptWhen = "before"
    ) -> None:
        """Run ``await handler(job)`` for each job, at most ``concurrency`` at a time.

        ``accept``:

        - ``"before"`` (default): accept first; run the handler only if this process now
          owns the job (jobs lost to others, or with an uncertain accept, are skipped
          and logged).
        - ``"after"``: run the handler, then accept if it returned normally; if it raised,
          the job is released as failed (``release(failed=True)``): it is handed out
          again after a growing delay, and no more after ``max_deliveries`` failures.
        - ``"manual"``: the handler accepts or releases itself.

        In every style a job the handler left unsettled is released (as failed when the
        handler raised), and a handler's exception is logged and does not stop the loop.
        A new job is taken only when a handler slot is free. Returns once the source is
        stopped (``stop()``, possibly from a handler) and the running handlers have
        finished; raises what ``get()`` raises when the source failed (a poller's error;
        for a group, the ``ExceptionGroup`` of errors once every cluster failed).
        Cancelling it cancels the running handlers.
        """
        await run_handler(self, handler, concurrency=concurrency, accept=accept)


async def run_handler(
    source: _Source, handler: Handler, *, concurrency: int, accept: AcceptWhen
) -> None:
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise InvalidArgumentError(f"concurrency must be a positive int, not {concurrency!r}")
    if accept not in ("before", "after", "manual"):
        raise InvalidArgumentError(f"accept must be 'before', 'after' or 'manual', not {accept!r}")
    slots = anyio.Semaphore(concurrency)
    failure: BaseException | None = None

    async def handle(pj: PolledJob) -> None:
        try:
            await _handle_one(pj, handler, accept)
        finally:
            slots.release()

    async with anyio.create_task_group() as tg:
        while True:
            # take a slot before a job, so no job waits in this loop for a free handler
            await slots.acquire()
            try:
                pj = await source.get()
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
            tg.start_soon(handle, pj)
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
                else:
                    if not ours:
                        log.warning(
                            "cluster %r: job %d ran, but another process took it first",
                            pj.cluster,
                            pj.id,
                        )
        else:
            await handler(pj)
    except Exception:
        failed = True
        log.exception("cluster %r: the handler of job %d failed", pj.cluster, pj.id)
    finally:
        # whatever the handler did not settle goes back to the server
        pj.release(failed=failed)


async def _accept(pj: PolledJob) -> bool:
    try:
        return await pj.accept()
    except AcceptUncertainError as exc:
        log.warning("cluster %r: job %d skipped: %s", pj.cluster, pj.id, exc.message)
        return False
