"""Options for :class:`~rainbow_aio.RainbowClient`, as small frozen dataclasses.

- :class:`RetryPolicy`: how often and for how long a failed call is repeated (which
  failures count as retryable is fixed per RPC, see ``_retry.py``).
- :class:`TLSConfig`: server-authenticated or mutual TLS. Plaintext is the default.
- :class:`KeepAliveConfig`: HTTP/2 keepalive pings, with defaults that a stock Go gRPC
  server (such as the rainbow server) tolerates.

Also here: :func:`parse_host`, which checks a host string before any channel is built.
"""

from __future__ import annotations

import ipaddress
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import grpc

from ._exceptions import InvalidArgumentError

__all__ = [
    "KeepAliveConfig",
    "RetryPolicy",
    "SubmitRetry",
    "TLSConfig",
    "parse_host",
    "positive_seconds",
]

SubmitRetry = Literal["safe", "at_least_once"]
"""How SubmitJob is retried.

``"safe"`` (default): only failures that prove nothing was written are retried (the
server answered ``database is locked``, or no connection could be set up), so a job is
never submitted twice. ``"at_least_once"``: every transport failure and deadline is
retried too, so a job whose first answer was lost can be stored twice.
"""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often a call that failed retryably is repeated, and how long it waits between.

    Between attempts the client sleeps a random time between 0 and
    ``min(max_backoff, initial_backoff * 2 ** (attempt - 1))`` seconds (exponential
    backoff with full jitter). It stops after ``max_attempts`` attempts, and never starts
    an attempt (or a sleep) that would end after the call's time budget (its
    ``timeout``: see :class:`~rainbow_aio.RainbowClient`).

    ``RetryPolicy.disabled()`` sends every call exactly once.
    """

    max_attempts: int = 6
    initial_backoff: float = 0.2
    max_backoff: float = 5.0

    def __post_init__(self) -> None:
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int):
            raise InvalidArgumentError("RetryPolicy.max_attempts must be an int")
        if self.max_attempts < 1:
            raise InvalidArgumentError("RetryPolicy.max_attempts must be at least 1")
        for name in ("initial_backoff", "max_backoff"):
            value = getattr(self, name)
            if not _positive_finite(value):
                raise InvalidArgumentError(f"RetryPolicy.{name} must be a positive number")
        if self.max_backoff < self.initial_backoff:
            raise InvalidArgumentError("RetryPolicy.max_backoff must be >= initial_backoff")

    @classmethod
    def disabled(cls) -> RetryPolicy:
        """A policy that sends every call once and never repeats it."""
        return cls(max_attempts=1)


MAX_SECONDS = 365 * 24 * 3600
"""The longest timeout the client takes: gRPC turns a deadline much further away (about
30 years) into one already passed, so a call would fail at once."""


def positive_seconds(name: str, value: object) -> float:
    """``value`` as a float number of seconds, or :class:`InvalidArgumentError` naming
    ``name`` when it is not a positive, finite number of at most a year."""
    if not _positive_finite(value):
        raise InvalidArgumentError(f"{name} must be a positive, finite number of seconds")
    seconds = float(value)  # type: ignore[arg-type]
    if seconds > MAX_SECONDS:
        raise InvalidArgumentError(f"{name} must be at most a year ({MAX_SECONDS:,} seconds)")
    return seconds


def _positive_finite(value: object) -> bool:
    """A real number of seconds: not a bool, not NaN (which passes every ``<= 0`` check),
    not infinite (no deadline; and grpc's millisecond options cannot hold it)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return math.isfinite(value) and value > 0


def _describe(data: bytes | None) -> str:
    return "None" if data is None else f"<{len(data)} bytes>"


@dataclass(frozen=True)
class TLSConfig:
    """TLS for the client's channel.

    - ``TLSConfig()``: TLS, trusting the system's root certificates.
    - ``TLSConfig(root_certificates=ca_pem)``: trust a private CA (PEM bytes).
    - add ``certificate_chain`` and ``private_key`` (PEM) for mutual TLS.
    - ``server_name``: the name to check in the server's certificate when it differs from
      the host you dial (for example dialing an IP address).

    The private key never appears in ``repr()``; certificates show only their size.
    """

    root_certificates: bytes | None = None
    certificate_chain: bytes | None = None
    private_key: bytes | None = field(default=None, repr=False)
    server_name: str | None = None

    def __post_init__(self) -> None:
        for name in ("root_certificates", "certificate_chain", "private_key"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, bytes):
                raise InvalidArgumentError(f"TLSConfig.{name} must be PEM bytes or None")
        if (self.certificate_chain is None) != (self.private_key is None):
            raise InvalidArgumentError(
                "TLSConfig: mutual TLS needs both certificate_chain and private_key"
            )
        if self.server_name is not None and (
            not isinstance(self.server_name, str) or not self.server_name
        ):
            raise InvalidArgumentError("TLSConfig.server_name must be a non-empty str or None")

    @classmethod
    def from_files(
        cls,
        ca: str | Path | None = None,
        cert: str | Path | None = None,
        key: str | Path | None = None,
        *,
        server_name: str | None = None,
    ) -> TLSConfig:
        """Read PEM files: ``ca`` (trusted roots), ``cert`` and ``key`` (for mutual TLS)."""

        def read(path: str | Path | None) -> bytes | None:
            return None if path is None else Path(path).read_bytes()

        return cls(
            root_certificates=read(ca),
            certificate_chain=read(cert),
            private_key=read(key),
            server_name=server_name,
        )

    @property
    def mutual(self) -> bool:
        """True when a client certificate is presented (mutual TLS)."""
        return self.certificate_chain is not None

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """The grpc credentials for a secure channel."""
        return grpc.ssl_channel_credentials(
            root_certificates=self.root_certificates,
            private_key=self.private_key,
            certificate_chain=self.certificate_chain,
        )

    def __repr__(self) -> str:
        key = "None" if self.private_key is None else "<hidden>"
        return (
            f"TLSConfig(root_certificates={_describe(self.root_certificates)}, "
            f"certificate_chain={_describe(self.certificate_chain)}, private_key={key}, "
            f"server_name={self.server_name!r})"
        )


@dataclass(frozen=True, slots=True)
class KeepAliveConfig:
    """HTTP/2 keepalive pings on the client's connection.

    A stock Go gRPC server (the rainbow server is one) enforces its default policy: a
    client may ping at most once every 5 minutes, and never while it has no call in
    flight; otherwise the server sends ``GOAWAY too_many_pings`` and drops the
    connection. The defaults stay inside that policy:

    - ``time=330``: ping after 5.5 minutes without activity on a connection with calls in
      flight (``None`` turns keepalive pings off);
    - ``timeout=20``: drop the connection if a ping is not answered within 20 s;
    - ``permit_without_calls=False``: never ping an idle connection;
    - ``max_pings_without_data=2``: at most two pings in a row without data (gRPC's own
      default), so a long quiet call never turns into a stream of pings.

    Lower ``time`` only for servers configured to allow it.
    """

    time: float | None = 330.0
    timeout: float = 20.0
    permit_without_calls: bool = False
    max_pings_without_data: int = 2

    def __post_init__(self) -> None:
        if self.time is not None and not _positive_finite(self.time):
            raise InvalidArgumentError("KeepAliveConfig.time must be a positive number or None")
        if not _positive_finite(self.timeout):
            raise InvalidArgumentError("KeepAliveConfig.timeout must be a positive number")
        if (
            isinstance(self.max_pings_without_data, bool)
            or not isinstance(self.max_pings_without_data, int)
            or self.max_pings_without_data < 0
        ):
            raise InvalidArgumentError("KeepAliveConfig.max_pings_without_data must be >= 0")

    def channel_options(self) -> list[tuple[str, int]]:
        """The grpc channel arguments for these settings."""
        if self.time is None:
            return [("grpc.keepalive_permit_without_calls", 0)]
        return [
            ("grpc.keepalive_time_ms", round(self.time * 1000)),
            ("grpc.keepalive_timeout_ms", round(self.timeout * 1000)),
            ("grpc.keepalive_permit_without_calls", int(self.permit_without_calls)),
            ("grpc.http2.max_pings_without_data", self.max_pings_without_data),
        ]


# A DNS name or IPv4 address: labels of letters, digits, '-' and '_' separated by dots.
_HOSTNAME = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?(\.[A-Za-z0-9_-]+)*\.?$")
_HOST_FORMS = "expected 'host:port', '[ipv6-address]:port' or 'unix:/path/to/socket'"


def parse_host(host: object) -> str:
    """Check a host string and return the gRPC target to dial.

    Accepted forms: ``name:port`` (DNS name or IPv4 address), ``[ipv6]:port``, and
    ``unix:/path`` (or ``unix:///path``). Raises :class:`InvalidArgumentError` with the
    reason otherwise; a missing port is an error rather than a silent default.
    """
    if not isinstance(host, str):
        raise InvalidArgumentError(f"host must be a str, not {type(host).__name__}")
    if not host or host != host.strip() or any(c.isspace() for c in host):
        raise InvalidArgumentError(f"invalid host {host!r}: {_HOST_FORMS}")
    if host.startswith("unix:"):
        path = host.removeprefix("unix:")
        if path.startswith("//"):
            path = path[2:]
        if not path:
            raise InvalidArgumentError(f"invalid host {host!r}: the unix socket path is empty")
        return host
    if "://" in host:
        raise InvalidArgumentError(
            f"invalid host {host!r}: give an address without a URL scheme; {_HOST_FORMS}"
        )
    name, sep, port_text = host.rpartition(":")
    if not sep or not name:
        raise InvalidArgumentError(
            f"invalid host {host!r}: the port is missing (for example {host}:50051)"
        )
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise InvalidArgumentError(f"invalid host {host!r}: port must be 1-65535")
    if name.startswith("["):
        if not name.endswith("]"):
            raise InvalidArgumentError(f"invalid host {host!r}: unclosed '[' in IPv6 address")
        try:
            ipaddress.IPv6Address(name[1:-1])
        except ValueError:
            raise InvalidArgumentError(
                f"invalid host {host!r}: {name[1:-1]!r} is not an IPv6 address"
            ) from None
        return host
    if ":" in name:
        raise InvalidArgumentError(
            f"invalid host {host!r}: put an IPv6 address in brackets, as in [::1]:50051"
        )
    if not _HOSTNAME.match(name):
        raise InvalidArgumentError(f"invalid host {host!r}: {name!r} is not a host name")
    return host
