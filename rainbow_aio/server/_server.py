"""The embedded rainbow server: ``RainbowServer`` runs the scheduler in this process."""

from __future__ import annotations

import ipaddress
import logging
import socket
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import grpc

from .. import _protocol as P
from .._proto import rainbow_pb2 as pb
from ._limits import CallGate, ServerLimits
from ._service import Servicer
from ._store import MEMORY, Store, StoreError

__all__ = ["RainbowServer", "ServerStartError", "ServerTLSConfig"]

log = logging.getLogger("rainbow_aio.server")

RPC_NAMES: Final = ("Register", "SubmitJob", "RequestJobs", "AcceptJobs", "Serial", "Stream")

PENDING_CALLS: Final = 20_000

_SERVER_OPTIONS: Final = [
    # gRPC binds with SO_REUSEPORT by default, which would let a second server share a
    # port already in use instead of failing; turn it off so "port in use" is an error.
    ("grpc.so_reuseport", 0),
    # Keepalive enforcement as the Go server's defaults (and grpc's): a client pinging
    # more often than every 5 minutes, or pinging with no call open, is sent GOAWAY
    # too_many_pings. Spelled out because clients are tested against this behaviour.
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 5 * 60 * 1000),
    ("grpc.http2.max_ping_strikes", 2),
    ("grpc.keepalive_permit_without_calls", 0),
    # Calls that have arrived but that the event loop has not picked up yet wait in
    # grpc's own queue. Past its default size (1,000, then refusals at random up to
    # 3,000) grpc answers them CANCELLED, which no client retries, so a burst of
    # submits would fail outright. A larger queue lets the server pick every call up
    # and answer those past ServerLimits with the retryable 'database is locked'. Each
    # waiting call costs a few KB; the queue never holds more than this many.
    ("grpc.server.max_pending_requests", PENDING_CALLS),
    ("grpc.server.max_pending_requests_hard_limit", PENDING_CALLS),
]


def _as_is(answer: bytes) -> bytes:
    """The "serializer" of answers that are serialized already."""
    return answer


def _handlers(servicer: Servicer) -> dict[str, grpc.RpcMethodHandler[Any, Any]]:
    """The six methods, as the generated ``add_RainbowSchedulerServicer_to_server`` would
    register them, except that RequestJobs answers arrive serialized (off the loop)."""

    def unary(method: Any, request: Any, serialize: Any) -> grpc.RpcMethodHandler[Any, Any]:
        return grpc.unary_unary_rpc_method_handler(
            method, request_deserializer=request.FromString, response_serializer=serialize
        )

    return {
        "Register": unary(
            servicer.Register, pb.RegisterRequest, pb.RegisterResponse.SerializeToString
        ),
        "SubmitJob": unary(
            servicer.SubmitJob, pb.SubmitJobRequest, pb.SubmitJobResponse.SerializeToString
        ),
        "RequestJobs": unary(servicer.RequestJobs, pb.RequestJobsRequest, _as_is),
        "AcceptJobs": unary(
            servicer.AcceptJobs, pb.AcceptJobsRequest, pb.AcceptJobsResponse.SerializeToString
        ),
        "Serial": unary(servicer.Serial, pb.Request, pb.Response.SerializeToString),
        "Stream": grpc.stream_stream_rpc_method_handler(
            servicer.Stream,
            request_deserializer=pb.Request.FromString,
            response_serializer=pb.Response.SerializeToString,
        ),
    }


class ServerStartError(RuntimeError):
    """The server could not start: bad address, port in use, unusable database, or an
    unsafe configuration. The message is one line and never contains a secret."""


@dataclass(frozen=True)
class ServerTLSConfig:
    """PEM certificate chain and private key for TLS; ``client_ca`` requires client
    certificates signed by that CA (mutual TLS)."""

    certificate_chain: bytes = field(repr=False)
    private_key: bytes = field(repr=False)
    client_ca: bytes | None = field(default=None, repr=False)

    def credentials(self) -> grpc.ServerCredentials:
        """The grpc credentials for the server's secure port."""
        return grpc.ssl_server_credentials(
            [(self.private_key, self.certificate_chain)],
            root_certificates=self.client_ca,
            require_client_auth=self.client_ca is not None,
        )


