"""Listings in flight and the tombstones they need: one owner per cluster.

RequestJobs reads rows at one moment and answers later, so an id settled (accepted, lost,
uncertain) while a listing runs may still come back from that listing. Each listing gets
a start number; each settled id gets a tombstone with the number of the latest listing
at the time, which hides it from listings that started no later, and goes once no such
listing runs.
"""

from __future__ import annotations

__all__ = ["ListingClock"]


class ListingClock:
    """The listing counter, the listings running, and the tombstones (module docstring)."""

    __slots__ = ("running", "seq", "tombstones")

    def __init__(self) -> None:
        self.seq = 0  # the start number of the latest listing
        self.running: list[int] = []  # start numbers of the listings still running
        # id -> listing counter when settled; insertion order is counter order
        self.tombstones: dict[int, int] = {}

    def __len__(self) -> int:
        """How many tombstones there are."""
        return len(self.tombstones)

    def begin(self) -> int:
        self.seq += 1
        self.running.append(self.seq)
        return self.seq

    def end(self, start: int) -> None:
        self.running.remove(start)
        floor = min(self.running) if self.running else self.seq + 1
        stones = self.tombstones
        while stones:
            job_id = next(iter(stones))
            if stones[job_id] >= floor:
                break
            del stones[job_id]

    def settled(self, job_id: int) -> None:
        """``job_id`` was taken (or may have been): hide it from the listings running."""
        if self.running:
            self.tombstones.pop(job_id, None)
            self.tombstones[job_id] = self.seq

    def settled_all(self, ids: list[int]) -> None:
        """``settled`` for each of ``ids``."""
        if self.running:
            stones, seq = self.tombstones, self.seq
            for job_id in ids:
                stones.pop(job_id, None)
                stones[job_id] = seq

    def hides(self, job_id: int, start: int) -> bool:
        """Whether the listing that started at ``start`` must skip ``job_id``."""
        return self.tombstones.get(job_id, -1) >= start

    def unhidden(self, ids: list[int], start: int) -> list[int]:
        """The ids of ``ids`` that the listing that started at ``start`` may show."""
        stones = self.tombstones
        return [job_id for job_id in ids if stones.get(job_id, -1) < start]
