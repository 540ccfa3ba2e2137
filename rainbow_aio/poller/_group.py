"""``PollerGroup``: many clusters polled at once into one merged queue."""

from __future__ import annotations

import asyncio
import builtins
import random
from collections.abc import Mapping
from types import TracebackType

import anyio
import anyio.abc

from .._exceptions import InvalidArgumentError
from ._errors import PollerStoppedError
from ._job import PolledJob
from ._options import (
    DEFAULTS,
    GROUP_QUEUE_SIZE,
    AcceptMode,
    PollerOptions,
    PollerStats,
    parse_accept_mode,
)
from ._poller import _NEW, _RUNNING, Poller, PollingClient
from ._queue import JobQueue
from ._run import JobSource

__all__ = ["PollerGroup"]

_STOPPED, _CLOSED = 2, 3


class PollerGroup(JobSource):
    """Polls many clusters at once; their jobs arrive in one queue and carry ``.cluster``.

    From ``client.poll_many({cluster: secret, ...}, **options)``; the options are those of
    :class:`Poller` and apply to every cluster, except that ``queue_size`` bounds the
    merged queue of all clusters and so defaults to 1,000 rather than 100 (see
    ``GROUP_QUEUE_SIZE`` in ``_options.py`` for why)::

        async with client.poll_many(secrets, max_jobs=10) as group:
            await group.run(handler, concurrency=8, accept="before")

    Each cluster has its own poller with the :class:`Poller` guarantees; they share the
    client's channel, one task each, and the merged queue. ``add()`` and ``remove()``
    change the clusters while the group runs. At most ``max_concurrent_polls`` (128)
    RequestJobs of the group are in flight at once, so a slow server faces a bounded
    load and memory stays bounded; the first polls are spread over ``min_interval``
    per hundred clusters (at most ``max_interval``), so a large group does not start
    with a burst.

    Failures are per cluster: a transient error backs off only that cluster's poller; a
    denied or missing secret stops only it, and the error is kept in ``errors`` (and
    ``stats[cluster].last_error``) while the others keep going. ``remove()`` of a failed
    cluster discards its error. Leaving the context raises an ``ExceptionGroup`` of the
    errors still kept, unless the body raised or ``get()``/``run()`` already raised them
    (which they do once every cluster of the group has failed).
    """

    def __init__(
        self,
        client: PollingClient,
        clusters: Mapping[str, str] | None = None,
        *,
        max_jobs: int = DEFAULTS.max_jobs,
        queue_size: int = GROUP_QUEUE_SIZE,
        min_interval: float = DEFAULTS.min_interval,
        max_interval: float = DEFAULTS.max_interval,
        accept_mode: AcceptMode | str = DEFAULTS.accept_mode,
        accept_window: float = DEFAULTS.accept_window,
        accept_batch_size: int = DEFAULTS.accept_batch_size,
        shutdown_timeout: float = DEFAULTS.shutdown_timeout,
        denied_attempts: int = DEFAULTS.denied_attempts,
        max_concurrent_polls: int = 128,
    ) -> None:
        if (
            isinstance(max_concurrent_polls, bool)
            or not isinstance(max_concurrent_polls, int)
            or max_concurrent_polls < 1
        ):
            raise InvalidArgumentError("max_concurrent_polls must be a positive int")
        self._client = client
        self._max_polls = max_concurrent_polls
        self._limiter: asyncio.Semaphore | None = None
        self._opts = PollerOptions(
            max_jobs=max_jobs,
            queue_size=queue_size,
            min_interval=min_interval,
            max_interval=max_interval,
            accept_mode=parse_accept_mode(accept_mode),
            accept_window=accept_window,
            accept_batch_size=accept_batch_size,
            shutdown_timeout=shutdown_timeout,
            denied_attempts=denied_attempts,
        )
        self._queue = JobQueue(
            self._opts.queue_size, refill=min(self._opts.max_jobs, self._opts.queue_size // 2)
        )
        self._members: dict[str, Poller] = {}
        self._errors: dict[str, BaseException] = {}
        self._errors_raised = False
        self._phase = _NEW
        self._tg: anyio.abc.TaskGroup | None = None
        for cluster, secret in (clusters or {}).items():
            self.add(cluster, secret)

    # clusters

    @property
    def clusters(self) -> builtins.list[str]:
        return list(self._members)

    def __contains__(self, cluster: object) -> bool:
        return cluster in self._members

    def __len__(self) -> int:
        return len(self._members)

    def add(self, cluster: str, secret: str) -> None:
        """Start polling ``cluster`` too (at once if the group is running)."""
        if self._phase >= _STOPPED:
            raise PollerStoppedError("the group was stopped", cluster=cluster)
        if cluster in self._members:
            raise InvalidArgumentError("the group already polls this cluster", cluster=cluster)
        member = Poller._member(self._client, cluster, secret, self._opts, self._queue, self)
        self._members[cluster] = member
        if self._phase == _RUNNING:
            self._start_member(member, self._opts.min_interval)
            if self._queue.closed:
                self._queue.reopen()  # closed because every cluster had failed

    async def remove(self, cluster: str) -> None:
        """Stop polling ``cluster``: its queued jobs are given back, accepts already
        sent are waited for (up to ``shutdown_timeout``), jobs of it still held can no
        longer be accepted. Its error, if it failed, is discarded."""
        member = self._members.pop(cluster, None)
        if member is None:
            raise InvalidArgumentError("the group does not poll this cluster", cluster=cluster)
        self._errors.pop(cluster, None)
        if member._phase != _NEW:
            await member._close_member()

    # state

    @property
    def options(self) -> PollerOptions:
        return self._opts

    @property
    def stats(self) -> dict[str, PollerStats]:
        """A snapshot of each cluster's counters."""
        return {cluster: member.stats for cluster, member in self._members.items()}

    @property
    def errors(self) -> dict[str, BaseException]:
        """The errors that stopped clusters' pollers (cluster -> error)."""
        return dict(self._errors)

    def qsize(self) -> int:
        """Jobs waiting in the merged queue."""
        return len(self._queue)

    # consuming

    async def get(self) -> PolledJob:
        """The next job of any cluster.

        Raises :class:`PollerStoppedError` once the group is stopped and the queue is
        empty, and an ``ExceptionGroup`` of the errors once every cluster has failed.
        """
        if self._phase == _NEW:
            raise RuntimeError("enter the group first: async with client.poll_many(...)")
        return await self._take()

    # lifecycle

    async def __aenter__(self) -> PollerGroup:
        if self._phase != _NEW:
            raise RuntimeError("a PollerGroup can be entered only once")
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        self._limiter = asyncio.Semaphore(self._max_polls)
        self._phase = _RUNNING
        # spread the first polls: at most about 100 per min_interval, within max_interval
        opts = self._opts
        spread = min(opts.max_interval, opts.min_interval * max(1.0, len(self._members) / 100))
        for member in self._members.values():
            self._start_member(member, spread)
        return self

    def _start_member(self, member: Poller, spread: float) -> None:
        assert self._tg is not None
        member._limiter = self._limiter
        member._first_delay = random.random() * spread
        member._start(self._tg)

    async def stop(self) -> None:
        """Stop polling every cluster and end iteration; give queued jobs back; wait up
        to ``shutdown_timeout`` for accepts already sent. Jobs already handed out can
        still be accepted or released until the context is left."""
        if self._phase == _RUNNING:
            self._phase = _STOPPED
            for member in self._members.values():
                if member._phase == _RUNNING:
                    member._halt()
            self._queue.close(self._stopped_error)
        await self._wait_accepts()

    async def _wait_accepts(self) -> None:
        with anyio.CancelScope(shield=True), anyio.move_on_after(self._opts.shutdown_timeout):
            for member in list(self._members.values()):
                await member._wait_accepts()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        tg = self._tg
        assert tg is not None
        try:
            with anyio.CancelScope(shield=True):
                await self.stop()
                for member in self._members.values():
                    if member._phase != _NEW:
                        member._finish()
                self._phase = _CLOSED
        finally:
            tg.cancel_scope.cancel()
            await tg.__aexit__(None, None, None)
        if exc is None and self._errors and not self._errors_raised:
            raise self._error_group()

    def __repr__(self) -> str:
        phase = ("new", "running", "stopped", "closed")[self._phase]
        return (
            f"PollerGroup(clusters={len(self._members)}, phase={phase}, "
            f"queued={len(self._queue)}, failed={len(self._errors)})"
        )

    # called by members

    def _member_failed(self, member: Poller) -> None:
        if self._members.get(member.cluster) is not member or member._fatal is None:
            return
        self._errors[member.cluster] = member._fatal
        if all(m._fatal is not None for m in self._members.values()):
            self._queue.close(self._error_group)

    def _stopped_error(self) -> BaseException:
        return PollerStoppedError("the group was stopped")

    def _error_group(self) -> BaseException:
        self._errors_raised = True
        errors = [e for e in self._errors.values() if isinstance(e, Exception)]
        failed = ", ".join(repr(c) for c in self._errors)
        return ExceptionGroup(f"polling failed for cluster(s) {failed}", errors)
