#!/usr/bin/env python3
"""List the jobs waiting for a cluster and, optionally, accept some of them.

    python examples/flux/poll-jobs.py --secret SECRET --cluster keebler
    python examples/flux/poll-jobs.py --secret SECRET --cluster keebler --accept 1

SECRET is the cluster secret that register.py printed. Listing takes nothing: the same
jobs are listed again until someone accepts them. Accepting removes a job from the queue
for good, so only the cluster that will run it should accept it.
"""

import argparse
import asyncio
import sys

from rainbow_aio import AcceptStatus, RainbowClient, RainbowError


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="🌈️ Rainbow scheduler poll (request jobs) and accept"
    )
    parser.add_argument("--cluster", help="cluster name to register", default="keebler")
    parser.add_argument("--host", help="host of rainbow cluster", default="localhost:50051")
    parser.add_argument(
        "--max-jobs", help="Maximum jobs to request (unset defaults to all)", type=int
    )
    parser.add_argument("--secret", help="Cluster secret to access job queue")
    parser.add_argument("--nodes", help="Nodes for job (defaults to 1)", default=1, type=int)
    parser.add_argument("--accept", help="Number of jobs to accept", type=int)
    return parser


async def poll(args: argparse.Namespace) -> int:
    async with RainbowClient(args.host) as client:
        # request_jobs gives the jobs lowest id first; max_jobs=None asks for all
        jobs = await client.request_jobs(args.cluster, args.secret or "", args.max_jobs or None)
        print(f"Status: {'REQUEST_JOBS_SUCCESS' if jobs else 'REQUEST_JOBS_NORESULTS'}")
        print(f"Received {len(jobs)} jobs for inspection!")
        for job in jobs:
            print(job.to_json())  # the server's own JSON layout

        if not args.accept or args.accept <= 0 or not jobs:
            return 0
        chosen = jobs[: args.accept]
        print(f"Accepting {len(chosen)} jobs...")
        accepted = []
        for job in chosen:
            # One id per call: a PARTIAL answer for a single id means exactly "someone
            # else took this one", so the list printed below is what we now own.
            result = await client.accept_jobs(args.cluster, args.secret or "", [job.id])
            if result.status is not AcceptStatus.PARTIAL:
                accepted.append(job.id)
        print(accepted)
    return 0


def main() -> int:
    # Like the original script, extra words on the command line are ignored.
    args, _ = get_parser().parse_known_args()
    try:
        return asyncio.run(poll(args))
    except RainbowError as exc:
        print(f"poll-jobs.py: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("poll-jobs.py: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
