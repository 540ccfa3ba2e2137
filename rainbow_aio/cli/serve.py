"""``rainbow-aio serve``: run the embedded rainbow server as a process.

The options mirror the Go server's ``-address -db -secret -cleanup``. The default
address is ``127.0.0.1:50051`` rather than the Go server's ``[::]:50051``: with the
built-in default secret anyone who can reach the port could register clusters, so the
server only listens beyond loopback with a secret of your own (or with
``--allow-default-secret``).

The log goes to stderr in the Go ``log`` package's format (``YYYY/MM/DD HH:MM:SS msg``).
SIGINT or SIGTERM stops the server: it stops accepting calls, lets calls in flight finish
(``--grace`` seconds), closes the database and exits 0. Start-up failures (bad address,
port in use, unusable database, unreadable TLS files) print one line and exit 1.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import logging.handlers
import signal
import sys
from pathlib import Path
from typing import Any

from .. import _protocol as P
from .._exceptions import InvalidArgumentError
from ..server import ServerLimits
from ._common import seconds, whole_number

PROG = "rainbow-aio serve"
DEFAULT_ADDRESS = "127.0.0.1:50051"
DEFAULT_DB = "rainbow.db"


def add_parser(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "serve",
        help="run the embedded rainbow scheduler server",
        description="Run the embedded rainbow scheduler server (gRPC on SQLite).",
    )
    parser.add_argument(
        "--address",
        default=DEFAULT_ADDRESS,
        help=f"HOST:PORT to listen on, [HOST]:PORT for IPv6 (default {DEFAULT_ADDRESS})",
    )
    parser.add_argument(
        "--db", default=DEFAULT_DB, help=f"SQLite database file (default {DEFAULT_DB})"
    )
    parser.add_argument(
        "--secret",
        default=P.DEFAULT_REGISTRATION_SECRET,
        help="registration secret clusters must present (default: the Go server's default)",
    )
    parser.add_argument(
        "--cleanup", action="store_true", help="delete the database file first (start empty)"
    )
    parser.add_argument("--tls-cert", type=Path, help="PEM certificate chain (enables TLS)")
    parser.add_argument("--tls-key", type=Path, help="PEM private key for --tls-cert")
    parser.add_argument(
        "--tls-client-ca", type=Path, help="PEM CA for client certificates (mutual TLS)"
    )
    parser.add_argument(
        "--allow-default-secret",
        action="store_true",
        help="allow the default registration secret on a non-loopback address",
    )
    limits = ServerLimits()
    for field, what in (
        (
            "max_calls_in_flight",
            "database calls served at once; more are answered 'database is locked', "
            "which clients retry",
        ),
        ("max_queued_writes", "writes waiting for the database; more are answered the same"),
        (
            "max_response_bytes",
            "largest RequestJobs answer in bytes, by default RainbowClient's receive "
            "limit; a larger listing fails and asks for a smaller maxJobs",
        ),
    ):
        default = getattr(limits, field)
        parser.add_argument(
            "--" + field.replace("_", "-"),
            type=whole_number(1),
            default=default,
            metavar="N",
            help=f"{what} (default {default})",
        )
    parser.add_argument(
        "--grace",
        type=seconds(zero=True),
        default=5.0,
        help="seconds calls in flight get to finish on shutdown (default 5)",
    )
    parser.set_defaults(func=run)


class _Fail(Exception):
    """A start-up failure to report on one line."""


def _configure_logging() -> logging.handlers.MemoryHandler:
    """Log to stderr in Go's format, holding records back until start-up succeeds.

    A failed start-up then prints only its one-line error, not a half sequence.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y/%m/%d %H:%M:%S"))
    held = logging.handlers.MemoryHandler(
        capacity=10_000, flushLevel=logging.CRITICAL + 1, target=handler, flushOnClose=False
    )
    logger = logging.getLogger("rainbow_aio")
    logger.handlers[:] = [held]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return held


def _release(held: logging.handlers.MemoryHandler) -> None:
    """Write the held start-up records and log straight to stderr from now on."""
    logger = logging.getLogger("rainbow_aio")
    target = held.target
    held.flush()
    if target is not None:
        logger.handlers[:] = [target]
    held.close()


def _read(path: Path | None, what: str) -> bytes | None:
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as exc:
        raise _Fail(f"cannot read {what} {str(path)!r}: {exc.strerror or exc}") from None


def _tls(args: argparse.Namespace) -> Any:
    from ..server import ServerTLSConfig

    if args.tls_cert is None and args.tls_key is None:
        if args.tls_client_ca is not None:
            raise _Fail("--tls-client-ca needs --tls-cert and --tls-key")
        return None
    if args.tls_cert is None or args.tls_key is None:
        raise _Fail("--tls-cert and --tls-key go together")
    cert = _read(args.tls_cert, "TLS certificate")
    key = _read(args.tls_key, "TLS key")
    assert cert is not None
    assert key is not None
    return ServerTLSConfig(cert, key, _read(args.tls_client_ca, "TLS client CA"))


async def _serve(args: argparse.Namespace, held: logging.handlers.MemoryHandler) -> None:
    from ..server import RainbowServer, ServerStartError

    try:
        limits = ServerLimits(
            max_calls_in_flight=args.max_calls_in_flight,
            max_queued_writes=args.max_queued_writes,
            max_response_bytes=args.max_response_bytes,
        )
        server = RainbowServer(
            args.address,
            db=args.db,
            secret=args.secret,
            cleanup=args.cleanup,
            tls=_tls(args),
            allow_public_default_secret=args.allow_default_secret,
            limits=limits,
        )
    except (ServerStartError, InvalidArgumentError) as exc:
        raise _Fail(str(exc)) from None
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    received: list[str] = []

    def on_signal(sig: signal.Signals) -> None:
        received.append(sig.name)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        try:
            await server.start()
        except ServerStartError as exc:
            raise _Fail(str(exc)) from None
        _release(held)
        await stop.wait()
        logging.getLogger("rainbow_aio.server").info(
            "%s received, stopping (grace %.3g s)...", received[0], args.grace
        )
        await server.stop(args.grace)
        logging.getLogger("rainbow_aio.server").info("server stopped")
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def run(args: argparse.Namespace) -> int:
    held = _configure_logging()
    try:
        asyncio.run(_serve(args, held))
    except _Fail as exc:
        held.buffer.clear()
        held.close()
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    return 0
