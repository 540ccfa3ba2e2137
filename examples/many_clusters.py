#!/usr/bin/env python3
"""One process polls many clusters and accepts their jobs with a pool of consumers.

    rainbow-aio serve &                      # or the Go server
    python examples/many_clusters.py --clusters 20 --jobs 200 --consumers 8

It registers ``--clusters`` clusters (fresh names each run), submits ``--jobs`` jobs spread
over them, then polls all of them with one ``PollerGroup``: every cluster gets its own
poller, and their jobs arrive in one queue that ``--consumers`` tasks drain. A consumer
accepts a job before "running" it; ``accept()`` returning True means this process owns
the job and no other process can take it. The script ends when every job has been run.

Ctrl-C while the consumers run stops the group: jobs already accepted are run to the end,
jobs still queued are given back to the server, and the script says how far it got.
"""

import argparse
import asyncio
import collections
import signal
import sys
import uuid

from rainbow_aio import PolledJob, PollerGroup, RainbowClient, RainbowError


def at_least_one(text: str) -> int:
    """An argparse type: a whole number of 1 or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {text}")
    return value


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="🌈️ Poll many rainbow clusters from one process with a pool of consumers"
    )
    parser.add_argument("--host", help="host of rainbow cluster", default="localhost:50051")
    parser.add_argument(
        "--secret", help="Rainbow cluster registration secret", default="chocolate-cookies"
    )
    parser.add_argument("--clusters", help="clusters to register", type=at_least_one, default=10)
    parser.add_argument(
        "--jobs", help="jobs to submit, spread over the clusters", type=at_least_one, default=100
    )
    parser.add_argument(
        "--consumers", help="tasks that accept and run jobs", type=at_least_one, default=4
    )
    return parser


async def run_job(job: PolledJob) -> None:
    """Stand-in for real work: a Flux instance would launch job.job.command here."""
    await asyncio.sleep(0.01 * job.job.nodes)


async def consumer(
    group: PollerGroup,
    ran: list[PolledJob],
    total: int,
    done: asyncio.Event,
) -> None:
    # iterating a group ends when the group is stopped
    async for job in group:
        if not await job.accept():
            continue  # another process took it first: not ours to run
        await run_job(job)
        ran.append(job)
        if len(ran) == total:
            done.set()


async def main(args: argparse.Namespace) -> int:
    run = uuid.uuid4().hex[:6]  # fresh cluster names, so the script can run again
    names = [f"flux-{run}-{i:02d}" for i in range(args.clusters)]
    async with RainbowClient(args.host) as client:
        registrations = [await client.register(name, args.secret) for name in names]
        for n in range(args.jobs):
            reg = registrations[n % len(registrations)]
            await client.submit_job(reg.cluster, reg.token, f"echo job {n}")

        ran: list[PolledJob] = []
        done = asyncio.Event()  # set when every job has run, or at Ctrl-C
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, done.set)
        secrets = {reg.cluster: reg.secret for reg in registrations}
        try:
            # from here on Ctrl-C stops the group instead of cancelling everything
            print(f"submitted {args.jobs} jobs to {len(names)} clusters", flush=True)
            async with (
                client.poll_many(secrets, max_jobs=20) as group,
                asyncio.TaskGroup() as tasks,
            ):
                for _ in range(args.consumers):
                    tasks.create_task(consumer(group, ran, args.jobs, done))
                await done.wait()
                await group.stop()  # the consumers' loops end; queued jobs are given back
        finally:
            loop.remove_signal_handler(signal.SIGINT)
        if len(ran) < args.jobs:
            print(
                f"many_clusters.py: interrupted after running {len(ran)} of {args.jobs} jobs; "
                "the others are still waiting on the server",
                file=sys.stderr,
            )
            return 130
        per_cluster = collections.Counter(job.cluster for job in ran)
        for cluster in names:
            print(f"{cluster}: ran {per_cluster[cluster]} jobs")
        distinct = len({job.id for job in ran})
        print(f"ran {len(ran)} jobs, {distinct} distinct, of {args.jobs} submitted")
    return 0 if len(ran) == distinct == args.jobs else 1


if __name__ == "__main__":
    arguments = get_parser().parse_args()
    try:
        sys.exit(asyncio.run(main(arguments)))
    except RainbowError as exc:
        print(f"many_clusters.py: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:  # Ctrl-C before the consumers started
        print("many_clusters.py: interrupted", file=sys.stderr)
        sys.exit(130)
