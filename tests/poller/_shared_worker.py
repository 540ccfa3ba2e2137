"""One of several processes accepting the same cluster's jobs (run by test_processes.py).

    python _shared_worker.py ADDRESS CLUSTER        (the secret comes on stdin)

Polls in the shared accept mode and accepts every job it is handed, until the server
lists no job for the cluster and nothing is held; then prints one JSON line with the ids
it owns and its counters.
"""

from __future__ import annotations

import asyncio
import json
import sys

from rainbow_aio import AcceptUncertainError, RainbowClient


async def main(address: str, cluster: str, secret: str) -> None:
    owned: list[int] = []
    uncertain: list[int] = []
    async with (
        RainbowClient(address) as client,
        client.poller(
            cluster, secret, accept_mode="shared", max_jobs=5, min_interval=0.01, max_interval=0.05
        ) as poller,
    ):
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)  # go
        while True:
            try:
                async with asyncio.timeout(0.5):
                    job = await poller.get()
            except TimeoutError:
                if not await client.request_jobs(cluster, secret):
                    break
                continue
            try:
                if await job.accept():
                    owned.append(job.id)
            except AcceptUncertainError:
                uncertain.append(job.id)
        stats = poller.stats
    print(
        json.dumps(
            {
                "owned": owned,
                "uncertain": uncertain,
                "lost": stats.lost_to_others,
                "accept_calls": stats.accept_calls,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.stdin.readline().strip()))
