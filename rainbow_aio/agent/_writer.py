"""The journal's commits, made off the event loop and in the order the agent asks.

Each journal commit ends with an fsync (with ``journal_sync="full"``), which can take a
millisecond or more: made on the event loop, it would stall the poller and every running
job's watcher. :class:`JournalWriter` makes them on one thread of its own, so that they
also reach the file in the order they were asked for (an intent before its AcceptJobs, a
launch before its spawn).

Some facts may wait: a job's handle and its end are learned again from the executor
after a restart (the folder's claim and exit files). The journal keeps those as deferred
writes, and :meth:`JournalWriter.flush_soon` commits them together a few milliseconds
later, one commit for many jobs instead of one each.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
from collections.abc import Callable
from typing import Any, Final, TypeVar

from ._journal import Journal

__all__ = ["FLUSH_DELAY", "JournalWriter"]

log = logging.getLogger("rainbow_aio.agent")

T = TypeVar("T")

FLUSH_DELAY: Final = 0.01
"""Seconds the journal's deferred writes (handles, ends) wait to be committed together."""


class JournalWriter:
    """Runs journal writes on one thread, in order (see the module's text).

    ``journal`` is the journal itself, for the writes that are only deferred (a
    ``defer=True`` write appends to a list and returns at once, on the event loop)."""

    __slots__ = ("_flush_handle", "_thread", "journal")

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self._thread: concurrent.futures.ThreadPoolExecutor | None = (
            concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="rainbow-agent-journal")
        )
        self._flush_handle: asyncio.TimerHandle | None = None

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` on the writer's thread, after every write asked
        for before it, and return its result once it is done (committed)."""
        if self._thread is None:
            raise RuntimeError("the journal writer is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, functools.partial(fn, *args, **kwargs))

    def flush_soon(self) -> None:
        """Commit the deferred writes :data:`FLUSH_DELAY` seconds from now, together
        with any deferred meanwhile."""
        if self._flush_handle is None and self._thread is not None:
            self._flush_handle = asyncio.get_running_loop().call_later(FLUSH_DELAY, self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        if self._thread is not None:
            future = self._thread.submit(self.journal.flush)
            future.add_done_callback(_log_failure)

    async def aclose(self) -> None:
        """Wait for the writes asked for, then stop the thread. The deferred writes
        still waiting are the journal's to commit when it is closed."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        thread, self._thread = self._thread, None
        if thread is not None:
            await asyncio.to_thread(thread.shutdown, wait=True)


def _log_failure(future: concurrent.futures.Future[None]) -> None:
    exc = future.exception()
    if exc is not None:
        log.error("journal write failed: %s", exc)
