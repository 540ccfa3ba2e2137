"""Node accounting, and which waiting jobs may start now.

The agent holds the jobs that wait for nodes (not accepted: they stay on the server) in
the order they arrived. :meth:`Capacity.plan` picks those that fit the free nodes, oldest
first, and lets a younger, smaller job start ahead of an older one that does not fit
(backfill) only while that older job has waited less than ``reserve_after`` seconds.
From then on nothing behind it starts: the nodes that free up are kept for it, so its
wait is bounded by ``reserve_after`` plus the longest run of the jobs already running.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["Capacity", "Waiting"]

T = TypeVar("T")


@dataclass(slots=True)
class Waiting(Generic[T]):
    """A job waiting for nodes: what it is (``item``), its nodes, since when (monotonic)."""

    item: T
    nodes: int
    since: float


class Capacity:
    """``total`` nodes, of which ``used`` are taken by jobs accepted and not ended."""

    def __init__(
        self,
        total: int,
        *,
        reserve_after: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if total < 1:
            raise ValueError(f"total nodes must be 1 or more, not {total}")
        self.total = total
        self.used = 0
        self.peak = 0
        self.reserve_after = reserve_after
        self._clock = clock

    @property
    def free(self) -> int:
        return self.total - self.used

    def never_fits(self, nodes: int) -> str | None:
        """Why a job of ``nodes`` nodes can never run here (None: it can)."""
        if nodes < 1:
            return f"asks for {nodes} nodes (fewer than 1)"
        if nodes > self.total:
            return f"asks for {nodes} nodes, more than this agent's {self.total}"
        return None

    def take(self, nodes: int) -> None:
        self.used += nodes
        self.peak = max(self.peak, self.used)

    def give(self, nodes: int) -> None:
        self.used = max(0, self.used - nodes)

    def plan(self, waiting: Sequence[Waiting[T]], free: int | None = None) -> list[Waiting[T]]:
        """The waiting jobs to start now, oldest first (``free``: at most that many nodes,
        for an executor that knows better than the count, such as a busy Flux instance)."""
        room = self.free if free is None else min(self.free, free)
        now = self._clock()
        chosen: list[Waiting[T]] = []
        for entry in waiting:
            if room <= 0:
                break
            if entry.nodes <= room:
                chosen.append(entry)
                room -= entry.nodes
            elif now - entry.since >= self.reserve_after:
                break  # reserve: nothing younger may take the nodes this one waits for
        return chosen

    def blocked(self, waiting: Sequence[Waiting[T]]) -> Waiting[T] | None:
        """The oldest waiting job that nodes are being kept for, if any."""
        now = self._clock()
        for entry in waiting:
            if entry.nodes > self.free and now - entry.since >= self.reserve_after:
                return entry
        return None
