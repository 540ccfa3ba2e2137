#!/usr/bin/env python3
"""Submit one job to a cluster registered with a rainbow server.

    python examples/flux/submit-job.py --token TOKEN --cluster keebler echo hello world

The command is the remaining words; TOKEN is what register.py printed for the cluster.
"""

import argparse
import asyncio
import sys

from rainbow_aio import RainbowClient, RainbowError


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="🌈️ Rainbow scheduler submit job")
    parser.add_argument("command", nargs="+", help="Command to submit")
    parser.add_argument("--cluster", help="cluster name to register", default="keebler")
    parser.add_argument("--host", help="host of rainbow cluster", default="localhost:50051")
    parser.add_argument("--token", help="Cluster token for permission to submit jobs")
    parser.add_argument("--nodes", help="Nodes for job (defaults to 1)", default=1, type=int)
    return parser


async def submit(args: argparse.Namespace) -> int:
    command = " ".join(args.command)
    async with RainbowClient(args.host) as client:
        print(f"⭐️ Submitting job: {command}")
        job_id = await client.submit_job(args.cluster, args.token or "", command, nodes=args.nodes)
    if job_id is not None:  # the Go server never says; the embedded server does
        print(f"jobid: {job_id}")
    print("status: SUBMIT_SUCCESS")
    return 0


def main() -> int:
    args = get_parser().parse_args()
    try:
        return asyncio.run(submit(args))
    except RainbowError as exc:
        print(f"submit-job.py: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("submit-job.py: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
