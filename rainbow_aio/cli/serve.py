"""``rainbow-aio serve``: run the embedded rainbow server as a process.

The options mirror the Go server's ``-address -db -secret -cleanup``. The default
address is ``127.0.0.1:50051`` rather than the Go server's ``[::]:50051``: with the
built-in default secret anyone who can reach the port could register clusters, so the
server only listens beyond loopback with a secret of your own (or with
``--allow-default-secret``).

The registration secret comes, as for ``register``, from ``--secret VALUE``, ``--secret
@FILE`` or ``RAINBOW_REGISTRATION_SECRET`` (out of the process list), else the Go
server's default (:data:`~rainbow_aio.cli._common.REGISTRATION_SECRET`).

The log goes to stderr in the Go ``log`` package's format (``YYYY/MM/DD HH:MM:SS msg``).
TLS files are checked with Python's ``ssl`` before gRPC sees them, and the address is
probed before gRPC binds it, so their mistakes are told in one line of ours rather than
in gRPC's own log lines. SIGTERM stops
the server: it stops accepting calls, lets calls in flight finish (``--grace`` seconds),
closes the database and exits 0. SIGINT (Ctrl-C) does the same and exits 130; a second
SIGINT or SIGTERM ends the grace at once (calls still in flight are cancelled).

A bad command line (a malformed ``--address`` or port, an empty secret, a limit out of
range, an unreadable TLS file, a TLS key that does not match its certificate, a CA file
that holds no certificate) prints one line and exits 2 before anything starts. Failures
while starting (port in use, unusable or locked database, default secret on a public
address) print one line and exit 1.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import logging.handlers
import os
import signal
import ssl
import sys
from pathlib import Path
from typing import Any

from .. import _protocol as P
from .._exceptions import InvalidArgumentError
from ..server import RainbowServer, ServerLimits, ServerStartError, ServerTLSConfig
from ._common import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    REGISTRATION_SECRET,
    seconds,
    whole_number,
)

PROG = "rainbow-aio serve"
LIMIT_NAMES = tuple(field.name for field in dataclasses.fields(ServerLimits))
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
    REGISTRATION_SECRET.add_to(parser, "registration secret clusters must present")
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
    helps = {
        "max_calls_in_flight": "calls served at once, each until its answer is sent; more "
        "are answered 'database is locked', which clients retry",
        "max_queued_writes": "writes waiting for the database; more are answered the same",
        "max_response_bytes": "largest RequestJobs answer in bytes, by default "
        "RainbowClient's receive limit; a larger listing fails and asks for a smaller maxJobs",
        "max_held_bytes": "bytes of requests in progress and answers not sent yet; more "
        "are answered 'database is locked'",
        "max_accept_ids": "job ids in one AcceptJobs call; more are refused "
        "(INVALID_ARGUMENT, nothing deleted)",
        "max_streams_per_connection": "calls one connection may have open at once "
        "(HTTP/2 streams, advertised to clients)",
    }
    for field in LIMIT_NAMES:
        what = helps[field]
        default = getattr(limits, field)
        parser.add_argument(
            "--" + field.replace("_", "-"),
            type=whole_number(1, P.INT32_MAX),
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
    parser.set_defaults(func=run, check=check)


class _Fail(Exception):
    """A start-up failure to report on one line."""


def _tls_files(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Any:
    """The TLS configuration, its files read and checked: a file that cannot be read, a
    key that is not the certificate's, or a CA file without a certificate is a bad
    command line, named in one line (gRPC would only say "Failed to bind" later)."""
    cert_path, key_path, ca_path = args.tls_cert, args.tls_key, args.tls_client_ca
    if cert_path is None and key_path is None:
        if ca_path is not None:
            parser.error("--tls-client-ca needs --tls-cert and --tls-key")
        return None
    if cert_path is None or key_path is None:
        parser.error("--tls-cert and --tls-key go together")
    files = {"--tls-cert": cert_path, "--tls-key": key_path, "--tls-client-ca": ca_path}
    data: dict[str, bytes] = {}
    for flag, path in files.items():
        if path is None:
            continue
        try:
            data[flag] = path.read_bytes()
        except OSError as exc:
            parser.error(f"argument {flag}: cannot read {str(path)!r}: {exc.strerror or exc}")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        # (a password callback, so that an encrypted key fails instead of prompting)
        context.load_cert_chain(cert_path, key_path, password=lambda: b"")
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" in str(exc):
            parser.error("argument --tls-key: the key does not match the certificate of --tls-cert")
        parser.error(
            "arguments --tls-cert/--tls-key: not a PEM certificate chain and its unencrypted "
            f"private key ({exc.reason or exc})"
        )
    if ca_path is not None:
        try:
            context.load_verify_locations(cafile=ca_path)
        except ssl.SSLError as exc:
            parser.error(
                f"argument --tls-client-ca: not a PEM CA certificate ({exc.reason or exc})"
            )
    return ServerTLSConfig(data["--tls-cert"], data["--tls-key"], data.get("--tls-client-ca"))


def check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """What makes a bad command line beyond single values: the secret (from the option,
    @FILE or the environment), the address, the TLS files; the server is built here."""
    REGISTRATION_SECRET.resolve(parser, args)
    tls = _tls_files(parser, args)
    try:
        limits = ServerLimits(**{name: getattr(args, name) for name in LIMIT_NAMES})
        args.server = RainbowServer(
            args.address,
            db=args.db,
            secret=args.secret,
            cleanup=args.cleanup,
            tls=tls,
            allow_public_default_secret=args.allow_default_secret,
            limits=limits,
        )
    except ServerStartError as exc:
        parser.error(f"argument --address: {exc}")
    except InvalidArgumentError as exc:
        parser.error(str(exc))


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


LIFELINE_ENV = "RAINBOW_AIO_LIFELINE_FD"
"""Set by :class:`rainbow_aio.testing.ServerProcess`: a pipe whose end of file means
that the process that started this server is gone, so this one stops too."""


def _watch_lifeline(loop: asyncio.AbstractEventLoop, stop: Any) -> int | None:
    """Call ``stop()`` when the pipe named by :data:`LIFELINE_ENV` reports end of file
    (its writer, the parent, has exited); the watched fd, or None without one."""
    text = os.environ.pop(LIFELINE_ENV, "")
    if not text.isdigit():
        return None
    fd = int(text)

    def readable() -> None:
        try:
            data = os.read(fd, 512)
        except OSError:
            data = b""
        if not data:
            loop.remove_reader(fd)
            logging.getLogger("rainbow_aio.server").info(
                "the process that started this server has ended"
            )
            stop()

    try:
        os.set_blocking(fd, False)
        loop.add_reader(fd, readable)
    except (OSError, ValueError):
        return None
    return fd


async def _serve(args: argparse.Namespace, held: logging.handlers.MemoryHandler) -> int:
    server: RainbowServer = args.server
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    now = asyncio.Event()
    received: list[signal.Signals] = []

    def on_signal(sig: signal.Signals) -> None:
        received.append(sig)
        if stop.is_set():
            now.set()  # a second signal: no more grace
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    lifeline = _watch_lifeline(loop, lambda: on_signal(signal.SIGTERM))
    try:
        try:
            await server.start()
        except ServerStartError as exc:
            raise _Fail(str(exc)) from None
        _release(held)
        await stop.wait()
        log = logging.getLogger("rainbow_aio.server")
        log.info("%s received, stopping (grace %.3g s)...", received[0].name, args.grace)
        graceful = asyncio.ensure_future(server.stop(args.grace))
        hurry = asyncio.ensure_future(now.wait())
        await asyncio.wait((graceful, hurry), return_when=asyncio.FIRST_COMPLETED)
        if not graceful.done():
            log.info("%s received again, stopping now", received[-1].name)
            await server.stop(None)  # cancels the calls still in flight
            await graceful
        hurry.cancel()
        log.info("server stopped")
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        if lifeline is not None:
            loop.remove_reader(lifeline)
            os.close(lifeline)
    return EXIT_INTERRUPTED if received[0] == signal.SIGINT else 0


def run(args: argparse.Namespace) -> int:
    held = _configure_logging()
    try:
        return asyncio.run(_serve(args, held))
    except _Fail as exc:
        held.buffer.clear()
        held.close()
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
