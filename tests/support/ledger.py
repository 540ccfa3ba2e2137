"""``Ledger``: consumers that accept every job a poller or group hands out, and the
record of what each ``accept()`` answered, for checks of "each job owned once".

    ledger = Ledger()
    async with client.poll_many(secrets) as group:
        consumers = ledger.start(group, 8)   # 8 consumer tasks iterating the group
        ...                                   # wait until the server's queue is empty
        await group.stop()                    # iteration ends, the consumers return
        await consumers
    ledger.owned                              # id -> how many accept() calls said True

Only the public poller API is used: iteration, ``accept()`` (True, False,
:class:`AcceptUncertainError`, or the RPC's error when the accept certainly did not
happen) and ``release()``.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterable
from dataclasses import dataclass, field
from typing import Any

from rainbow_aio import AcceptUncertainError, PolledJob, RainbowError

__all__ = ["Ledger"]


@dataclass
class Ledger:
    owned: collections.Counter[int] = field(default_factory=collections.Counter)
    """Job id -> accept() calls that returned True for it (1 for every job: owned once)."""
    commands: dict[int, str] = field(default_factory=dict)
    """Job id -> the command of the job as it was handed out."""
    clusters: dict[int, str] = field(default_factory=dict)
    """Job id -> the cluster it was handed out for."""
    lost: list[int] = field(default_factory=list)
    """Ids whose accept() returned False: someone else took them."""
    uncertain: list[int] = field(default_factory=list)
    """Ids whose accept() raised AcceptUncertainError."""
    refused: collections.Counter[str] = field(default_factory=collections.Counter)
    """Accepts that certainly did not happen, by error (the job was released)."""

    async def take(self, job: PolledJob) -> None:
        """Accept one handed-out job and record the answer."""
        try:
            ours = await job.accept()
        except AcceptUncertainError:
            self.uncertain.append(job.id)
            return
        except RainbowError as exc:
            self.refused[f"{type(exc).__name__}: {exc.details or exc.message}"] += 1
            job.release()
            return
        if ours:
            self.owned[job.id] += 1
            self.commands[job.id] = job.job.command
            self.clusters[job.id] = job.cluster
        else:
            self.lost.append(job.id)

    async def consume(self, source: AsyncIterable[PolledJob]) -> None:
        """Take every job ``source`` hands out, until its iteration ends."""
        async for job in source:
            await self.take(job)

    def start(self, source: AsyncIterable[PolledJob], consumers: int) -> asyncio.Future[Any]:
        """``consumers`` tasks consuming ``source``; await the result to join them."""
        return asyncio.gather(*(self.consume(source) for _ in range(consumers)))

    @property
    def owned_twice(self) -> list[int]:
        return sorted(job_id for job_id, times in self.owned.items() if times > 1)

    def summary(self) -> dict[str, Any]:
        return {
            "owned": len(self.owned),
            "owned_twice": self.owned_twice,
            "lost": len(self.lost),
            "uncertain": sorted(self.uncertain),
            "refused": dict(self.refused),
        }
