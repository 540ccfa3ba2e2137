"""What the ``rainbow-aio`` subcommands share: running a coroutine, reporting errors, and
checking option values.

A bad command line ends with one line on stderr naming the option and exit code 2, before
the command prints or sends anything: every value is checked by the argparse ``type``
functions here (or, for what only the whole command line decides, by the subcommand's
``check`` through ``parser.error``). An expected failure while working (a
:class:`~rainbow_aio.RainbowError`) ends the command with exactly one line on stderr,
``rainbow-aio: error: WHAT — WHAT TO DO``, and exit code 1. Ctrl-C ends it with one line and
exit code 130. A traceback means a bug. Messages name the host and the cluster, never a
token or a secret.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

from .._config import parse_host
from .._exceptions import (
    NO_SERVER_HINT,
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
    "EXIT_INTERRUPTED",
    "EXIT_USAGE",
    "MAX_SECONDS",
    "CredentialOption",
    "Interrupted",
    "credential",
    "error",
    "explain",
    "host",
    "interrupted",
    "pem_file",
    "run",
    "run_until_interrupted",
    "seconds",
    "text",
    "whole_number",
]

T = TypeVar("T")

EXIT_ERROR: Final = 1
"""The command could not do its job (server unreachable, denied, jobs lost...)."""
EXIT_USAGE: Final = 2
"""The command line itself was wrong (argparse's code for the same thing)."""
EXIT_INTERRUPTED: Final = 130
"""Ctrl-C: the shell's code for a process ended by SIGINT."""

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
        return f"nothing answers at {host} — {NO_SERVER_HINT}"
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


class Interrupted(Exception):
    """Ctrl-C (SIGINT) ended the command; whatever it was doing has been cancelled."""


def interrupted() -> int:
    """Print the one line that ends a command stopped by Ctrl-C; return its exit code."""
    print(f"{PROG}: interrupted", file=sys.stderr)
    return EXIT_INTERRUPTED


async def run_until_interrupted(
    main: Coroutine[Any, Any, T], on_interrupt: Callable[[], object] | None = None
) -> T:
    """Await ``main``; Ctrl-C cancels it, and :class:`Interrupted` is raised once it has
    unwound.

    ``on_interrupt`` runs at the first Ctrl-C, before the cancellation starts: the demo
    uses it to stop reporting what the cancellation itself causes.
    """
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    signals = 0

    def on_sigint() -> None:
        nonlocal signals
        signals += 1
        if signals == 1 and on_interrupt is not None:
            on_interrupt()
        task.cancel()  # a second Ctrl-C cancels the clean-up too

    loop.add_signal_handler(signal.SIGINT, on_sigint)
    try:
        result = await main
    except asyncio.CancelledError:
        if not signals:
            raise
        raise Interrupted from None
    finally:
        loop.remove_signal_handler(signal.SIGINT)
    if signals:  # the interrupt arrived as main was returning
        raise Interrupted
    return result


def run(main: Coroutine[Any, Any, int], *, host: str, hint: str = "", tls: bool = False) -> int:
    """Run one command's coroutine; turn an expected failure, or Ctrl-C, into one stderr
    line."""
    try:
        return asyncio.run(run_until_interrupted(main))
    except Interrupted:
        return interrupted()
    except RainbowError as exc:
        return error(explain(exc, host=host, hint=hint, tls=tls))


def whole_number(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """An argparse ``type`` for a whole number from ``minimum`` to ``maximum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {minimum} or more, not {text}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be {maximum} or less, not {text}")
        return value

    return parse


MAX_SECONDS: Final = 86_400.0
"""The longest time an option accepts (a day). gRPC cannot represent a deadline many
years away: it treats one as already passed."""


def seconds(*, zero: bool = False) -> Callable[[str], float]:
    """An argparse ``type`` for a number of seconds above 0 (or from 0, with ``zero``) up
    to :data:`MAX_SECONDS`; ``inf`` and ``nan`` are refused."""
    floor = "0 or more" if zero else "more than 0"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
        if not math.isfinite(value) or value < 0 or (value == 0 and not zero):
            raise argparse.ArgumentTypeError(f"must be a finite number {floor}, not {text}")
        if value > MAX_SECONDS:
            raise argparse.ArgumentTypeError(
                f"must be at most {MAX_SECONDS:.0f} (a day), not {text}"
            )
        return value

    return parse


def host(text: str) -> str:
    """An argparse ``type`` for a server address, checked as the client will check it."""
    try:
        parse_host(text)
    except InvalidArgumentError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None
    return text


def _sendable(text: str) -> bool:
    """Whether protobuf can send ``text``: bytes that are not UTF-8 reach ``sys.argv`` as
    lone surrogates, which cannot be encoded."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def text(*, empty: bool = False) -> Callable[[str], str]:
    """An argparse ``type`` for a name sent to the server: UTF-8, and not blank unless
    ``empty``."""

    def parse(value: str) -> str:
        if not _sendable(value):
            raise argparse.ArgumentTypeError("is not valid UTF-8 text")
        if not empty and not value.strip():
            raise argparse.ArgumentTypeError("must not be empty")
        return value

    return parse


def credential(value: str) -> str:
    """An argparse ``type`` for a token or secret: the value itself, or ``@FILE`` to read
    it from FILE (one line; a final line break is dropped).

    Error messages never repeat the value: a mistyped option can still carry a real
    credential.
    """
    if value.startswith("@"):
        path = value[1:]
        if not path:
            raise argparse.ArgumentTypeError("'@' must be followed by a file name")
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise argparse.ArgumentTypeError(
                f"cannot read {path!r}: {exc.strerror or exc}"
            ) from None
        try:
            value = data.decode("utf-8").removesuffix("\n").removesuffix("\r")
        except UnicodeDecodeError:
            raise argparse.ArgumentTypeError(f"{path!r} is not UTF-8 text") from None
        if not value.strip():
            raise argparse.ArgumentTypeError(f"{path!r} is empty")
        if "\n" in value or "\r" in value:
            raise argparse.ArgumentTypeError(f"{path!r} has more than one line")
        return value
    if not value.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    if not _sendable(value):
        raise argparse.ArgumentTypeError("is not valid UTF-8 text")
    return value


@dataclass(frozen=True, slots=True)
class CredentialOption:
    """A token or secret option that can also come from an environment variable, so that
    it need not appear in the process list.

    Precedence: the option (its value, or ``@FILE``) over the environment variable over
    ``default``. Without any of them the command line is incomplete (exit code 2).
    """

    flag: str
    env: str
    default: str | None = None

    @property
    def dest(self) -> str:
        return self.flag.removeprefix("--").replace("-", "_")

    def add_to(self, parser: argparse.ArgumentParser, help: str) -> argparse.Action:
        """Add the option to ``parser``; ``help`` says what the credential is for."""
        fallback = f"; default ${self.env}"
        if self.default is not None:
            fallback += f", else {self.default}"
        return parser.add_argument(
            self.flag,
            type=credential,
            default=None,
            metavar=self.dest.upper(),
            help=f"{help} (or @FILE to read it from FILE{fallback})",
        )

    def resolve(self, parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
        """Fill in the value from the environment or the default, or end the command
        through ``parser.error`` when there is none."""
        if getattr(args, self.dest) is not None:
            return
        value = os.environ.get(self.env, "")
        if value.strip():
            if not _sendable(value):
                parser.error(f"{self.env} is not valid UTF-8 text")
            setattr(args, self.dest, value)
        elif self.default is not None:
            setattr(args, self.dest, self.default)
        else:
            name = self.dest.upper()
            parser.error(
                f"{self.flag} is required: give {self.flag} {name}, {self.flag} @FILE, "
                f"or set {self.env}"
            )


def pem_file(path: str) -> bytes:
    """An argparse ``type`` for a PEM file: its contents, read now, so that a missing file
    is a mistake in the command line rather than a failed call."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"cannot read {path!r}: {exc.strerror or exc}") from None
    if not data.strip():
        raise argparse.ArgumentTypeError(f"{path!r} is empty")
    return data
