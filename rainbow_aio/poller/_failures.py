"""Failed deliveries of jobs this process has not accepted: one owner for their records.

A job a consumer failed on (``release(failed=True)``, a handler of ``run(accept="after")``
that raised) stays on the server and is listed again; this process hides it from its
listings for a growing, jittered delay, and after ``max_deliveries`` failures for good
(it stays on the server for other processes). The records live here, per cluster, and
are forgotten once listings have not shown their job for ``FORGET_AFTER`` seconds: the
job is gone, and a listing that misses a row (the Go server's, under load) resets
nothing.
"""

from __future__ import annotations

import random
import time
from collections.abc import Collection
from typing import Final

from ._options import PollerOptions

__all__ = ["FORGET_AFTER", "FailureRecords"]

FORGET_AFTER: Final = 60.0
"""Seconds a job with records may go unseen by listings before its records are dropped."""


class FailureRecords:
    """One cluster's failed-delivery counts and given-up marks (module docstring)."""

    __slots__ = ("absent_since", "declined", "failures", "forget_after", "given_up")

    def __init__(self, forget_after: float | None = None) -> None:
        # id -> (failed deliveries, monotonic time before which it is not handed out)
        self.failures: dict[int, tuple[int, float]] = {}
        self.given_up: set[int] = set()
        # ids a consumer declined (this process will never accept them)
        self.declined: set[int] = set()
        # id (of failures or given_up) -> monotonic time since which listings that could
        # have shown it have not
        self.absent_since: dict[int, float] = {}
        self.forget_after = FORGET_AFTER if forget_after is None else forget_after

    def __bool__(self) -> bool:
        return bool(self.failures or self.given_up or self.declined)

    def hidden_count(self) -> int:
        """How many ids these records hide from listings now."""
        hidden = len(self.given_up) + len(self.declined)
        if self.failures:
            now = time.monotonic()
            hidden += sum(1 for _, not_before in self.failures.values() if not_before > now)
        return hidden

    def hides(self, job_id: int, now: float) -> bool:
        if job_id in self.given_up or job_id in self.declined:
            return True
        failure = self.failures.get(job_id)
        return failure is not None and failure[1] > now

    def unhidden(self, ids: list[int], now: float) -> list[int]:
        """The ids of ``ids`` these records do not hide now."""
        return [job_id for job_id in ids if not self.hides(job_id, now)]

    def failed(self, job_id: int, opts: PollerOptions) -> int | None:
        """Count one failed delivery of ``job_id``: None while it will be handed out
        again (after its delay), or the number of failures once it is given up."""
        count = self.failures.get(job_id, (0, 0.0))[0] + 1
        if count < opts.max_deliveries:
            delay = min(opts.redelivery_delay * 2 ** (count - 1), opts.max_redelivery_delay)
            delay *= 0.5 + random.random() / 2
            self.failures[job_id] = (count, time.monotonic() + delay)
            return None
        self.failures.pop(job_id, None)
        self.given_up.add(job_id)
        return count

    def forget(self, job_id: int) -> None:
        """Drop every record of ``job_id`` (it was taken on the server)."""
        self.failures.pop(job_id, None)
        self.given_up.discard(job_id)
        self.declined.discard(job_id)
        self.absent_since.pop(job_id, None)

    def observe(self, seen: Collection[int], *, complete: bool) -> None:
        """A listing showed ``seen``. Complete (it showed every job waiting): evidence of
        absence for every record it does not show; full (listings are lowest id first):
        for those below its highest id. Records absent for ``forget_after`` go."""
        if not self.absent_since and not self:
            return
        for job_id in [i for i in self.absent_since if i in seen]:
            del self.absent_since[job_id]
        below = None if complete else (max(seen) if seen else 0)
        now = time.monotonic()
        for job_id in [*self.failures, *self.given_up, *self.declined]:
            if job_id in seen or (below is not None and job_id > below):
                continue
            since = self.absent_since.setdefault(job_id, now)
            if now - since >= self.forget_after:
                self.forget(job_id)
