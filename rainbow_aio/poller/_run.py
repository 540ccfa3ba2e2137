"""The handler style: run ``async def handler(job)`` for each job a poller hands out."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Literal, Protocol

import anyio

from .._exceptions import InvalidArgumentError
from ._errors import AcceptUncertainError, PollerStoppedError
from ._job import JobState, PolledJob

__all__ = ["AcceptWhen", "Handler", "run_handler"]

log = logging.getLogger("rainbow_aio.poller")

Handler = Callable[[PolledJob], Awaitable[object]]
AcceptWhen = Literal["before", "after", "manual"]


class _Source(Protocol):
    async def get(self) -> PolledJob: ...


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
        log.exception("cluster %r: the handler of job %d failed", pj.cluster, pj.id)
    finally:
        # whatever the handler did not settle goes back to the server
        pj.release()


async def _accept(pj: PolledJob) -> bool:
    try:
        return await pj.accept()
    except AcceptUncertainError as exc:
        log.warning("cluster %r: job %d skipped: %s", pj.cluster, pj.id, exc.message)
        return False