def split_address(address: str) -> tuple[str, int]:
    """Split ``HOST:PORT`` (``[v6]:PORT`` for IPv6) into host and port."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not port_text.isdigit() or int(port_text) > 65535:
        raise ServerStartError(f"bad address {address!r}: expected HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ServerStartError(f"bad address {address!r}: write IPv6 hosts as [HOST]:PORT")
    return host, int(port_text)


def is_loopback(host: str) -> bool:
    """True when ``host`` can only be reached from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def probe_bind(host: str, port: int) -> None:
    """Fail early, with the operating system's reason, when ``host:port`` cannot be bound.

    gRPC reports a failed bind only as "Failed to bind" (and logs to stderr); binding a
    plain socket first gives a clear message such as "Address already in use".
    """
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise ServerStartError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    for family, kind, proto, _, sockaddr in infos:
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(sockaddr)
            except OSError as exc:
                where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
                raise ServerStartError(f"cannot listen on {where}: {exc.strerror or exc}") from None


class RainbowServer:
    """A rainbow scheduler server running in this process, on ``grpc.aio`` and SQLite.

    It answers every call exactly as the Go server does (same status codes, details
    strings, job JSON), fixes the Go server's defects (SQL injection, case-insensitive
    names, lost jobs under load, plain-text secrets) and returns the real job id from
    SubmitJob.

    ``db`` is ``":memory:"`` (the default; gone when the server stops) or a file that
    keeps clusters, credentials and jobs across restarts; ``cleanup=True`` deletes the
    file first. ``address`` may use port 0: after :meth:`start`, :attr:`address` and
    :attr:`port` hold the real port. With the default registration secret the server
    only listens on loopback addresses unless ``allow_public_default_secret`` is set.
    ``limits`` bounds the calls in flight, the queued writes and the size of one
    listing (:class:`ServerLimits`; past the first two the server answers the
    retryable ``database is locked``).

        async with RainbowServer("127.0.0.1:0", secret="s3cret") as server:
            async with RainbowClient(server.address) as client:
                ...
    """

    def __init__(
        self,
        address: str = "127.0.0.1:0",
        *,
        db: str | Path = MEMORY,
        secret: str = P.DEFAULT_REGISTRATION_SECRET,
        cleanup: bool = False,
        tls: ServerTLSConfig | None = None,
        allow_public_default_secret: bool = False,
        limits: ServerLimits | None = None,
    ) -> None:
        self._requested = address
        self._host, self._port = split_address(address)
        self._db = db
        self._secret = secret
        self._cleanup = cleanup
        self._tls = tls
        self._allow_public_default_secret = allow_public_default_secret
        self._limits = ServerLimits() if limits is None else limits
        self._server: grpc.aio.Server | None = None
        self._stopping: grpc.aio.Server | None = None
        self._store: Store | None = None
        self._servicer: Servicer | None = None

    def __repr__(self) -> str:
        state = "running" if self._server is not None else "stopped"
        return f"<RainbowServer {self.address} db={str(self._db)!r} {state}>"

    @property
    def address(self) -> str:
        """``HOST:PORT`` to connect to (the real port once started)."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"{host}:{self._port}"

    @property
    def port(self) -> int:
        """The port to connect to (the real one once started, when 0 was asked for)."""
        return self._port

    @property
    def secret(self) -> str:
        """The registration secret clusters must present to register."""
        return self._secret

    @property
    def call_counts(self) -> Mapping[str, int]:
        """Calls served per RPC name (``"Register"``, ``"SubmitJob"``, ...), live view."""
        if self._servicer is None:
            return types.MappingProxyType(dict.fromkeys(RPC_NAMES, 0))
        return types.MappingProxyType(self._servicer.counts)

    @property
    def limits(self) -> ServerLimits:
        """The bounds on calls in flight, queued writes and answer size."""
        return self._limits

    @property
    def busy_answers(self) -> int:
        """Calls answered ``database is locked`` because the server was past a bound of
        :attr:`limits` (since the last start)."""
        return 0 if self._servicer is None else self._servicer.gate.refused

    @property
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self._server is not None

    async def start(self) -> None:
        """Open the database, bind the address and start serving.

        Raises :class:`ServerStartError` (one line, no secret in it) when the address is
        bad or in use, the database is unusable, or the default secret would be exposed
        on a non-loopback address.
        """
        if self._server is not None:
            raise ServerStartError("the server is already running")
        if (
            self._secret == P.DEFAULT_REGISTRATION_SECRET
            and not is_loopback(self._host)
            and not self._allow_public_default_secret
        ):
            raise ServerStartError(
                f"refusing to listen on non-loopback address {self._requested} with the "
                "default registration secret; set your own secret (--secret), or allow the "
                "default explicitly (--allow-default-secret / allow_public_default_secret)"
            )
        if not self._secret:
            raise ServerStartError("the registration secret must not be empty")
        probe_bind(self._host, self._port)
        log.info("creating 🌈️ server...")
        limits = self._limits
        store = Store(
            self._db,
            cleanup=self._cleanup,
            max_queued_writes=limits.max_queued_writes,
            max_answer_bytes=limits.max_response_bytes,
        )
        try:
            clusters = await store.open()
        except StoreError as exc:
            raise ServerStartError(f"cannot open database {str(self._db)!r}: {exc}") from None
        gate = CallGate(limits.max_calls_in_flight, limits.max_held_bytes)
        servicer = Servicer(store, self._secret, clusters, gate, limits.max_accept_ids)
        server = grpc.aio.server(
            options=[
                *_SERVER_OPTIONS,
                ("grpc.max_concurrent_streams", limits.max_streams_per_connection),
            ]
        )
        handlers = _handlers(servicer)
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(P.SERVICE, handlers),)
        )
        # (as the generated code does; grpc-stubs do not know this method yet)
        server.add_registered_method_handlers(P.SERVICE, handlers)  # type: ignore[attr-defined]
        bind = f"[{self._host}]:{self._port}" if ":" in self._host else self._requested
        try:
            try:
                if self._tls is not None:
                    port = server.add_secure_port(bind, self._tls.credentials())
                else:
                    port = server.add_insecure_port(bind)
            except RuntimeError as exc:
                raise ServerStartError(f"cannot listen on {self._requested}: {exc}") from None
            if not port:
                raise ServerStartError(f"cannot listen on {self._requested}")
            from .._version import __version__

            log.info("starting scheduler server: rainbow-aio %s", __version__)
            log.info(
                "limits: %d calls in flight holding %d bytes, %d queued writes, %d-byte "
                "answers, %d ids per accept, %d calls per connection",
                limits.max_calls_in_flight,
                limits.max_held_bytes,
                limits.max_queued_writes,
                limits.max_response_bytes,
                limits.max_accept_ids,
                limits.max_streams_per_connection,
            )
            await server.start()
        except BaseException:
            await server.stop(None)
            await store.close()
            raise
        self._port = port
        self._store, self._servicer, self._server = store, servicer, server
        log.info("server listening: %s", self.address)

    async def stop(self, grace: float | None = 5.0) -> None:
        """Stop accepting calls, let calls in flight finish (up to ``grace`` seconds,
        ``None`` cancels them at once), then close the database. Idempotent; called again
        while a stop waits out its grace, with less grace, it shortens that grace."""
        server, store = self._server or self._stopping, self._store
        self._server = None
        if server is not None:
            # a second stop (with less grace) reaches the grpc server the first one is
            # still stopping, so it can cut that grace short
            self._stopping = server
            try:
                await server.stop(grace)
            finally:
                self._stopping = None
            if self.busy_answers:
                log.info("%d calls were answered 'database is locked' (busy)", self.busy_answers)
        if store is not None:
            await store.close()
            self._store = None

    async def wait_for_termination(self) -> None:
        """Block until the server stops."""
        if self._server is not None:
            await self._server.wait_for_termination()

    async def __aenter__(self) -> RainbowServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()
