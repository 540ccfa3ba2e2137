#!/usr/bin/env python3
"""Register a cluster with a rainbow server and print its token and secret.

    python examples/flux/register.py --cluster keebler --host localhost:50051

The token is what anyone submitting jobs to this cluster needs; the secret is what the
cluster itself needs to request and accept its jobs. The server shows both only once.
"""

import argparse
import asyncio
import sys

from rainbow_aio import ClusterExistsError, RainbowClient, RainbowError


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="🌈️ Rainbow scheduler register")
    parser.add_argument("--cluster", help="cluster name to register", default="keebler")
    parser.add_argument("--host", help="host of rainbow cluster", default="localhost:50051")
    parser.add_argument(
        "--secret", help="Rainbow cluster registration secret", default="chocolate-cookies"
    )
    return parser


async def register(cluster: str, host: str, secret: str) -> int:
    async with RainbowClient(host) as client:
        try:
            reg = await client.register(cluster, secret)
        except ClusterExistsError:
            print("status: REGISTER_EXISTS\n")
            print(f"The cluster {cluster} already exists.")
            return 1
    print(f'token: "{reg.token}"')
    print(f'secret: "{reg.secret}"')
    print("status: REGISTER_SUCCESS\n")
    print(f"🤫️ The token you will need to submit jobs to this cluster is {reg.token}")
    print(f"🔐️ The secret you will need to accept jobs is {reg.secret}")
    return 0


def main() -> int:
    # Like the original script, extra words on the command line are ignored.
    args, _ = get_parser().parse_known_args()
    try:
        return asyncio.run(register(args.cluster, args.host, args.secret))
    except RainbowError as exc:
        print(f"register.py: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("register.py: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
