"""``rainbow-aio register | submit | poll``: the original rainbow Python scripts, on asyncio.

The options, defaults and output follow the original ``examples/flux`` scripts
(``register.py``, ``submit-job.py``, ``poll-jobs.py``) so that their users can switch by
changing only the command name:

    rainbow-aio register --cluster keebler            # prints the token and the secret
    rainbow-aio submit --token TOKEN echo hello world # prints SUBMIT_SUCCESS and the job id
    rainbow-aio poll --secret SECRET --accept 1       # lists the jobs as JSON, accepts one

``register`` prints the new cluster's token and secret, because handing them to the person
who registered is its whole purpose; nothing else in rainbow-aio prints or logs them.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .._client import RainbowClient
from .._config import RetryPolicy, TLSConfig
from .._exceptions import ClusterExistsError, InvalidArgumentError, RainbowError
from .._models import AcceptStatus
from .._protocol import DEFAULT_CLUSTER, DEFAULT_HOST, DEFAULT_REGISTRATION_SECRET
from ._common import EXIT_ERROR, positive_float, run, whole_number

__all__ = ["add_client_options", "add_parser", "client_from_args", "uses_tls"]

DEFAULT_TIMEOUT = 10.0


def _common_options(parser: argparse.ArgumentParser, *, cluster_help: str) -> None:
    parser.add_argument("--cluster", default=DEFAULT_CLUSTER, help=cluster_help)
    add_client_options(parser)


def add_client_options(parser: argparse.ArgumentParser) -> None:
    """``--host``, ``--timeout`` and the TLS options that every client command takes."""
    parser.add_argument(
        "--host", default=DEFAULT_HOST, help=f"host of rainbow cluster (default {DEFAULT_HOST})"
    )
    parser.add_argument(
        "--timeout",
        type=positive_float,
        default=DEFAULT_TIMEOUT,
        help=f"seconds to wait for each call, retries included (default {DEFAULT_TIMEOUT:g})",
    )
    tls = parser.add_argument_group("TLS (any of these turns TLS on; plaintext otherwise)")
    tls.add_argument(
        "--tls", action="store_true", help="use TLS, trusting the system's root certificates"
    )
    tls.add_argument("--tls-ca", metavar="FILE", help="PEM CA certificate(s) to trust")
    tls.add_argument("--tls-cert", metavar="FILE", help="PEM client certificate (mutual TLS)")
    tls.add_argument("--tls-key", metavar="FILE", help="PEM private key for --tls-cert")
    tls.add_argument(
        "--tls-server-name", metavar="NAME", help="name to expect in the server's certificate"
    )


def uses_tls(args: argparse.Namespace) -> bool:
    """Whether any TLS option was given."""
    return bool(args.tls or args.tls_ca or args.tls_cert or args.tls_key or args.tls_server_name)


def client_from_args(args: argparse.Namespace) -> RainbowClient:
    """A client for ``--host`` with the command's TLS options and time budget.

    A command line fails fast rather than waiting out a long retry schedule: a few
    attempts, all within ``--timeout``.
    """
    tls: TLSConfig | None = None
    if uses_tls(args):
        try:
            tls = TLSConfig.from_files(
                args.tls_ca, args.tls_cert, args.tls_key, server_name=args.tls_server_name
            )
        except OSError as exc:
            raise InvalidArgumentError(f"cannot read {exc.filename}: {exc.strerror}") from None
    retry = RetryPolicy(max_attempts=3, initial_backoff=0.2, max_backoff=1.0)
    return RainbowClient(
        args.host,
        tls=tls,
        retry=retry,
        timeout=args.timeout,
        attempt_timeout=args.timeout,
        connect_timeout=min(args.timeout, 3.0),
    )


def add_parser(subparsers: Any) -> None:
    """Register ``register``, ``submit`` and ``poll`` on the ``rainbow-aio`` parser."""
    p = subparsers.add_parser(
        "register",
        help="register a cluster and print its token and secret",
        description="🌈️ Rainbow scheduler register: register a cluster and print the token "
        "(for submitting jobs to it) and the secret (for requesting and accepting them). "
        "The server shows them only once.",
    )
    _common_options(p, cluster_help=f"cluster name to register (default {DEFAULT_CLUSTER})")
    p.add_argument(
        "--secret",
        default=DEFAULT_REGISTRATION_SECRET,
        help="Rainbow cluster registration secret (the server's; "
        f"default {DEFAULT_REGISTRATION_SECRET})",
    )
    p.set_defaults(func=register)

    p = subparsers.add_parser(
        "submit",
        help="submit a job to a cluster",
        description="🌈️ Rainbow scheduler submit: submit the command as a job to a cluster, "
        "with the token its registration printed.",
    )
    _common_options(p, cluster_help=f"cluster to submit to (default {DEFAULT_CLUSTER})")
    p.add_argument("--token", required=True, help="Cluster token for permission to submit jobs")
    p.add_argument("--nodes", type=int, default=1, help="Nodes for job (defaults to 1)")
    p.add_argument("--tasks", type=int, default=0, help="Tasks for job (defaults to 0)")
    p.add_argument("--name", default="", help="Name for job (defaults to empty)")
    p.add_argument("command", nargs="+", help="Command to submit")
    p.set_defaults(func=submit)

    p = subparsers.add_parser(
        "poll",
        help="list a cluster's waiting jobs and optionally accept some",
        description="🌈️ Rainbow scheduler poll (request jobs) and accept: list the jobs "
        "waiting for a cluster as JSON lines, lowest id first; with --accept N, take the "
        "first N of them for this cluster.",
    )
    _common_options(p, cluster_help=f"cluster whose jobs to list (default {DEFAULT_CLUSTER})")
    p.add_argument(
        "--max-jobs",
        type=whole_number(0),
        default=None,
        help="Maximum jobs to request (unset defaults to all; 0 also means all)",
    )
    p.add_argument("--secret", required=True, help="Cluster secret to access job queue")
    p.add_argument(
        "--nodes",
        type=int,
        default=1,
        help="Nodes for job (defaults to 1; kept for the original script, not used)",
    )
    p.add_argument("--accept", type=whole_number(0), default=0, help="Number of jobs to accept")
    p.set_defaults(func=poll)


def register(args: argparse.Namespace) -> int:
    """Register ``--cluster``; print its credentials, or that it already exists."""

    async def main() -> int:
        async with client_from_args(args) as client:
            try:
                reg = await client.register(args.cluster, args.secret)
            except ClusterExistsError:
                print("status: REGISTER_EXISTS")
                print()
                print(f"The cluster {args.cluster} already exists.")
                return EXIT_ERROR
        print(f'token: "{reg.token}"')
        print(f'secret: "{reg.secret}"')
        print("status: REGISTER_SUCCESS")
        print()
        print(f"🤫️ The token you will need to submit jobs to this cluster is {reg.token}")
        print(f"🔐️ The secret you will need to accept jobs is {reg.secret}")
        return 0

    return run(
        main(),
        host=args.host,
        hint="check --secret (the server's registration secret)",
        tls=uses_tls(args),
    )


def submit(args: argparse.Namespace) -> int:
    """Submit the command words as one job to ``--cluster``."""
    command = " ".join(args.command)

    async def main() -> int:
        async with client_from_args(args) as client:
            print(f"⭐️ Submitting job: {command}", flush=True)
            job_id = await client.submit_job(
                args.cluster,
                args.token,
                command,
                nodes=args.nodes,
                tasks=args.tasks,
                name=args.name,
            )
        if job_id is not None:
            print(f"jobid: {job_id}")
        print("status: SUBMIT_SUCCESS")
        return 0

    return run(
        main(),
        host=args.host,
        hint="check --cluster and --token (the token that registering the cluster printed)",
        tls=uses_tls(args),
    )


def poll(args: argparse.Namespace) -> int:
    """List ``--cluster``'s waiting jobs; with ``--accept N``, accept the first N."""

    async def main() -> int:
        async with client_from_args(args) as client:
            # like the Go server, 0 means "all of them"
            jobs = await client.request_jobs(args.cluster, args.secret, args.max_jobs or None)
            status = "REQUEST_JOBS_SUCCESS" if jobs else "REQUEST_JOBS_NORESULTS"
            print(f"Status: {status}")
            print(f"Received {len(jobs)} jobs for inspection!")
            for job in jobs:
                print(job.to_json())
            if args.accept <= 0 or not jobs:
                return 0
            chosen = [job.id for job in jobs[: args.accept]]
            print(f"Accepting {len(chosen)} jobs...", flush=True)
            accepted: list[int] = []
            # One id per call: AcceptJobs answers PARTIAL without saying which ids were
            # taken, so only single-id calls tell exactly what this command now owns.
            try:
                for job_id in chosen:
                    result = await client.accept_jobs(args.cluster, args.secret, [job_id])
                    if result.status is AcceptStatus.PARTIAL:
                        print(
                            f"rainbow-aio: note: job {job_id} was taken by someone else first",
                            file=sys.stderr,
                        )
                        continue
                    if result.status is AcceptStatus.UNCERTAIN:
                        print(
                            f"rainbow-aio: note: job {job_id} is gone from the queue, most "
                            "likely taken by this command (an answer was lost and retried)",
                            file=sys.stderr,
                        )
                    accepted.append(job_id)
            except RainbowError:
                print(accepted)  # what this command did take before the failure
                raise
            print(accepted)
            return 0 if accepted else EXIT_ERROR

    return run(
        main(),
        host=args.host,
        hint="check --cluster and --secret (the secret that registering the cluster printed)",
        tls=uses_tls(args),
    )
