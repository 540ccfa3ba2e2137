"""``PollerGroup``: many clusters polled at once into one merged queue."""

from __future__ import annotations

import asyncio
import builtins
import math
import random
from collections.abc import Mapping
from types import TracebackType
from typing import Unpack

import anyio
import anyio.abc

from .._exceptions import InvalidArgumentError
from .._models import Job
from ._errors import PollerStoppedError, UnhandledJobsError
from ._ledger import AcceptClient, Entry
from ._options import GROUP_QUEUE_SIZE, PollerKwargs, PollerOptions, PollerStats
from ._pacing import IdleBudget
from ._poller import (
    CLOSED,
    NEW,
    PHASES,
    RUNNING,
    STOPPED,
    ClusterPoller,
    refill_size,
    resolve_options,
)
from ._queue import JobQueue
from ._run import JobSource

__all__ = ["DEFAULT_IDLE_POLLS_PER_SECOND", "PollerGroup"]

DEFAULT_IDLE_POLLS_PER_SECOND = 500.0
"""The default budget of a group's idle polls: well within what the embedded server (and
the Go server) answer, whatever the number of clusters."""


class PollerGroup(JobSource):
    """Polls many clusters at once; their jobs arrive in one queue and carry ``.cluster``.

    From ``client.poll_many({cluster: secret, ...}, **options)``; the options are those of
    :class:`Poller` (:class:`PollerOptions`) and apply to every cluster, except that
    ``queue_size`` bounds the merged queue of all clusters and so defaults to 1,000 rather
    than 100 (see ``GROUP_QUEUE_SIZE`` in ``_options.py`` for why)::

        async with client.poll_many(secrets, max_jobs=10) as group:
            await group.run(handler, concurrency=8, accept="before")

    Each cluster has its own poller with the :class:`Poller` guarantees; they share the
    client's channel, one task each, and the merged queue. ``add()`` and ``remove()``
    change the clusters while the group runs. At most ``max_concurrent_polls`` (128)
    RequestJobs of the group are in flight at once, so a slow server faces a bounded
    load and memory stays bounded. When the group is entered, the first
    ``max_concurrent_polls`` clusters poll at once (within that bound), and the first
    polls of the others are spread over ``min_interval`` per hundred clusters (at most
    ``max_interval``), so a large group does not start with a burst.

    Idle polling has a budget for the whole group: at most ``idle_polls_per_second``
    (500) polls a second that follow a poll which found nothing (or that are the first
    poll of a cluster other than those first ``max_concurrent_polls``), however many
    clusters the group has: clusters that found jobs in the last
    minute first, while the others keep at least a fifth of the budget (none starves). A
    cluster being drained (its last poll found new jobs) polls again without waiting for
    it. So a job submitted to one of N idle clusters waits about
    ``max(max_interval, N / idle_polls_per_second)`` at worst before a poll finds it;
    ``None`` turns the budget off.

    Failures are per cluster: a transient error backs off only that cluster's poller; a
    denied or missing secret stops only it, and the error is kept in ``errors`` (and
    ``stats[cluster].last_error``) while the others keep going. ``remove()`` of a failed
    cluster discards its error. Leaving the context raises an ``ExceptionGroup`` of the
    errors still kept, unless the body raised or ``get()``/``run()`` already raised them
    (which they do once every cluster of the group has failed).

    ``remove()`` returns once the cluster's accepts are settled (up to
    ``shutdown_timeout``; still unanswered then, they are reported uncertain). A cluster
    added again while its old poller is still closing shares that poller's ledger, so no
    job in flight is handed out twice.
    """

    def __init__(
        self,
        client: AcceptClient,
        clusters: Mapping[str, str] | None = None,
        options: PollerOptions | None = None,
        *,
        max_concurrent_polls: int = 128,
        idle_polls_per_second: float | None = DEFAULT_IDLE_POLLS_PER_SECOND,
        **overrides: Unpack[PollerKwargs],
    ) -> None:
        if (
            isinstance(max_concurrent_polls, bool)
            or not isinstance(max_concurrent_polls, int)
            or max_concurrent_polls < 1
        ):
            raise InvalidArgumentError("max_concurrent_polls must be a positive int")
        rate = idle_polls_per_second
        if rate is not None and (
            isinstance(rate, bool)
            or not isinstance(rate, int | float)
            or not math.isfinite(rate)
            or rate <= 0
        ):
            raise InvalidArgumentError(
                f"idle_polls_per_second must be a positive number or None, not {rate!r}"
            )
        self._client = client
        self._max_polls = max_concurrent_polls
        self._budget = IdleBudget(float(rate)) if rate is not None else None
        self._limiter: asyncio.Semaphore | None = None
        self._opts = resolve_options(options, overrides, queue_size=GROUP_QUEUE_SIZE)
        self._queue: JobQueue[Entry] = JobQueue(
            self._opts.queue_size, refill=refill_size(self._opts)
        )
        self._members: dict[str, ClusterPoller] = {}
        self._errors: dict[str, BaseException] = {}
        self._errors_raised = False
        # accepted jobs of removed clusters that no consumer took before they closed
        self._removed_unhandled: builtins.list[Job] = []
        self._phase = NEW
        self._tg: anyio.abc.TaskGroup | None = None
        for cluster, secret in (clusters or {}).items():
            self.add(cluster, secret)

    # clusters

    @property
    def clusters(self) -> builtins.list[str]:
        """The clusters polled, in the order they were added."""
        return list(self._members)

    def __contains__(self, cluster: object) -> bool:
        return cluster in self._members

    def __len__(self) -> int:
        return len(self._members)

    def add(self, cluster: str, secret: str) -> None:
        """Start polling ``cluster`` too (at once if the group is running)."""
        if self._phase >= STOPPED:
            raise PollerStoppedError("the group was stopped", cluster=cluster)
        if cluster in self._members:
            raise InvalidArgumentError("the group already polls this cluster", cluster=cluster)
        member = ClusterPoller(
            self._client,
            cluster,
            secret,
            self._opts,
            self._queue,
            on_fail=self._member_failed,
        )
        self._members[cluster] = member
        if self._phase == RUNNING:
            self._start_member(member, self._opts.min_interval)
            if self._queue.closed:
                self._queue.reopen()  # closed because every cluster had failed

    async def remove(self, cluster: str) -> None:
        """Stop polling ``cluster``: its queued jobs are given back, accepts already
        requested are waited for (up to ``shutdown_timeout``, then reported uncertain),
        jobs of it still held are given back and can no longer be accepted. Its error, if
        it failed, is discarded."""
        member = self._members.pop(cluster, None)
        if member is None:
            raise InvalidArgumentError("the group does not poll this cluster", cluster=cluster)
        self._errors.pop(cluster, None)
        self._check_all_failed()  # the clusters left may all have failed
        if member.phase != NEW:
            await member.close()
            self._removed_unhandled.extend(member.unhandled())

    # state

    @property
    def options(self) -> PollerOptions:
        """The options every cluster of the group is polled with."""
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

    def _consumer_queue(self) -> JobQueue[Entry]:
        if self._phase == NEW:
            raise RuntimeError("enter the group first: async with client.poll_many(...)")
        return self._queue

    # lifecycle

    async def __aenter__(self) -> PollerGroup:
        if self._phase != NEW:
            raise RuntimeError("a PollerGroup can be entered only once")
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        self._limiter = asyncio.Semaphore(self._max_polls)
        self._phase = RUNNING
        # The first max_concurrent_polls clusters poll at once, bounded by the limiter
        # alone: a group drains its clusters' backlogs from the start as fast as one
        # poller per cluster would (spreading them, or making them wait for the idle
        # budget, held a short drain of 100 clusters back for a quarter of a second).
        # The others' first polls are idle polls, spread: at most about 100 per
        # min_interval, within max_interval.
        opts = self._opts
        spread = min(opts.max_interval, opts.min_interval * max(1.0, len(self._members) / 100))
        for index, member in enumerate(self._members.values()):
            if index < self._max_polls:
                self._start_member(member, 0.0, unbudgeted=True)
            else:
                self._start_member(member, spread)
        return self

    def _start_member(
        self, member: ClusterPoller, spread: float, *, unbudgeted: bool = False
    ) -> None:
        assert self._tg is not None
        member.start(
            self._tg,
            limiter=self._limiter,
            budget=self._budget,
            first_delay=random.random() * spread,
            first_unbudgeted=unbudgeted,
        )

    def halt(self) -> None:
        """Stop polling every cluster now, without waiting (see :meth:`stop`)."""
        if self._phase == RUNNING:
            self._phase = STOPPED
            for member in self._members.values():
                member.stop()
            self._queue.close(self._stopped_error)

    async def stop(self) -> None:
        """Stop polling every cluster and end iteration: queued jobs are given back,
        accepts waiting for their window go out now, and this waits until every accept
        already requested is settled (up to ``shutdown_timeout``). Jobs already handed
        out can still be accepted or released until the context is left. Safe to call
        from a handler; it does not wait for ``run()``'s handlers."""
        self.halt()
        async with anyio.create_task_group() as settling:
            for member in self._members.values():
                settling.start_soon(member.settle)

    async def aclose(self) -> None:
        """Leave the group as ``async with`` does (for code that cannot use it)."""
        await self.__aexit__(None, None, None)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        tg = self._tg
        if tg is None:
            if self._phase == CLOSED:
                return  # left already (aclose() after the block, say)
            raise RuntimeError("the group was not entered")
        self._tg = None
        try:
            with anyio.CancelScope(shield=True):
                self.halt()
                # the clusters settle their accepts side by side, within one shutdown bound
                async with anyio.create_task_group() as closing:
                    for member in self._members.values():
                        if member.phase != NEW:
                            closing.start_soon(member.close)
                self._phase = CLOSED
        finally:
            tg.cancel_scope.cancel()
            await tg.__aexit__(None, None, None)
        if exc is None and self._errors and not self._errors_raised:
            raise self._error_group()
        unhandled = [*self._removed_unhandled]
        for member in self._members.values():
            unhandled.extend(member.unhandled())
        if exc is None and unhandled:
            raise UnhandledJobsError(
                f"{len(unhandled)} accepted job(s) were not handled before the group "
                f"closed: ids {sorted(j.id for j in unhandled)}; they are no longer on the "
                "server",
                jobs=unhandled,
            )

    def __repr__(self) -> str:
        phase = PHASES[self._phase]
        return (
            f"PollerGroup(clusters={len(self._members)}, phase={phase}, "
            f"queued={len(self._queue)}, failed={len(self._errors)})"
        )

    # called by members

    def _member_failed(self, member: ClusterPoller) -> None:
        error = member.error
        if self._members.get(member.cluster) is not member or error is None:
            return
        self._errors[member.cluster] = error
        self._check_all_failed()

    def _check_all_failed(self) -> None:
        """Once every cluster of a running group has failed, consumers get the errors
        (a removal or a failure can make it so; an empty group waits for ``add()``)."""
        members = self._members.values()
        if self._phase == RUNNING and members and all(m.error is not None for m in members):
            self._queue.close(self._error_group)

    def _stopped_error(self) -> BaseException:
        return PollerStoppedError("the group was stopped")

    def _error_group(self) -> BaseException:
        self._errors_raised = True
        errors = [e for e in self._errors.values() if isinstance(e, Exception)]
        failed = ", ".join(repr(c) for c in self._errors)
        return ExceptionGroup(f"polling failed for cluster(s) {failed}", errors)
