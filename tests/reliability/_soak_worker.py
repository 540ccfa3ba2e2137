"""One of several processes accepting the same clusters' jobs (run by test_soak_processes.py).

    python _soak_worker.py ADDRESS JOURNAL        (clusters and secrets come on stdin, JSON)

Polls every cluster in the shared accept mode through ADDRESS and accepts each job it is
handed. Every outcome is appended to JOURNAL as one JSON line the moment it is known
(``{"owned": id}``, ``{"uncertain": id}``, ``{"lost": id}``), so the journal is the
process's own record of what it owns. Prints "ready" once polling, and stops when a line
"stop" arrives on stdin; then it prints its poller counters as one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import IO, Any

from rainbow_aio import (
    AcceptUncertainError,
    PolledJob,
    PollerGroup,
    PollerStoppedError,
    RainbowClient,
    RainbowError,
    RetryPolicy,
)


def note(journal: IO[str], kind: str, job_id: int) -> None:
    journal.write(json.dumps({kind: job_id}) + "\n")
    journal.flush()


async def consume(group: PollerGroup, journal: IO[str]) -> None:
    while True:
        try:
            job: PolledJob = await group.get()
        except PollerStoppedError:
            return
        try:
            ours = await job.accept()
        except AcceptUncertainError:
            note(journal, "uncertain", job.id)
        except RainbowError:
            job.release()  # certainly not taken (e.g. the server stayed down too long)
        else:
            note(journal, "owned" if ours else "lost", job.id)


async def main(address: str, journal: IO[str]) -> None:
    secrets: dict[str, str] = json.loads(sys.stdin.readline())
    retry = RetryPolicy(max_attempts=8, initial_backoff=0.05, max_backoff=0.5)
    loop = asyncio.get_running_loop()
    async with (
        RainbowClient(
            address, retry=retry, timeout=8, attempt_timeout=2.0, connect_timeout=10
        ) as client,
        client.poll_many(
            secrets,
            accept_mode="shared",
            max_jobs=20,
            queue_size=100,
            min_interval=0.02,
            max_interval=0.3,
            shutdown_timeout=20,
        ) as group,
    ):
        print("ready", flush=True)
        consumers = [asyncio.create_task(consume(group, journal)) for _ in range(4)]
        await loop.run_in_executor(None, sys.stdin.readline)  # "stop"
        await group.stop()
        await asyncio.gather(*consumers)
        stats: dict[str, Any] = {
            "accept_calls": sum(s.accept_calls for s in group.stats.values()),
            "uncertain": sum(s.uncertain for s in group.stats.values()),
            "lost_to_others": sum(s.lost_to_others for s in group.stats.values()),
            "poll_errors": sum(s.errors for s in group.stats.values()),
        }
    print(json.dumps(stats), flush=True)


if __name__ == "__main__":
    with open(sys.argv[2], "a", encoding="utf-8") as journal_file:
        asyncio.run(main(sys.argv[1], journal_file))
