"""Recent short RequestJobs answers, kept on the event loop so that polling an idle
cluster again costs no trip to the database thread.

Pollers ask the same question over and over (the same cluster, the same ``maxJobs``)
while nothing changes, and each answer would otherwise cost a hand-over to the store's
thread and back. The cache keeps the serialized answers of listings that were read in
one piece, up to a fixed number of bytes in all (least recently used first out).

It is never stale: the store puts an answer in, and drops every answer of a cluster that
a write touched, as the results of its database thread reach the event loop: in the
order that thread read and committed them, and before any caller hears of them. So
once a caller has been told that its submit or accept is done, no answer older than
that write is left to be served.
"""

from __future__ import annotations

import collections
from typing import Final

__all__ = ["CACHE_BYTES", "ENTRY_COST", "AnswerCache"]

CACHE_BYTES: Final = 8 << 20
"""Bytes of answers kept in all, each counted with :data:`ENTRY_COST` more."""

ENTRY_COST: Final = 256
"""What one entry costs besides its answer (key, bookkeeping), so that countless empty
answers (one per ``maxJobs`` value, say) cannot grow the cache without bound."""


class AnswerCache:
    """Serialized answers per (cluster, maxJobs), ``maxJobs <= 0`` being one key."""

    def __init__(self, max_bytes: int = CACHE_BYTES) -> None:
        self._max_bytes = max_bytes
        self._answers: collections.OrderedDict[tuple[str, int], bytes] = collections.OrderedDict()
        self._limits: dict[str, set[int]] = {}
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._answers)

    @property
    def size(self) -> int:
        """What the answers held cost, in bytes (their sizes plus :data:`ENTRY_COST` each)."""
        return self._bytes

    def get(self, cluster: str, limit: int) -> bytes | None:
        key = (cluster, max(limit, 0))
        answer = self._answers.get(key)
        if answer is not None:
            self._answers.move_to_end(key)
        return answer

    def put(self, cluster: str, limit: int, answer: bytes) -> None:
        if len(answer) + ENTRY_COST > self._max_bytes:
            return
        key = (cluster, max(limit, 0))
        self._remove(key)
        self._answers[key] = answer
        self._limits.setdefault(cluster, set()).add(key[1])
        self._bytes += len(answer) + ENTRY_COST
        while self._bytes > self._max_bytes:
            self._remove(next(iter(self._answers)))

    def drop(self, cluster: str) -> None:
        """Forget every answer of ``cluster`` (a write changed its jobs)."""
        for limit in self._limits.pop(cluster, ()):
            answer = self._answers.pop((cluster, limit))
            self._bytes -= len(answer) + ENTRY_COST

    def _remove(self, key: tuple[str, int]) -> None:
        answer = self._answers.pop(key, None)
        if answer is None:
            return
        self._bytes -= len(answer) + ENTRY_COST
        limits = self._limits[key[0]]
        limits.discard(key[1])
        if not limits:
            del self._limits[key[0]]
