"""What the ``rainbow-aio`` subcommands share: running a coroutine, reporting errors, and
checking numeric options.

An expected failure (a :class:`~rainbow_aio.RainbowError`, a bad argument) ends the command
with exactly one line on stderr, ``rainbow-aio: error: WHAT — WHAT TO DO``, and a non-zero
exit code; a traceback means a bug. Messages name the host and the cluster, never a token
or a secret.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Coroutine
from typing import Any, Final

from .._exceptions import (
    ClientClosedError,
    ClusterExistsError,
    DeadlineExceededError,
    DeniedError,
    InvalidArgumentError,
    MissingCredentialError,
    ProtocolError,
    RainbowError,
    ServerBusyError,
    TLSError,
    UnavailableError,
)

__all__ = [
    "EXIT_ERROR",
    "EXIT_USAGE",
    "error",
    "explain",
    "positive_float",
    "run",
    "whole_number",
]

EXIT_ERROR: Final = 1
"""The command could not do its job (server unreachable, denied, jobs lost...)."""
EXIT_USAGE: Final = 2
"""The command line itself was wrong (argparse's code for the same thing)."""

PROG: Final = "rainbow-aio"


def error(message: str) -> int:
    """Print ``message`` as the command's one error line and return :data:`EXIT_ERROR`."""
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return EXIT_ERROR


def explain(exc: RainbowError, *, host: str, hint: str = "", tls: bool = False) -> str:
    """One line saying what went wrong and what to do about it.

    ``hint`` is the command's own advice for a denied call (which option to check);
    ``tls`` says whether the command used TLS, which changes the advice when a connection
    is accepted and then closed before gRPC could start.
    """
    if isinstance(exc, TLSError):
        return (
            f"the TLS handshake with {host} failed — check that client and server agree "
            "on TLS and that the CA and certificates match"
        )
    if isinstance(exc, UnavailableError) and _closed_early(exc):
        if tls:
            return (
                f"{host} accepted the connection but closed it during set-up — if the server "
                "requires a client certificate, pass --tls-cert and --tls-key"
            )
        return (
            f"{host} accepted the connection but closed it before gRPC started — if the "
            "server uses TLS, pass --tls-ca (or --tls for a publicly trusted certificate)"
        )
    if isinstance(exc, UnavailableError):
        return (
            f"nothing answers at {host} — is the server running? "
            "(start one with: rainbow-aio serve)"
        )
    if isinstance(exc, DeadlineExceededError):
        return (
            f"the server at {host} did not answer in time — check that it is healthy, "
            "or allow longer with --timeout"
        )
    if isinstance(exc, ServerBusyError):
        return f"the server at {host} is busy (its database is locked) — try again shortly"
    if isinstance(exc, DeniedError | MissingCredentialError):
        advice = hint or "check the credentials"
        return f"the server at {host} denied the request{_cluster(exc)} — {advice}"
    if isinstance(exc, ProtocolError):
        return (
            f"the server at {host} answered something the rainbow protocol does not allow "
            f"({exc.message}) — is it a rainbow scheduler?"
        )
    if isinstance(exc, InvalidArgumentError):
        return f"{exc.message} — see --help"
    if isinstance(exc, ClusterExistsError | ClientClosedError):
        return exc.message
    return f"{exc.message} (server {host})"


def _closed_early(exc: RainbowError) -> bool:
    """The peer took the TCP connection and hung up (plaintext against TLS, or a TLS
    server that wants a client certificate), as opposed to nothing listening at all."""
    details = (exc.details or "").lower()
    return "socket closed" in details or "connection reset" in details


def _cluster(exc: RainbowError) -> str:
    return f" for cluster {exc.cluster!r}" if exc.cluster else ""


def run(main: Coroutine[Any, Any, int], *, host: str, hint: str = "", tls: bool = False) -> int:
    """Run one command's coroutine; turn an expected failure into one stderr line."""
    try:
        return asyncio.run(main)
    except RainbowError as exc:
        return error(explain(exc, host=host, hint=hint, tls=tls))


def whole_number(minimum: int) -> Callable[[str], int]:
    """An argparse ``type`` for a whole number of at least ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {minimum} or more, not {text}")
        return value

    return parse


def positive_float(text: str) -> float:
    """An argparse ``type`` for a number above 0 (NaN refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, not {text}")
    return value
