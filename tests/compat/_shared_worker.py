"""One of two processes accepting the same clusters' jobs (run by test_processes.py).

    PYTHONPATH=tests python tests/compat/_shared_worker.py ADDRESS

Reads a JSON object {cluster: secret} from the first line of stdin (never from the
command line, where other users could see it), polls those clusters with one
``PollerGroup`` in the shared accept mode, prints ``ready``, starts consuming on a
``go`` line, and on a ``stop`` line stops the group and prints one JSON line: the ids
it owns (with their commands) and what else ``accept()`` answered.
"""

from __future__ import annotations

import asyncio
import json
import sys

from support.ledger import Ledger

from rainbow_aio import RainbowClient


async def main(address: str) -> None:
    loop = asyncio.get_running_loop()
    secrets = json.loads(await loop.run_in_executor(None, sys.stdin.readline))
    ledger = Ledger()
    async with (
        RainbowClient(address) as client,
        client.poll_many(
            secrets, accept_mode="shared", max_jobs=5, min_interval=0.02, max_interval=0.2
        ) as group,
    ):
        print("ready", flush=True)
        assert (await loop.run_in_executor(None, sys.stdin.readline)).strip() == "go"
        consumers = ledger.start(group, 4)
        assert (await loop.run_in_executor(None, sys.stdin.readline)).strip() == "stop"
        await group.stop()
        await consumers
        errors = {cluster: repr(error) for cluster, error in group.errors.items()}
    print(json.dumps({**ledger.summary(), "commands": ledger.commands, "errors": errors}))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
