"""``rainbow-aio agent``: run a cluster's jobs; ``rainbow-aio agent status``: show them.

    rainbow-aio agent --host H --cluster NAME --secret S|@FILE --nodes N \\
        --journal FILE --workdir DIR [--executor local|flux]
    rainbow-aio agent status --journal FILE [--json]

The secret comes from ``--secret`` (or ``@FILE``) or ``$RAINBOW_SECRET``; it is removed
from the environment the jobs inherit. SIGTERM or Ctrl-C stops the agent gracefully
(a second one stops it at once): no more accepting, running jobs get ``--drain-timeout``
seconds, then are left running for the next start (or cancelled, ``--cancel-on-stop``).
Exit codes: 0 stopped by SIGTERM, 130 stopped by Ctrl-C, 1 the agent could not work
(journal in use or damaged, root without --allow-root, server denied...), 2 a bad
command line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, TextIO

from .._exceptions import RainbowError
from .._protocol import DEFAULT_CLUSTER, INT32_MAX
from .._stopping import Shutdown
from ..agent import (
    SECRET_VARIABLES,
    Agent,
    AgentOptions,
    Executor,
    FluxExecutor,
    JobRecord,
    JobStateName,
    Journal,
    LocalExecutor,
)
from ..poller import PollerOptions
from ._common import (
    EXIT_INTERRUPTED,
    CredentialOption,
    error,
    explain,
    seconds,
    text,
    whole_number,
)
from .jobs import add_client_options, client_from_args, uses_tls

__all__ = ["add_parser", "render_status"]

SECRET = CredentialOption("--secret", "RAINBOW_SECRET")

log = logging.getLogger("rainbow_aio.agent")


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "agent",
        help="run the jobs a cluster accepts (or: agent status)",
        description="🌈️ Run a cluster's jobs: accept those that fit the free nodes, journal "
        "every step, run them locally or on Flux, and pick up where a killed agent left "
        "off. 'rainbow-aio agent status --journal FILE' shows the journal.",
        epilog="The secret given as @FILE is read from FILE; without --secret it is read "
        "from $RAINBOW_SECRET. It never reaches the journal, the logs or the jobs.",
    )
    p.add_argument(
        "action",
        nargs="?",
        choices=("run", "status"),
        default="run",
        help="run the agent (default), or show the journal's jobs",
    )
    p.add_argument("--cluster", type=text(), default=DEFAULT_CLUSTER, help="cluster to serve")
    add_client_options(p)
    SECRET.add_to(p, help="the cluster's secret, to list and accept its jobs")
    p.add_argument("--journal", type=Path, required=True, help="the journal (SQLite file)")
    p.add_argument("--workdir", type=Path, help="where the job folders go (DIR/<job id>)")
    p.add_argument(
        "--nodes",
        type=whole_number(1, INT32_MAX),
        help="nodes this agent may fill (with --executor flux: default the instance's)",
    )
    p.add_argument("--executor", choices=("local", "flux"), default="local")
    p.add_argument("--time-limit", type=seconds(), help="seconds each job may run")
    p.add_argument(
        "--drain-timeout",
        type=seconds(zero=True),
        default=30.0,
        help="seconds a stop waits for running jobs (default 30)",
    )
    p.add_argument(
        "--cancel-on-stop",
        action="store_true",
        help="cancel the jobs still running after --drain-timeout (default: leave them "
        "running for the next start to re-attach)",
    )
    p.add_argument(
        "--reserve-after",
        type=seconds(zero=True),
        default=30.0,
        help="seconds the oldest waiting job lets smaller ones go first (default 30)",
    )
    p.add_argument(
        "--accept-mode",
        choices=("batched", "shared"),
        default="batched",
        help="batched: this agent is the cluster's only accepter (default); shared: others "
        "accept too, and an unclear accept is never run",
    )
    p.add_argument(
        "--journal-sync",
        choices=("full", "normal"),
        default="full",
        help="full: each step survives a power cut (default); normal: a crash of the agent",
    )
    p.add_argument("--allow-root", action="store_true", help="run jobs even as root")
    p.add_argument(
        "--progress",
        choices=("auto", "always", "never"),
        default="auto",
        help="the live progress line on stderr (auto: when it is a terminal)",
    )
    p.add_argument("--poll-interval", type=seconds(), default=None, help=argparse.SUPPRESS)
    p.add_argument("--json", action="store_true", help="status: a JSON list instead of a table")
    p.set_defaults(func=agent, check=_check)


def _check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.action == "status":
        return
    if args.json:
        parser.error("--json goes with 'agent status'")
    SECRET.resolve(parser, args)
    if args.workdir is None:
        parser.error("--workdir is required: the directory for the jobs' folders")
    if args.nodes is None and args.executor == "local":
        parser.error("--nodes is required with the local executor")
    if (args.tls_cert is None) != (args.tls_key is None):
        parser.error("--tls-cert and --tls-key go together (mutual TLS needs both)")


def agent(args: argparse.Namespace) -> int:
    if args.action == "status":
        return status(args.journal, as_json=args.json, out=sys.stdout)
    for name in SECRET_VARIABLES:  # the jobs inherit this environment: no credentials in it
        os.environ.pop(name, None)
    _log_to_stderr()
    try:
        return asyncio.run(_run(args))
    except KeyboardInterrupt:  # before the signal handlers were in place
        return EXIT_INTERRUPTED
    except RainbowError as exc:
        return error(explain(exc, host=args.host, tls=uses_tls(args), hint="check --secret"))


def _executor(name: str) -> Executor:
    # the Flux bindings are imported only when the executor is made
    return FluxExecutor() if name == "flux" else LocalExecutor()


async def _run(args: argparse.Namespace) -> int:
    poller = PollerOptions()
    if args.poll_interval is not None:
        poller = poller.updated(min_interval=args.poll_interval, max_interval=args.poll_interval)
    options = AgentOptions(
        cluster=args.cluster,
        journal=args.journal,
        workdir=args.workdir,
        nodes=args.nodes,
        time_limit=args.time_limit,
        drain_timeout=args.drain_timeout,
        cancel_on_stop=args.cancel_on_stop,
        reserve_after=args.reserve_after,
        accept_mode=args.accept_mode,
        allow_root=args.allow_root,
        journal_sync=args.journal_sync,
        poller=poller,
    )
    show = args.progress == "always" or (args.progress == "auto" and sys.stderr.isatty())
    progress = _Progress(sys.stderr) if show else None
    stop = Shutdown()
    async with client_from_args(args) as client:
        runner = Agent(client, args.secret, options, executor=_executor(args.executor))
        ticker = asyncio.create_task(progress.run(runner)) if progress else None
        try:
            with stop.on_signals():
                stats = await runner.run(stop)
        finally:
            if ticker is not None:
                ticker.cancel()
                await asyncio.gather(ticker, return_exceptions=True)
            if progress is not None:
                progress.show(runner, final=True)
    log.info("agent stopped (%s): %s", stop.reason or "ended", stats.line())
    return EXIT_INTERRUPTED if stop.reason == "SIGINT" else 0


class _Progress:
    """The live line: rewritten in place on a terminal, a line every 10 s otherwise."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._tty = out.isatty()
        self._last = ""

    async def run(self, runner: Agent) -> None:
        while True:
            self.show(runner)
            await asyncio.sleep(0.5 if self._tty else 10.0)

    def show(self, runner: Agent, *, final: bool = False) -> None:
        line = runner.stats.line()
        if self._tty:
            self._out.write(f"\r\x1b[K{line}" + ("\n" if final else ""))
        elif line != self._last or final:
            self._out.write(line + "\n")
        self._last = line
        self._out.flush()


