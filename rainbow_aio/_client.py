"""RainbowClient: the asyncio client for a rainbow scheduler server.

One client owns one ``grpc.aio`` channel, made inside the running event loop by
``connect()`` (or ``async with``) and shared by every call and every poller. Every call
has a deadline; failed attempts are repeated only where that is safe (``_retry.py``).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Container, Iterable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Final, Unpack

import grpc
import grpc.aio

from . import _accepters
from . import _protocol as P
from ._calls import Calls, Methods, now, serial_request
from ._config import (
    KeepAliveConfig,
    RetryPolicy,
    SubmitRetry,
    TLSConfig,
    parse_host,
    positive_seconds,
)
from ._exceptions import (
    ClusterExistsError,
    InvalidArgumentError,
    ProtocolError,
    RainbowError,
)
from ._models import (
    AcceptResult,
    AcceptStatus,
    Job,
    JobListing,
    Registration,
    jobs_from_listing,
)
from ._outcome import CallOutcome
from ._proto import rainbow_pb2 as pb
from ._telemetry import load as load_telemetry

if TYPE_CHECKING:
    from .poller import Poller, PollerGroup, PollerKwargs, PollerOptions

__all__ = ["RainbowClient"]

_log = logging.getLogger(__name__)

DEFAULT_MAX_RESPONSE_BYTES: Final = 256 << 20
DEFAULT_TIMEOUT: Final = 30.0
DEFAULT_ATTEMPT_TIMEOUT: Final = 10.0

# the answers a listing may carry (class attributes: the enum wrapper's lookups by name
# cost a few microseconds a call)
_LISTED: Final = frozenset(
    (pb.RequestJobsResponse.REQUEST_JOBS_SUCCESS, pb.RequestJobsResponse.REQUEST_JOBS_NORESULTS)
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
        target = parse_host(host)
        if tls is not None and not isinstance(tls, TLSConfig):
            raise InvalidArgumentError("tls must be a TLSConfig or None")
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise InvalidArgumentError("retry must be a RetryPolicy or None")
        if keepalive is not None and not isinstance(keepalive, KeepAliveConfig):
            raise InvalidArgumentError("keepalive must be a KeepAliveConfig or None")
        if submit_retry not in ("safe", "at_least_once"):
            raise InvalidArgumentError("submit_retry must be 'safe' or 'at_least_once'")
        timeout = positive_seconds("timeout", timeout)
        attempt_timeout = positive_seconds("attempt_timeout", attempt_timeout)
        connect_timeout = positive_seconds("connect_timeout", connect_timeout)
        if (
            isinstance(max_response_bytes, bool)
            or not isinstance(max_response_bytes, int)
            or not 0 < max_response_bytes <= P.INT32_MAX
        ):
            raise InvalidArgumentError(f"max_response_bytes must be an int from 1 to {P.INT32_MAX}")
        interceptors = list(interceptors)
        if not isinstance(telemetry, bool):
            raise InvalidArgumentError("telemetry must be True or False")
        tracer = load_telemetry() if telemetry else None
        for interceptor in interceptors:
            if not isinstance(interceptor, grpc.aio.ClientInterceptor):
                raise InvalidArgumentError(
                    "interceptors must be grpc.aio client interceptors, not "
                    f"{type(interceptor).__name__}"
                )
        self._calls = Calls(
            host=host,
            target=target,
            tls=tls,
            retry=retry or RetryPolicy(),
            keepalive=keepalive or KeepAliveConfig(),
            timeout=timeout,
            attempt_timeout=attempt_timeout,
            connect_timeout=connect_timeout,
            submit_retry=submit_retry,
            max_response_bytes=max_response_bytes,
            channel_options=channel_options,
            interceptors=interceptors,
            telemetry=tracer,
        )

    # -- properties -------------------------------------------------------------------

    @property
    def host(self) -> str:
        """The server address this client dials, as given."""
        return self._calls.host

    @property
    def tls(self) -> TLSConfig | None:
        """The TLS settings, or None for plaintext."""
        return self._calls.tls

    @property
    def retry_policy(self) -> RetryPolicy:
        """How failed calls are repeated (the ``retry=`` given, or the default)."""
        return self._calls.retry

    @property
    def timeout(self) -> float:
        """Each call's whole time budget in seconds (retries included), unless the call
        gives its own ``timeout=``."""
        return self._calls.timeout

    @property
    def attempt_timeout(self) -> float:
        """The deadline of one attempt, in seconds (never past the call's budget)."""
        return self._calls.attempt_timeout

    @property
    def telemetry_enabled(self) -> bool:
        """True when this client and its pollers report to OpenTelemetry."""
        return self._calls.telemetry is not None

    @property
    def connected(self) -> bool:
        """True between a successful ``connect()`` and ``close()``."""
        return self._calls.methods is not None and not self._calls.closed

    @property
    def closed(self) -> bool:
        """True once ``close()`` has been called (calls then raise ClientClosedError)."""
        return self._calls.closed

    @property
    def _channel(self) -> grpc.aio.Channel | None:
        """The channel, once connected (for tests that need grpc's view of it)."""
        return self._calls.channel

    def __repr__(self) -> str:
        calls = self._calls
        state = "closed" if calls.closed else "connected" if calls.methods else "not connected"
        mode = "plaintext" if calls.tls is None else "mtls" if calls.tls.mutual else "tls"
        return f"RainbowClient(host={calls.host!r}, {mode}, {state})"

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
        if await self._calls.connect():
            _log.info("connected to rainbow server at %s (%s)", self.host, self._mode())

    async def close(self, grace: float | None = 5.0) -> None:
        """Close the channel.

        New calls raise :class:`ClientClosedError` at once; calls in flight get up to
        ``grace`` seconds to finish (``None``: none) and are then cancelled, raising
        :class:`ClientClosedError`. Retries waiting for their next attempt stop, and a
        ``connect()`` still waiting for the server gives up and closes what it opened
        before this returns. Safe to call more than once and from several tasks.
        """
        await self._calls.close(grace)

    def _mode(self) -> str:
        tls = self._calls.tls
        return "plaintext" if tls is None else "mutual TLS" if tls.mutual else "TLS"

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
        request = pb.RegisterRequest(name=cluster, secret=secret, sent=now())
        resp, _ = await self._calls.unary(
            "Register", _register, request, cluster=cluster, timeout=timeout
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
            sent=now(),
        )
        resp, _ = await self._calls.unary(
            "SubmitJob", _submit_job, request, cluster=cluster, timeout=timeout
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
        return jobs_from_listing(listing, sorted(listing), cluster=cluster)

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
        ascending): jobs already known are not parsed again. ``skip`` is asked right after
        the answer arrives, once per listed id (or once for all of them, through its
        ``pick(ids)`` method if it has one, which returns the ids not skipped, in order).
        Same checks, retries and errors as ``request_jobs``.
        """
        listing = await self._listing(cluster, secret, max_jobs, timeout=timeout)
        ids = tuple(sorted(listing))
        pick = getattr(skip, "pick", None)
        wanted = pick(ids) if pick is not None else [i for i in ids if i not in skip]
        return JobListing(ids=ids, jobs=jobs_from_listing(listing, wanted, cluster=cluster))

    async def _listing(
        self, cluster: str, secret: str, max_jobs: int | None, *, timeout: float | None
    ) -> Mapping[int, str]:
        """One RequestJobs (checked, retried, errors mapped): the answer's id -> JSON map."""
        _check_name("cluster", cluster)
        _check_str("secret", secret)
        if max_jobs is not None:
            _check_int("max_jobs", max_jobs, minimum=0)  # 0 means all, as on the wire
        request = pb.RequestJobsRequest(
            cluster=cluster, secret=secret, maxJobs=max_jobs or 0, sent=now()
        )
        resp, _ = await self._calls.unary(
            "RequestJobs", _request_jobs, request, cluster=cluster, timeout=timeout
        )
        if resp.status not in _LISTED:
            name = pb.RequestJobsResponse.ResultType.Name(resp.status)
            raise _unexpected("RequestJobs", cluster, name)
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
        request = pb.AcceptJobsRequest(cluster=cluster, secret=secret, jobids=ids, sent=now())
        # counted as an accepter of the cluster while it runs, so that no poller of this
        # process infers from a PARTIAL answer that a job this call took is its own
        with _accepters.accepting(cluster):
            resp, trace = await self._calls.unary(
                "AcceptJobs", _accept_jobs, request, cluster=cluster, timeout=timeout
            )
        if resp.status == pb.AcceptJobsResponse.RESULT_TYPE_SUCCESS:
            outcome = AcceptStatus.SUCCESS
        elif resp.status == pb.AcceptJobsResponse.RESULT_TYPE_PARTIAL:
            outcome = AcceptStatus.UNCERTAIN if trace.maybe_ran_before else AcceptStatus.PARTIAL
        else:
            name = pb.AcceptJobsResponse.ResultType.Name(resp.status)
            raise _unexpected("AcceptJobs", cluster, name)
        return AcceptResult(job_ids=ids, status=outcome, attempts=trace.attempts)

    async def ping(self, *, timeout: float | None = None) -> float:
        """Round-trip time of one Serial call, in seconds (the last attempt's)."""
        request_id = uuid.uuid4().hex
        request = serial_request(request_id)
        resp, trace = await self._calls.unary(
            "Serial", _serial, request, cluster=None, timeout=timeout
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
        telemetry = self._calls.telemetry
        if telemetry is None or not telemetry.tracing:
            return await self._stream_ping(count, timeout)
        with telemetry.call("Stream", None, self.host) as span:
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
        calls = self._calls
        methods = calls.require_methods("Stream", None)
        budget = calls.budget(timeout)
        deadline = time.monotonic() + budget
        await calls.wait_connected("Stream", None, min(calls.connect_timeout, budget))
        remaining = max(deadline - time.monotonic(), 0.001)
        prefix = uuid.uuid4().hex
        call = methods.stream(None, timeout=min(calls.attempt_timeout, remaining))
        counts: list[int] = []
        try:
            for i in range(count):
                request_id = f"{prefix}-{i}"
                await call.write(serial_request(request_id))
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
            raise calls.map(exc, "Stream", None, attempts=1) from exc
        except asyncio.CancelledError:
            calls.raise_if_closed_under("Stream", None)
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


# -- helpers -----------------------------------------------------------------------------

# Which of the channel's multicallables each RPC takes: functions made once, not a lambda
# per call (each call's objects are work for the garbage collector).


def _register(
    m: Methods,
) -> grpc.aio.UnaryUnaryMultiCallable[pb.RegisterRequest, pb.RegisterResponse]:
    return m.register


def _submit_job(
    m: Methods,
) -> grpc.aio.UnaryUnaryMultiCallable[pb.SubmitJobRequest, pb.SubmitJobResponse]:
    return m.submit_job


def _request_jobs(
    m: Methods,
) -> grpc.aio.UnaryUnaryMultiCallable[pb.RequestJobsRequest, pb.RequestJobsResponse]:
    return m.request_jobs


def _accept_jobs(
    m: Methods,
) -> grpc.aio.UnaryUnaryMultiCallable[pb.AcceptJobsRequest, pb.AcceptJobsResponse]:
    return m.accept_jobs


def _serial(m: Methods) -> grpc.aio.UnaryUnaryMultiCallable[pb.Request, pb.Response]:
    return m.serial


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
    # passes in C for the usual case (plain ints in range); the slow one names the culprit
    if set(map(type, ids)) != {int} or min(ids) < 1 or max(ids) > P.INT32_MAX:
        for job_id in ids:
            _check_int("job id", job_id, minimum=1)
    if len(set(ids)) != len(ids):
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        raise InvalidArgumentError(f"job_ids has duplicates: {dupes}")
    return ids
