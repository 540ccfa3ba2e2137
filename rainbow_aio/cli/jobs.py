"""``rainbow-aio register | submit | poll``: the original rainbow Python scripts, on asyncio.

The options, defaults and output follow the original ``examples/flux`` scripts
(``register.py``, ``submit-job.py``, ``poll-jobs.py``) so that their users can switch by
changing only the command name:

    rainbow-aio register keebler                      # prints the token and the secret
    rainbow-aio submit --token TOKEN echo hello world # prints SUBMIT_SUCCESS and the job id
    rainbow-aio poll --secret SECRET --accept 1       # lists the jobs as JSON, accepts one

Habits of the original scripts that still work: ``register NAME`` (the name as a word, as
the original README wrote it; ``--cluster NAME`` too); options and words a command does not
know are ignored, with a note on stderr; ``submit``'s options may follow the command
(``submit echo hi --token T``). Unlike the original, ``submit`` keeps options it does not
know as part of the command (``submit --token T ls -la``), and refuses to guess when one of
its own options sits between the command's words. A command whose first word starts with
a dash, or that has an option named like one of ``submit``'s, goes after ``--``.

Tokens and secrets can stay out of the process list: ``--token @FILE`` reads the value from
a file, and without the option ``RAINBOW_TOKEN``, ``RAINBOW_SECRET`` (``poll``) and
``RAINBOW_REGISTRATION_SECRET`` (``register``) are read from the environment. The option
wins over the environment, which wins over the built-in default.

``register`` prints the new cluster's token and secret, because handing them to the person
who registered is its whole purpose; nothing else in rainbow-aio prints or logs them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from typing import Any

from .._client import RainbowClient
from .._config import RetryPolicy, TLSConfig
from .._exceptions import ClusterExistsError, RainbowError
from .._models import AcceptStatus
from .._protocol import DEFAULT_CLUSTER, DEFAULT_HOST, INT32_MAX
from ._common import (
    EXIT_ERROR,
    REGISTRATION_SECRET,
    CredentialOption,
    host,
    pem_file,
    run,
    seconds,
    text,
    whole_number,
)

__all__ = ["add_client_options", "add_parser", "client_from_args", "uses_tls"]

DEFAULT_TIMEOUT = 10.0

TOKEN = CredentialOption("--token", "RAINBOW_TOKEN")
SECRET = CredentialOption("--secret", "RAINBOW_SECRET")

_CREDENTIALS_EPILOG = (
    "A token or secret given as @FILE is read from FILE (one line), and one not given is "
    "read from the environment variable named above, so it need not show in the process "
    "list. The option wins over the environment, which wins over the default."
)

_SUBMIT_EPILOG = (
    "The command is every word from its first one on, its own options included "
    "(rainbow-aio submit --token T ls -la); the options above may come before it or after "
    "it. A command whose first word starts with a dash, or that has an option named like "
    "one of the above, goes after --: rainbow-aio submit --token T -- flux run --nodes 2 "
    "hostname. " + _CREDENTIALS_EPILOG
)


def _common_options(parser: argparse.ArgumentParser, *, cluster_help: str) -> list[argparse.Action]:
    return [
        parser.add_argument("--cluster", type=text(), default=DEFAULT_CLUSTER, help=cluster_help),
        *add_client_options(parser),
    ]


def add_client_options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """Add ``--host``, ``--timeout`` and the TLS options that every client command takes;
    return them."""
    host_option = parser.add_argument(
        "--host",
        type=host,
        default=DEFAULT_HOST,
        help=f"host of rainbow cluster (default {DEFAULT_HOST})",
    )
    timeout = parser.add_argument(
        "--timeout",
        type=seconds(),
        default=DEFAULT_TIMEOUT,
        help=f"seconds to wait for each call, retries included (default {DEFAULT_TIMEOUT:g})",
    )
    tls = parser.add_argument_group("TLS (any of these turns TLS on; plaintext otherwise)")
    return [
        host_option,
        timeout,
        tls.add_argument(
            "--tls", action="store_true", help="use TLS, trusting the system's root certificates"
        ),
        tls.add_argument(
            "--tls-ca", metavar="FILE", type=pem_file, help="PEM CA certificate(s) to trust"
        ),
        tls.add_argument(
            "--tls-cert",
            metavar="FILE",
            type=pem_file,
            help="PEM client certificate (mutual TLS)",
        ),
        tls.add_argument(
            "--tls-key", metavar="FILE", type=pem_file, help="PEM private key for --tls-cert"
        ),
        tls.add_argument(
            "--tls-server-name",
            metavar="NAME",
            type=text(),
            help="name to expect in the server's certificate",
        ),
    ]


def uses_tls(args: argparse.Namespace) -> bool:
    """Whether any TLS option was given."""
    files = (args.tls_ca, args.tls_cert, args.tls_key, args.tls_server_name)
    return bool(args.tls) or any(value is not None for value in files)


def _check_tls(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if (args.tls_cert is None) != (args.tls_key is None):
        parser.error("--tls-cert and --tls-key go together (mutual TLS needs both)")


def client_from_args(args: argparse.Namespace) -> RainbowClient:
    """A client for ``--host`` with the command's TLS options and time budget.

    A command line fails fast rather than waiting out a long retry schedule: a few
    attempts, all within ``--timeout``.
    """
    tls: TLSConfig | None = None
    if uses_tls(args):
        tls = TLSConfig(
            root_certificates=args.tls_ca,
            certificate_chain=args.tls_cert,
            private_key=args.tls_key,
            server_name=args.tls_server_name,
        )
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
        epilog=_CREDENTIALS_EPILOG,
    )
    p.add_argument(
        "name",
        nargs="?",
        type=text(),
        metavar="CLUSTER",
        help="cluster name to register (the same as --cluster)",
    )
    _common_options(p, cluster_help=f"cluster name to register (default {DEFAULT_CLUSTER})")
    p.set_defaults(cluster=None)
    REGISTRATION_SECRET.add_to(
        p, help="Rainbow cluster registration secret (the server's, not a cluster's)"
    )
    p.set_defaults(func=register, check=_check_register, leftovers="ignore")

    p = subparsers.add_parser(
        "submit",
        help="submit a job to a cluster",
        description="🌈️ Rainbow scheduler submit: submit the command as a job to a cluster, "
        "with the token its registration printed.",
        epilog=_SUBMIT_EPILOG,
    )
    options = [
        *_common_options(p, cluster_help=f"cluster to submit to (default {DEFAULT_CLUSTER})"),
        TOKEN.add_to(p, help="Cluster token for permission to submit jobs"),
        p.add_argument(
            "--nodes",
            type=whole_number(1, INT32_MAX),
            default=1,
            help="Nodes for job (defaults to 1)",
        ),
        p.add_argument(
            "--tasks",
            type=whole_number(0, INT32_MAX),
            default=0,
            help="Tasks for job (defaults to 0)",
        ),
        p.add_argument(
            "--name", type=text(empty=True), default="", help="Name for job (defaults to empty)"
        ),
    ]
    p.add_argument("command", nargs=argparse.REMAINDER, help="Command to submit")
    p.set_defaults(
        func=submit,
        check=_check_submit,
        leftovers="ignore",
        # each of submit's options -> whether a value follows it
        own_options={
            flag: action.nargs != 0 for action in options for flag in action.option_strings
        },
    )

    p = subparsers.add_parser(
        "poll",
        help="list a cluster's waiting jobs and optionally accept some",
        description="🌈️ Rainbow scheduler poll (request jobs) and accept: list the jobs "
        "waiting for a cluster as JSON lines, lowest id first; with --accept N, take the "
        "first N of them for this cluster. Words left over after the options are ignored, "
        "as the original script ignored them.",
        epilog=_CREDENTIALS_EPILOG,
    )
    _common_options(p, cluster_help=f"cluster whose jobs to list (default {DEFAULT_CLUSTER})")
    p.add_argument(
        "--max-jobs",
        type=whole_number(0, INT32_MAX),
        default=None,
        help="Maximum jobs to request (unset defaults to all; 0 also means all)",
    )
    SECRET.add_to(p, help="Cluster secret to access job queue")
    p.add_argument(
        "--nodes",
        type=whole_number(1, INT32_MAX),
        default=1,
        help="Nodes for job (defaults to 1; kept for the original script, not used)",
    )
    p.add_argument("--accept", type=whole_number(0), default=0, help="Number of jobs to accept")
    p.add_argument(
        "--accept-mode",
        choices=("batched", "shared"),
        default="batched",
        help="batched (default): accept the N jobs in one call, which tells exactly what "
        "was taken when nobody else accepts for the cluster; shared: one call per job, "
        "exact even when other processes accept for it",
    )
    p.set_defaults(func=poll, check=_check_poll, leftovers="ignore")


def _check_register(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.name is not None and args.cluster is not None and args.name != args.cluster:
        parser.error(f"two cluster names: {args.name!r} and --cluster {args.cluster!r}; give one")
    args.cluster = args.name or args.cluster or DEFAULT_CLUSTER
    REGISTRATION_SECRET.resolve(parser, args)
    _check_tls(parser, args)


def _check_submit(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    words: list[str] = args.command
    if words[:1] == ["--"]:
        command = words[1:]  # after --, every word is the command's, as written
    else:
        command, trailing = _split_command(parser, words, args.own_options)
        if trailing:  # submit's own options after the command, as the original allowed
            parser.parse_known_args(trailing, namespace=args)
    if not command:
        parser.error("the command to submit is missing (the words after the options)")
    try:
        text()(" ".join(command))
    except argparse.ArgumentTypeError as exc:
        parser.error(f"the command to submit {exc}")
    args.command = command
    TOKEN.resolve(parser, args)
    _check_tls(parser, args)


def _split_command(
    parser: argparse.ArgumentParser, words: list[str], own: Mapping[str, bool]
) -> tuple[list[str], list[str]]:
    """Split the words from the command's first one on into the command and submit's own
    options that follow it (``own`` maps each option to whether it takes a value).

    A word of the command after one of submit's options makes it unclear whose option it
    is (``flux run --nodes 2 hostname``): that ends the command through ``parser.error``.
    """
    command: list[str] = []
    trailing: list[str] = []
    i = 0
    while i < len(words):
        word = words[i]
        flag = word.split("=", 1)[0]
        if word != "--" and flag in own:
            end = i + 1 + (own[flag] and "=" not in word)
            trailing += words[i:end]
            i = end
            continue
        if trailing:
            parser.error(
                f"{trailing[0].split('=', 1)[0]} comes between words of the command, so it "
                "is unclear whether it is submit's or the command's: put submit's options "
                "before the command, or put -- before the command to send it as written"
            )
        if word == "--":  # a -- inside the command is the command's own
            command += words[i:]
            break
        command.append(word)
        i += 1
    return command, trailing


def _check_poll(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    SECRET.resolve(parser, args)
    _check_tls(parser, args)


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


async def _accept_in_one_call(
    client: RainbowClient, args: argparse.Namespace, chosen: list[int]
) -> int:
    """One AcceptJobs for every chosen id. SUCCESS: this command took them all. PARTIAL:
    someone else took some, and the answer does not say which, so nothing is printed as
    taken. A repeat after a lost answer that says PARTIAL (UNCERTAIN) means the lost
    attempt took them, when this command is the only accepter of the cluster."""
    result = await client.accept_jobs(args.cluster, args.secret, chosen)
    if result.status is AcceptStatus.PARTIAL:
        print(
            f"rainbow-aio: error: another process took some of jobs {chosen} first, and the "
            "server does not say which; use --accept-mode shared when several processes "
            "accept for this cluster",
            file=sys.stderr,
        )
        print([])
        return EXIT_ERROR
    if result.status is AcceptStatus.UNCERTAIN:
        print(
            "rainbow-aio: note: an answer was lost and the call repeated; the jobs are gone "
            "from the queue, taken by this command unless another process accepts for "
            "this cluster",
            file=sys.stderr,
        )
    print(chosen)
    return 0


async def _accept_one_by_one(
    client: RainbowClient, args: argparse.Namespace, chosen: list[int]
) -> int:
    """One id per call: a PARTIAL answer then says exactly that this job was taken by
    someone else, so the printed list is exactly what this command took."""
    accepted: list[int] = []
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
                    f"rainbow-aio: note: job {job_id} is gone from the queue, most likely "
                    "taken by this command (an answer was lost and retried)",
                    file=sys.stderr,
                )
            accepted.append(job_id)
    except RainbowError:
        print(accepted)  # what this command did take before the failure
        raise
    print(accepted)
    return 0 if accepted else EXIT_ERROR


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
            if args.accept_mode == "batched":
                return await _accept_in_one_call(client, args, chosen)
            return await _accept_one_by_one(client, args, chosen)

    return run(
        main(),
        host=args.host,
        hint="check --cluster and --secret (the secret that registering the cluster printed)",
        tls=uses_tls(args),
    )