def _log_to_stderr() -> None:
    logger = logging.getLogger("rainbow_aio")
    if not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def status(path: Path, *, as_json: bool, out: TextIO) -> int:
    """Print the journal's jobs (a table by state, or JSON); 1 if it cannot be read."""
    try:
        with Journal.read(path) as journal:
            records = journal.records()
    except RainbowError as exc:
        return error(exc.message)
    if as_json:
        out.write(json.dumps([r.as_dict() for r in records], indent=1) + "\n")
    else:
        out.write(render_status(records))
    return 0


_ORDER = [
    JobStateName.RUNNING,
    JobStateName.ACCEPTED,
    JobStateName.ACCEPTING,
    JobStateName.UNCERTAIN,
    JobStateName.FAILED,
    JobStateName.INTERRUPTED,
    JobStateName.FINISHED,
    JobStateName.REFUSED,
    JobStateName.NOT_TAKEN,
]


def render_status(records: list[JobRecord], *, limit: int = 50) -> str:
    """The status table: a count per state, then the jobs of each state (the latest
    ``limit`` of each), with exit code, duration and reason."""
    if not records:
        return "no jobs in the journal\n"
    lines = [
        "  ".join(
            f"{state.value} {n}"
            for state in _ORDER
            if (n := sum(r.state is state for r in records))
        )
    ]
    for state in _ORDER:
        group = [r for r in records if r.state is state]
        if not group:
            continue
        lines.append("")
        shown = group[-limit:]
        more = len(group) - len(shown)
        lines.append(f"{state.value} ({len(group)}{f', the last {limit}' if more else ''}):")
        lines.append(f"  {'id':>8}  {'cluster':<12} {'exit':>4}  {'time':>8}  command / reason")
        for r in shown:
            exit_code = "-" if r.exit_code is None else str(r.exit_code)
            took = r.duration if r.started is not None else None
            duration = "-" if took is None else _duration(took)
            what = r.command if len(r.command) <= 40 else r.command[:39] + "…"
            if r.reason and r.state is not JobStateName.FINISHED:
                what += f"  ({r.reason})"
            lines.append(f"  {r.id:>8}  {r.cluster:<12} {exit_code:>4}  {duration:>8}  {what}")
    return "\n".join(lines) + "\n"


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{seconds // 60:.0f}m{seconds % 60:02.0f}s"
    return f"{seconds // 3600:.0f}h{seconds % 3600 // 60:02.0f}m"
