"""RainbowClient: the asyncio client for a rainbow scheduler server.

One client owns one ``grpc.aio`` channel, made inside the running event loop by
``connect()`` (or ``async with``) and shared by every call and every poller. Every call
has a deadline; failed attempts are repeated only where that is safe (``_retry.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Container, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, TypeVar, Unpack

import grpc
import grpc.aio
from google.protobuf.timestamp_pb2 import Timestamp

from . import _accepters
from . import _protocol as P
from ._config import (
    KeepAliveConfig,
    RetryPolicy,
    SubmitRetry,
    TLSConfig,
    parse_host,
    positive_seconds,
)
from ._exceptions import (
    ClientClosedError,
    ClusterExistsError,
    InvalidArgumentError,
    ProtocolError,
    RainbowError,
    TLSError,
    error_from_status,
)
from ._models import AcceptResult, AcceptStatus, Job, JobListing, Registration
from ._outcome import CallOutcome
from ._proto import rainbow_pb2 as pb
from ._retry import attempt_outcome, build_retrying, should_retry
from ._telemetry import CallSpan, Telemetry
from ._telemetry import load as load_telemetry

if TYPE_CHECKING:
    from .poller import Poller, PollerGroup, PollerKwargs, PollerOptions

__all__ = ["RainbowClient"]

_log = logging.getLogger(__name__)

_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")

_PATH: Final = f"/{P.SERVICE}/"
DEFAULT_MAX_RESPONSE_BYTES: Final = 256 << 20
DEFAULT_TIMEOUT: Final = 30.0
DEFAULT_ATTEMPT_TIMEOUT: Final = 10.0
# After connect() gave up waiting, one fail-fast call asks grpc why (its last error).
_DIAGNOSE_TIMEOUT: Final = 0.25
# a call that failed this close to its deadline is said to have spent its budget
_BUDGET_SLACK: Final = 0.005


@dataclass(slots=True)
class _Methods:
    """The typed multicallables of one channel."""

    register: grpc.aio.UnaryUnaryMultiCallable[pb.RegisterRequest, pb.RegisterResponse]
    submit_job: grpc.aio.UnaryUnaryMultiCallable[pb.SubmitJobRequest, pb.SubmitJobResponse]
    request_jobs: grpc.aio.UnaryUnaryMultiCallable[pb.RequestJobsRequest, pb.RequestJobsResponse]
    accept_jobs: grpc.aio.UnaryUnaryMultiCallable[pb.AcceptJobsRequest, pb.AcceptJobsResponse]
    serial: grpc.aio.UnaryUnaryMultiCallable[pb.Request, pb.Response]
    stream: grpc.aio.StreamStreamMultiCallable[pb.Request, pb.Response]

    @classmethod
    def bind(cls, channel: grpc.aio.Channel) -> _Methods:
        def unary(name: str, req: Any, resp: Any) -> Any:
            return channel.unary_unary(_PATH + name, req.SerializeToString, resp.FromString)

        return cls(
            register=unary("Register", pb.RegisterRequest, pb.RegisterResponse),
            submit_job=unary("SubmitJob", pb.SubmitJobRequest, pb.SubmitJobResponse),
            request_jobs=unary("RequestJobs", pb.RequestJobsRequest, pb.RequestJobsResponse),
            accept_jobs=unary("AcceptJobs", pb.AcceptJobsRequest, pb.AcceptJobsResponse),
            serial=unary("Serial", pb.Request, pb.Response),
            stream=channel.stream_stream(
                _PATH + "Stream", pb.Request.SerializeToString, pb.Response.FromString
            ),
        )


class RainbowClient:
    """An asyncio client for one rainbow scheduler server.

    ::

        async with RainbowClient("localhost:50051") as client:
            reg = await client.register("keebler", "chocolate-cookies")

    Arguments:
        host: ``"name:port"``, ``"[ipv6]:port"`` or ``"unix:/path"``; checked here.
        tls: TLS settings; ``None`` (default) is plaintext.
        retry: attempts and backoff for retryable failures (see ``_retry.py`` for which
            failures each RPC retries).
        keepalive: HTTP/2 keepalive; the default suits a stock Go gRPC server.
        timeout: each call's whole time budget in seconds, retries and backoff included
            (default 30). A call's own ``timeout=`` replaces it for that call.
        attempt_timeout: the deadline of one attempt within a call (default 10); an
            attempt never runs past what is left of the call's budget.
        connect_timeout: how long ``connect()`` waits for the server before it raises
            :class:`UnavailableError` (or :class:`TLSError`).
        submit_retry: ``"safe"`` (default) retries SubmitJob only when nothing can have
            been written; ``"at_least_once"`` also after lost answers (may duplicate).
        max_response_bytes: the largest answer accepted, in bytes (default 256 MiB).
            grpc's own default, 4 MiB, is too small for a full listing of a large
            backlog or for a few large jobs (the job JSON can be six times the size of
            a command full of ``&``), which would fail every listing of that cluster.
        channel_options: extra grpc channel arguments, applied last.
        interceptors: ``grpc.aio`` client interceptors, passed to the channel as they are
            (your own auth headers, logging or tracing); they see every attempt.
        telemetry: report to OpenTelemetry (a span per call, the pollers' metrics)
            when ``opentelemetry-api`` is installed (the ``otel`` extra); it goes to the
            global tracer and meter providers, no-ops until an SDK is configured.
            ``False`` turns it off for this client and its pollers.

    ``timeout`` always means a call's whole budget: with the server down, a client built
    with ``timeout=2`` fails each call after about 2 seconds. When the connection is down,
    an attempt first waits up to ``connect_timeout`` (within the budget) for it, nothing
    being sent meanwhile, so retries span a server restart instead of failing within
    grpc's reconnect backoff; calls never use grpc's unbounded ``wait_for_ready``.

    Every error a call raises carries ``outcome`` (:class:`CallOutcome`): whether the
    server certainly did not act, may have acted, or acted. Calls raise
    :class:`ClientClosedError` before ``connect()`` and after ``close()``.
    """

    def __init__(
        self,
        host: str = P.DEFAULT_HOST,
        *,
        tls: TLSConfig | None = None,
        retry: RetryPolicy | None = None,
        keepalive: KeepAliveConfig | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        attempt_timeout: float = DEFAULT_ATTEMPT_TIMEOUT,
        connect_timeout: float = 5.0,
        submit_retry: SubmitRetry = "safe",
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        channel_options: Iterable[tuple[str, int | str]] = (),
        interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
        telemetry: bool = True,
    ) -> None:
        self._target = parse_host(host)
        if tls is not None and not isinstance(tls, TLSConfig):
            raise InvalidArgumentError("tls must be a TLSConfig or None")
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise InvalidArgumentError("retry must be a RetryPolicy or None")
        if keepalive is not None and not isinstance(keepalive, KeepAliveConfig):
            raise InvalidArgumentError("keepalive must be a KeepAliveConfig or None")
        if submit_retry not in ("safe", "at_least_once"):
            raise InvalidArgumentError("submit_retry must be 'safe' or 'at_least_once'")
        self._host = host
        self._tls = tls
        self._retry = retry or RetryPolicy()
        self._keepalive = keepalive or KeepAliveConfig()
        self._timeout = positive_seconds("timeout", timeout)
        self._attempt_timeout = positive_seconds("attempt_timeout", attempt_timeout)
        self._connect_timeout = positive_seconds("connect_timeout", connect_timeout)
        self._submit_retry: SubmitRetry = submit_retry
        if (
            isinstance(max_response_bytes, bool)
            or not isinstance(max_response_bytes, int)
            or not 0 < max_response_bytes <= P.INT32_MAX
        ):
            raise InvalidArgumentError(f"max_response_bytes must be an int from 1 to {P.INT32_MAX}")
        self._max_response_bytes = max_response_bytes
        self._extra_options = list(channel_options)
        self._interceptors = list(interceptors)
        if not isinstance(telemetry, bool):
            raise InvalidArgumentError("telemetry must be True or False")
        self._telemetry: Telemetry | None = load_telemetry() if telemetry else None
        for interceptor in self._interceptors:
            if not isinstance(interceptor, grpc.aio.ClientInterceptor):
                raise InvalidArgumentError(
                    "interceptors must be grpc.aio client interceptors, not "
                    f"{type(interceptor).__name__}"
                )

        self._channel: grpc.aio.Channel | None = None
        self._methods: _Methods | None = None
        self._closed = False
        self._close_task: asyncio.Task[None] | None = None
        # made in the loop by the first connect(); set by close(), which ends a connect()
        # still waiting, retry backoffs and waits for a connection
        self._closing: asyncio.Event | None = None
        self._connect_lock: asyncio.Lock | None = None

    # -- properties -------------------------------------------------------------------

    @property
    def host(self) -> str:
        """The server address this client dials, as given."""
        return self._host

    @property
    def tls(self) -> TLSConfig | None:
        """The TLS settings, or None for plaintext."""
        return self._tls

    @property
    def retry_policy(self) -> RetryPolicy:
        """How failed calls are repeated (the ``retry=`` given, or the default)."""
        return self._retry

    @property
    def timeout(self) -> float:
        """Each call's whole time budget in seconds (retries included), unless the call
        gives its own ``timeout=``."""
        return self._timeout

    @property
    def attempt_timeout(self) -> float:
        """The deadline of one attempt, in seconds (never past the call's budget)."""
        return self._attempt_timeout

    @property
    def telemetry_enabled(self) -> bool:
        """True when this client and its pollers report to OpenTelemetry."""
        return self._telemetry is not None

    @property
    def connected(self) -> bool:
        """True between a successful ``connect()`` and ``close()``."""
        return self._methods is not None and not self._closed

    @property
    def closed(self) -> bool:
        """True once ``close()`` has been called (calls then raise ClientClosedError)."""
        return self._closed

    def __repr__(self) -> str:
        state = "closed" if self._closed else "connected" if self._methods else "not connected"
        mode = "plaintext" if self._tls is None else "mtls" if self._tls.mutual else "tls"
        return f"RainbowClient(host={self._host!r}, {mode}, {state})"

    # -- lifecycle --------------------------------------------------------------------

    async def __aenter__(self) -> RainbowClient:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def connect(self) -> None:
        """Open the channel and wait until the server answers HTTP/2.

        Raises :class:`UnavailableError` naming the host (and, unless something there
        took the connection and closed it, how to start a server) or :class:`TLSError`
        when the TLS handshake fails, if no connection is up within ``connect_timeout``
        seconds.
        Does nothing when already connected; a closed client cannot reconnect. A
        ``close()`` while it waits ends the wait: it then closes the channel it was
        opening and raises :class:`ClientClosedError`.
        """
        if self._closed:
            raise ClientClosedError("the client is closed; create a new RainbowClient")
        if self._connect_lock is None:
            self._connect_lock = asyncio.Lock()
            self._closing = asyncio.Event()
        async with self._connect_lock:
            if self._methods is not None:
                return
            channel = self._make_channel()
            try:
                await self._wait_ready(channel)
                if self._closed:
                    raise ClientClosedError("the client was closed while it was connecting")
            except BaseException:
                await channel.close(None)
                raise
            # only ever set here, under the lock, on a client not closed
            self._channel = channel
            self._methods = _Methods.bind(channel)
        _log.info("connected to rainbow server at %s (%s)", self._host, self._mode())

    async def close(self, grace: float | None = 5.0) -> None:
        """Close the channel.

        New calls raise :class:`ClientClosedError` at once; calls in flight get up to
        ``grace`` seconds to finish (``None``: none) and are then cancelled, raising
        :class:`ClientClosedError`. Retries waiting for their next attempt stop, and a
        ``connect()`` still waiting for the server gives up and closes what it opened
        before this returns. Safe to call more than once and from several tasks.
        """
        self._closed = True
        if self._closing is not None:
            self._closing.set()
        lock = self._connect_lock
        if lock is not None and lock.locked():
            async with lock:  # a connect() in progress sees the client closed and gives up
                pass
        if self._channel is None:
            return
        if self._close_task is None:
            _log.debug("closing the channel to %s (grace %s s)", self._host, grace)
            self._close_task = asyncio.create_task(self._channel.close(grace))
        await asyncio.shield(self._close_task)

    def _mode(self) -> str:
        return "plaintext" if self._tls is None else "mutual TLS" if self._tls.mutual else "TLS"

    def _make_channel(self) -> grpc.aio.Channel:
        options: list[tuple[str, int | str]] = [
            # this channel's own connection, never shared with other channels to the host
            ("grpc.use_local_subchannel_pool", 1),
            # reconnect at least as often as the retry policy's longest backoff, so a
            # retry after a server restart finds a fresh connection attempt
            ("grpc.initial_reconnect_backoff_ms", 200),
            ("grpc.max_reconnect_backoff_ms", max(1000, round(self._retry.max_backoff * 1000))),
            ("grpc.primary_user_agent", "rainbow-aio"),
            ("grpc.max_receive_message_length", self._max_response_bytes),
            *self._keepalive.channel_options(),
        ]
        if self._tls is not None and self._tls.server_name:
            options.append(("grpc.ssl_target_name_override", self._tls.server_name))
        options.extend(self._extra_options)
        interceptors = self._interceptors or None
        if self._tls is None:
            return grpc.aio.insecure_channel(
                self._target, options=options, interceptors=interceptors
            )
        creds = self._tls.channel_credentials()
        return grpc.aio.secure_channel(
            self._target, creds, options=options, interceptors=interceptors
        )

    async def _wait_ready(self, channel: grpc.aio.Channel) -> None:
        """Wait for READY; give up at the connect timeout, or at once on a TLS failure.

        grpc keeps the reason of a failed connection attempt to itself; a fail-fast call
        made while the channel is in TRANSIENT_FAILURE returns it (refused, reset, TLS
        handshake...). A refused or reset connection may be a server still starting, so
        only a TLS failure (a configuration problem) ends the wait early.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._connect_timeout
        serial = _Methods.bind(channel).serial
        last_error = "no connection attempt finished"
        state = channel.get_state(try_to_connect=True)
        while state is not grpc.ChannelConnectivity.READY:
            if state is grpc.ChannelConnectivity.TRANSIENT_FAILURE:
                try:
                    await serial(_serial_request("connect"), timeout=_DIAGNOSE_TIMEOUT)
                    return  # the connection came up in the meantime
                except grpc.aio.AioRpcError as exc:
                    last_error = exc.details() or exc.code().name
                error = self._connect_error(last_error)
                if isinstance(error, TLSError):
                    raise error
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            if await self._until_closing(channel.wait_for_state_change(state), remaining):
                return  # closed meanwhile: connect() sees it and gives up
            state = channel.get_state(try_to_connect=True)
        else:
            return
        raise self._connect_error(
            f"no connection within {self._connect_timeout:g} s (channel {state.name}): {last_error}"
        )

    def _connect_error(self, details: str) -> RainbowError:
        return error_from_status(
            grpc.StatusCode.UNAVAILABLE,
            details,
            rpc="connect",
            host=self._host,
            tls=self._tls is not None,
        )

    # -- the calls --------------------------------------------------------------------

    async def register(
        self, cluster: str, secret: str, *, timeout: float | None = None
    ) -> Registration:
        """Register ``cluster`` with the server's registration ``secret``.

        Returns the cluster's token (for submitters) and secret (for the cluster itself).
        Raises :class:`ClusterExistsError` when the name is taken (the credentials were
        shown once, at the first registration, and cannot be shown again) and
        :class:`DeniedError` for a wrong registration secret. Repeated only when nothing
        can have been written, so a lost answer never turns into "exists": an error with
        ``outcome`` UNKNOWN means the cluster may be registered with credentials nobody
        saw.
        """
        _check_name("cluster", cluster)
        _check_str("secret", secret)
        request = pb.RegisterRequest(name=cluster, secret=secret, sent=_now())
        resp, _ = await self._unary(
            "Register", lambda m: m.register, request, cluster=cluster, timeout=timeout
        )
        status = pb.RegisterResponse.ResultType
        if resp.status == status.REGISTER_EXISTS:
            raise ClusterExistsError(
                f"cluster {cluster!r} is already registered; its token and secret were "
                "shown only when it was first registered and cannot be shown again",
                rpc="Register",
                cluster=cluster,
            )
        if resp.status != status.REGISTER_SUCCESS or not resp.token or not resp.secret:
            raise _unexpected("Register", cluster, status.Name(resp.status))
        _log.info("registered cluster %r", cluster)
        return Registration(cluster=cluster, token=resp.token, secret=resp.secret)

    async def submit_job(
        self,
        cluster: str,
        token: str,
        command: str,
        *,
        nodes: int = 1,
        tasks: int = 0,
        name: str = "",
        timeout: float | None = None,
    ) -> int | None:
        """Submit ``command`` to ``cluster``, authorised by the cluster's ``token``.

        Returns the new job's id, or None when the server does not say it (the Go server
        always answers 0). By default the call is repeated only when nothing can have
        been written, so a job is never stored twice (see ``submit_retry``).
        Raises :class:`DeniedError` (wrong token or unknown cluster) and
        :class:`MissingCredentialError` (empty token).
        """
        _check_name("cluster", cluster)
        _check_str("token", token)
        _check_name("command", command)
        _check_str("name", name)
        _check_int("nodes", nodes, minimum=1)
        _check_int("tasks", tasks, minimum=0)
        request = pb.SubmitJobRequest(
            name=name,
            cluster=cluster,
            token=token,
            nodes=nodes,
            tasks=tasks,
            command=command,
            sent=_now(),
        )
        resp, _ = await self._unary(
            "SubmitJob", lambda m: m.submit_job, request, cluster=cluster, timeout=timeout
        )
        if resp.status != pb.SubmitJobResponse.ResultType.SUBMIT_SUCCESS:
            raise _unexpected(
                "SubmitJob", cluster, pb.SubmitJobResponse.ResultType.Name(resp.status)
            )
        return resp.jobid or None

    async def request_jobs(
        self,
        cluster: str,
        secret: str,
        max_jobs: int | None = None,
        *,
        timeout: float | None = None,
    ) -> list[Job]:
        """List up to ``max_jobs`` (None or 0: all) jobs waiting for ``cluster``, lowest id first.

        Listing claims nothing: the same jobs come back until they are accepted. Returns
        ``[]`` when none wait. Repeated after lost connections, deadlines and a busy
        server. Raises :class:`DeniedError` and :class:`MissingCredentialError`, and
        :class:`ProtocolError` when a job is not valid job JSON.
        """
        listing = await self._listing(cluster, secret, max_jobs, timeout=timeout)
        return [
            Job.from_json(job_id, listing[job_id], cluster=cluster) for job_id in sorted(listing)
        ]

    async def request_listing(
        self,
        cluster: str,
        secret: str,
        max_jobs: int | None = None,
        *,
        skip: Container[int] = (),
        timeout: float | None = None,
    ) -> JobListing:
        """``request_jobs`` for code that lists the same jobs again and again (pollers).

        Returns every id listed and the parsed jobs whose ids are not in ``skip`` (both
        ascending): jobs already known are not parsed again. ``skip`` is asked once per
        listed id, right after the answer arrives. Same checks, retries and errors as
        ``request_jobs``.
        """
        listing = await self._listing(cluster, secret, max_jobs, timeout=timeout)
        ids = tuple(sorted(listing))
        jobs = [
            Job.from_json(job_id, listing[job_id], cluster=cluster)
            for job_id in ids
            if job_id not in skip
        ]
        return JobListing(ids=ids, jobs=jobs)

    async def _listing(
        self, cluster: str, secret: str, max_jobs: int | None, *, timeout: float | None
    ) -> Mapping[int, str]:
        """One RequestJobs (checked, retried, errors mapped): the answer's id -> JSON map."""
        _check_name("cluster", cluster)
        _check_str("secret", secret)
        if max_jobs is not None:
            _check_int("max_jobs", max_jobs, minimum=0)  # 0 means all, as on the wire
        request = pb.RequestJobsRequest(
            cluster=cluster, secret=secret, maxJobs=max_jobs or 0, sent=_now()
        )
        resp, _ = await self._unary(
            "RequestJobs", lambda m: m.request_jobs, request, cluster=cluster, timeout=timeout
        )
        status = pb.RequestJobsResponse.ResultType
        if resp.status not in (status.REQUEST_JOBS_SUCCESS, status.REQUEST_JOBS_NORESULTS):
            raise _unexpected("RequestJobs", cluster, status.Name(resp.status))
        return resp.jobs

    async def accept_jobs(
        self,
        cluster: str,
        secret: str,
        job_ids: Iterable[int],
        *,
        timeout: float | None = None,
    ) -> AcceptResult:
        """Claim jobs for ``cluster``: the server deletes them, so nobody else can.

        ``SUCCESS``: this call took every id. ``PARTIAL``: it took some and not others
        (someone else took them, or they never existed); the server does not say which.
        ``UNCERTAIN``: the call was repeated after an attempt that may have reached the
        server, and the repeat said PARTIAL: the earlier attempt may have taken them.
        Ids must be distinct positive int32 values. Raises :class:`DeniedError` and
        :class:`MissingCredentialError`; an error's ``outcome`` says whether the ids may
        have been taken (UNKNOWN) or certainly were not (NOT_APPLIED).
        """
        _check_name("cluster", cluster)
        _check_str("secret", secret)
        ids = _check_job_ids(job_ids)
        request = pb.AcceptJobsRequest(cluster=cluster, secret=secret, jobids=ids, sent=_now())
        # counted as an accepter of the cluster while it runs, so that no poller of this
        # process infers from a PARTIAL answer that a job this call took is its own
        with _accepters.accepting(cluster):
            resp, trace = await self._unary(
                "AcceptJobs", lambda m: m.accept_jobs, request, cluster=cluster, timeout=timeout
            )
        status = pb.AcceptJobsResponse.ResultType
        if resp.status == status.RESULT_TYPE_SUCCESS:
            outcome = AcceptStatus.SUCCESS
        elif resp.status == status.RESULT_TYPE_PARTIAL:
            outcome = AcceptStatus.UNCERTAIN if trace.maybe_ran_before else AcceptStatus.PARTIAL
        else:
            raise _unexpected("AcceptJobs", cluster, status.Name(resp.status))
        return AcceptResult(job_ids=ids, status=outcome, attempts=trace.attempts)

    async def ping(self, *, timeout: float | None = None) -> float:
        """Round-trip time of one Serial call, in seconds (the last attempt's)."""
        request_id = uuid.uuid4().hex
        request = _serial_request(request_id)
        resp, trace = await self._unary(
            "Serial", lambda m: m.serial, request, cluster=None, timeout=timeout
        )
        if resp.request_id != request_id:
            raise ProtocolError(
                "the server's Serial answer does not echo the request id", rpc="Serial"
            )
        return trace.last_rtt

    async def stream_ping(self, count: int = 1, *, timeout: float | None = None) -> list[int]:
        """Send ``count`` messages over one Stream call, one at a time.

        Returns the server's message counter from each answer, in order (each answer
        proves the server processed one message). The server ends the stream with
        UNKNOWN ``failed to receive: EOF`` after the client stops sending; that is the
        normal end and not an error. Not retried.
        """
        telemetry = self._telemetry
        if telemetry is None or not telemetry.tracing:
            return await self._stream_ping(count, timeout)
        with telemetry.call("Stream", None, self._host) as span:
            try:
                counts = await self._stream_ping(count, timeout)
            except RainbowError as error:
                span.finish(
                    attempts=1,
                    code=None if error.code is None else error.code.value[0],
                    outcome=error.outcome,
                    error=type(error).__name__,
                )
                raise
            except asyncio.CancelledError:
                span.cancelled(attempts=1)
                raise
            span.finish(attempts=1, code=None, outcome=CallOutcome.APPLIED, error=None)
            return counts

    async def _stream_ping(self, count: int, timeout: float | None) -> list[int]:
        _check_int("count", count, minimum=1)
        methods = self._require_methods("Stream", None)
        budget = self._budget(timeout)
        deadline = time.monotonic() + budget
        await self._wait_connected("Stream", None, min(self._connect_timeout, budget))
        remaining = max(deadline - time.monotonic(), 0.001)
        prefix = uuid.uuid4().hex
        call = methods.stream(None, timeout=min(self._attempt_timeout, remaining))
        counts: list[int] = []
        try:
            for i in range(count):
                request_id = f"{prefix}-{i}"
                await call.write(_serial_request(request_id))
                resp = await call.read()
                if not isinstance(resp, pb.Response):  # grpc.aio.EOF
                    raise ProtocolError("the server ended the stream early", rpc="Stream")
                counts.append(resp.message_count)
            await call.done_writing()
            if isinstance(await call.read(), pb.Response):
                raise ProtocolError("the server sent an unrequested answer", rpc="Stream")
        except grpc.aio.AioRpcError as exc:
            normal_end = (
                exc.code() == grpc.StatusCode.UNKNOWN and exc.details() == P.DETAILS_STREAM_EOF
            )
            if normal_end and len(counts) == count:
                return counts
            raise self._map(exc, "Stream", None, attempts=1) from exc
        except asyncio.CancelledError:
            self._raise_if_closed_under("Stream", None)
            raise
        finally:
            call.cancel()
        return counts

    # -- pollers ----------------------------------------------------------------------

    def poller(
        self,
        cluster: str,
        secret: str,
        options: PollerOptions | None = None,
        **overrides: Unpack[PollerKwargs],
    ) -> Poller:
        """A :class:`~rainbow_aio.Poller` for ``cluster`` over this client's channel.

        Options come as a :class:`~rainbow_aio.PollerOptions`, as keywords (the fields
        of ``PollerOptions``), or both (keywords win)."""
        from .poller import Poller

        return Poller(self, cluster, secret, options, **overrides)

    def poll_many(
        self,
        clusters: Mapping[str, str],
        options: PollerOptions | None = None,
        *,
        max_concurrent_polls: int = 128,
        idle_polls_per_second: float | None = 500.0,
        **overrides: Unpack[PollerKwargs],
    ) -> PollerGroup:
        """A :class:`~rainbow_aio.PollerGroup` polling several clusters (name -> secret),
        with the options of :meth:`poller` for every cluster, at most
        ``max_concurrent_polls`` polls in flight and at most ``idle_polls_per_second``
        idle polls a second for the whole group (see :class:`~rainbow_aio.PollerGroup`)."""
        from .poller import PollerGroup

        return PollerGroup(
            self,
            clusters,
            options,
            max_concurrent_polls=max_concurrent_polls,
            idle_polls_per_second=idle_polls_per_second,
            **overrides,
        )

    # -- machinery --------------------------------------------------------------------

    def _require_methods(self, rpc: str, cluster: str | None) -> _Methods:
        if self._closed:
            raise ClientClosedError("the client is closed", rpc=rpc, cluster=cluster)
        if self._methods is None:
            raise ClientClosedError(
                "the client is not connected: use 'async with RainbowClient(...)' or "
                "await client.connect() first",
                rpc=rpc,
                cluster=cluster,
            )
        return self._methods

    def _budget(self, timeout: float | None) -> float:
        if timeout is None:
            return self._timeout
        return positive_seconds("timeout", timeout)

    def _map(
        self, exc: grpc.aio.AioRpcError, rpc: str, cluster: str | None, *, attempts: int | None
    ) -> RainbowError:
        return error_from_status(
            exc.code(),
            exc.details(),
            rpc=rpc,
            cluster=cluster,
            host=self._host,
            attempts=attempts,
            tls=self._tls is not None,
        )

    def _raise_if_closed_under(self, rpc: str, cluster: str | None) -> None:
        """Turn grpc's cancellation of in-flight calls by close() into ClientClosedError.

        A CancelledError that is really a cancellation of the calling task propagates.
        """
        task = asyncio.current_task()
        if self._closed and (task is None or task.cancelling() == 0):
            raise ClientClosedError(
                "the client was closed while the call was in flight; the server may have "
                "acted on it",
                rpc=rpc,
                cluster=cluster,
                outcome=CallOutcome.UNKNOWN,
            ) from None

    async def _wait_connected(self, rpc: str, cluster: str | None, limit: float) -> None:
        """Wait up to ``limit`` seconds for the channel to be READY before sending.

        Without this, every attempt made while grpc waits out its reconnect backoff
        would fail at once and use up the retry policy in a fraction of a second. If the
        channel is still connecting at the end, the attempt fails as "not connected"
        without sending anything; in TRANSIENT_FAILURE it is sent anyway and fails fast
        with grpc's own reason (refused, reset, TLS...).
        """
        channel, closing = self._channel, self._closing
        assert channel is not None
        assert closing is not None
        if channel.get_state(try_to_connect=True) is grpc.ChannelConnectivity.READY:
            return
        await self._until_closing(channel.channel_ready(), limit)
        self._require_methods(rpc, cluster)  # closed meanwhile: ClientClosedError
        state = channel.get_state()
        if state in (grpc.ChannelConnectivity.READY, grpc.ChannelConnectivity.TRANSIENT_FAILURE):
            return
        raise error_from_status(
            grpc.StatusCode.UNAVAILABLE,
            f"no connection within {limit:.3g} s (channel {state.name}); nothing was sent",
            rpc=rpc,
            cluster=cluster,
            host=self._host,
            tls=self._tls is not None,
        )

    async def _until_closing(self, waited: Awaitable[object], limit: float) -> bool:
        """Await ``waited`` for at most ``limit`` seconds, or until the client is closed
        (then True). ``waited`` is cancelled if it has not finished."""
        closing = self._closing
        assert closing is not None
        work = asyncio.ensure_future(waited)
        closed = asyncio.ensure_future(closing.wait())
        try:
            await asyncio.wait({work, closed}, timeout=limit, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in (work, closed):
                waiter.cancel()
            await asyncio.gather(work, closed, return_exceptions=True)
        return closing.is_set()

    async def _sleep(self, seconds: float) -> None:
        """Backoff sleep that ends early when the client is closed."""
        closing = self._closing
        if closing is None:
            await asyncio.sleep(seconds)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(closing.wait(), seconds)

    def _final(
        self,
        error: RainbowError,
        rpc: str,
        cluster: str | None,
        trace: _Trace,
        *,
        budget: float,
        deadline: float,
    ) -> RainbowError:
        """The error a call ends with: mapped again, by the one mapping function, so that
        it names the host, the attempts made and a budget that ran out, with the whole
        call's outcome (UNKNOWN as soon as one attempt may have reached the server)."""
        outcome = CallOutcome.UNKNOWN if trace.maybe_ran_before else error.outcome
        if error.code is not None:
            spent = time.monotonic() >= deadline - _BUDGET_SLACK
            error = error_from_status(
                error.code,
                error.details,
                rpc=rpc,
                cluster=cluster,
                host=self._host,
                attempts=trace.attempts,
                tls=self._tls is not None,
                budget=budget if spent else None,
            )
        error.outcome = outcome
        return error

    async def _unary(
        self,
        rpc: str,
        pick: Callable[[_Methods], grpc.aio.UnaryUnaryMultiCallable[_Req, _Resp]],
        request: _Req,
        *,
        cluster: str | None,
        timeout: float | None,
    ) -> tuple[_Resp, _Trace]:
        """Send one unary call with the deadline and retries its RPC is allowed (in a span
        of its own when telemetry is on)."""
        telemetry = self._telemetry
        if telemetry is None or not telemetry.tracing:
            return await self._call(rpc, pick, request, cluster=cluster, timeout=timeout)
        with telemetry.call(rpc, cluster, self._host) as span:
            try:
                resp, trace = await self._call(
                    rpc, pick, request, cluster=cluster, timeout=timeout, span=span
                )
            except RainbowError as error:
                span.finish(
                    attempts=error.attempts or span.attempts,
                    code=None if error.code is None else error.code.value[0],
                    outcome=error.outcome,
                    error=type(error).__name__,
                )
                raise
            except asyncio.CancelledError:
                span.cancelled(attempts=span.attempts + 1)
                raise
            span.finish(
                attempts=trace.attempts,
                code=grpc.StatusCode.OK.value[0],
                outcome=CallOutcome.APPLIED,
                error=None,
            )
            return resp, trace

    async def _call(
        self,
        rpc: str,
        pick: Callable[[_Methods], grpc.aio.UnaryUnaryMultiCallable[_Req, _Resp]],
        request: _Req,
        *,
        cluster: str | None,
        timeout: float | None,
        span: CallSpan | None = None,
    ) -> tuple[_Resp, _Trace]:
        self._require_methods(rpc, cluster)
        budget = self._budget(timeout)
        deadline = time.monotonic() + budget
        trace = _Trace()

        async def attempt() -> _Resp:
            method = pick(self._require_methods(rpc, cluster))
            trace.attempts += 1
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                spent = error_from_status(
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    "no time left for another attempt",
                    rpc=rpc,
                    cluster=cluster,
                    budget=budget,
                )
                spent.outcome = CallOutcome.NOT_APPLIED  # this attempt sent nothing
                raise spent
            await self._wait_connected(rpc, cluster, min(self._connect_timeout, remaining))
            remaining = max(deadline - time.monotonic(), 0.001)
            started = time.perf_counter()
            try:
                resp = await method(request, timeout=min(self._attempt_timeout, remaining))
            except grpc.aio.AioRpcError as exc:
                error = self._map(exc, rpc, cluster, attempts=None)
                outcome = attempt_outcome(error)
                if outcome.may_have_acted:
                    trace.maybe_ran_before = True
                if span is not None:
                    span.attempt_failed(exc.code().value[0], outcome, type(error).__name__)
                raise error from exc
            except asyncio.CancelledError:
                trace.maybe_ran_before = True
                self._raise_if_closed_under(rpc, cluster)
                raise
            trace.last_rtt = time.perf_counter() - started
            return resp

        def retry_if(error: BaseException) -> bool:
            return should_retry(rpc, error, submit_retry=self._submit_retry)

        try:
            # The first attempt goes out directly: building a tenacity retrier costs
            # more than a local call, and most calls never need one.
            return await attempt(), trace
        except RainbowError as error:
            if not retry_if(error) or self._retry.max_attempts < 2:
                raise self._final(
                    error, rpc, cluster, trace, budget=budget, deadline=deadline
                ) from error.__cause__
            failed_first: list[BaseException] = [error]

        async def replay_first_then_attempt() -> _Resp:
            # tenacity sees the first failure as its attempt 1, so the attempt count and
            # the backoff schedule are the policy's, as if it had made that attempt.
            if failed_first:
                raise failed_first.pop()
            return await attempt()

        retrying = build_retrying(
            self._retry,
            rpc=rpc,
            budget=max(deadline - time.monotonic(), 0.0),
            retry_if=retry_if,
            sleep=self._sleep,
        )
        try:
            resp: _Resp = await retrying(replay_first_then_attempt)
        except RainbowError as error:
            raise self._final(
                error, rpc, cluster, trace, budget=budget, deadline=deadline
            ) from error.__cause__
        return resp, trace


@dataclass(slots=True)
class _Trace:
    """What happened during one call's attempts."""

    attempts: int = 0
    # an attempt that did not succeed may have reached the server (outcome UNKNOWN)
    maybe_ran_before: bool = False
    last_rtt: float = 0.0


# -- helpers -----------------------------------------------------------------------------


def _now() -> Timestamp:
    # Timestamp.GetCurrentTime() does the same in Python, at four times the cost
    seconds, nanos = divmod(time.time_ns(), 1_000_000_000)
    return Timestamp(seconds=seconds, nanos=nanos)


def _serial_request(request_id: str) -> pb.Request:
    return pb.Request(content=pb.Content(id=request_id), sent=_now())


def _unexpected(rpc: str, cluster: str | None, status: str) -> ProtocolError:
    return ProtocolError(
        f"the server answered status {status}, which the protocol does not allow here",
        rpc=rpc,
        cluster=cluster,
    )


def _check_str(name: str, value: object) -> None:
    """A str that protobuf can send (valid UTF-8). The value itself is never echoed."""
    if not isinstance(value, str):
        raise InvalidArgumentError(f"{name} must be a str, not {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgumentError(f"{name} is not valid unicode text") from None


def _check_name(name: str, value: object) -> None:
    _check_str(name, value)
    assert isinstance(value, str)
    if not value.strip():
        raise InvalidArgumentError(f"{name} must not be empty")


def _check_int(name: str, value: object, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgumentError(f"{name} must be an int, not {type(value).__name__}")
    if not minimum <= value <= P.INT32_MAX:
        raise InvalidArgumentError(
            f"{name}={value} is out of range: it must be between {minimum} and {P.INT32_MAX}"
        )


def _check_job_ids(job_ids: object) -> tuple[int, ...]:
    if isinstance(job_ids, str | bytes) or not isinstance(job_ids, Iterable):
        raise InvalidArgumentError("job_ids must be an iterable of ints")
    ids = tuple(job_ids)
    if not ids:
        raise InvalidArgumentError("job_ids is empty: accept at least one job id")
    for job_id in ids:
        _check_int("job id", job_id, minimum=1)
    if len(set(ids)) != len(ids):
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        raise InvalidArgumentError(f"job_ids has duplicates: {dupes}")
    return ids
