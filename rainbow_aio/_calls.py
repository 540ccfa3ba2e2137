"""How a call goes out: the channel, connection waits, budgets, attempts and tracing.

:class:`Calls` owns one ``grpc.aio`` channel and the state every call shares (closed or
not, the connect lock, the event that ``close()`` sets). ``RainbowClient`` builds each
request and reads each answer; everything between the two is here, so that the per-call
path reads (and profiles) on its own. Failed attempts are repeated only where that is safe
(``_retry.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import grpc
import grpc.aio
from google.protobuf.timestamp_pb2 import Timestamp

from . import _protocol as P
from ._config import KeepAliveConfig, RetryPolicy, SubmitRetry, TLSConfig, positive_seconds
from ._exceptions import ClientClosedError, RainbowError, TLSError, error_from_status
from ._outcome import CallOutcome
from ._proto import rainbow_pb2 as pb
from ._retry import attempt_outcome, build_retrying, should_retry
from ._telemetry import CallSpan, Telemetry

__all__ = ["Calls", "Methods", "Trace", "now", "serial_request"]

_log = logging.getLogger(__name__)

_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")

_PATH: Final = f"/{P.SERVICE}/"
# After connect() gave up waiting, one fail-fast call asks grpc why (its last error).
_DIAGNOSE_TIMEOUT: Final = 0.25
# a call that failed this close to its deadline is said to have spent its budget
_BUDGET_SLACK: Final = 0.005


@dataclass(slots=True)
class Methods:
    """The typed multicallables of one channel."""

    register: grpc.aio.UnaryUnaryMultiCallable[pb.RegisterRequest, pb.RegisterResponse]
    submit_job: grpc.aio.UnaryUnaryMultiCallable[pb.SubmitJobRequest, pb.SubmitJobResponse]
    request_jobs: grpc.aio.UnaryUnaryMultiCallable[pb.RequestJobsRequest, pb.RequestJobsResponse]
    accept_jobs: grpc.aio.UnaryUnaryMultiCallable[pb.AcceptJobsRequest, pb.AcceptJobsResponse]
    serial: grpc.aio.UnaryUnaryMultiCallable[pb.Request, pb.Response]
    stream: grpc.aio.StreamStreamMultiCallable[pb.Request, pb.Response]

    @classmethod
    def bind(cls, channel: grpc.aio.Channel) -> Methods:
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


@dataclass(slots=True)
class Trace:
    """What happened during one call's attempts."""

    attempts: int = 0
    # an attempt that did not succeed may have reached the server (outcome UNKNOWN)
    maybe_ran_before: bool = False
    last_rtt: float = 0.0


class Calls:
    """One channel's call state, and the path every call takes through it.

    The arguments are the client's, already checked by ``RainbowClient``.
    """

    def __init__(
        self,
        *,
        host: str,
        target: str,
        tls: TLSConfig | None,
        retry: RetryPolicy,
        keepalive: KeepAliveConfig,
        timeout: float,
        attempt_timeout: float,
        connect_timeout: float,
        submit_retry: SubmitRetry,
        max_response_bytes: int,
        channel_options: Iterable[tuple[str, int | str]],
        interceptors: Sequence[grpc.aio.ClientInterceptor],
        telemetry: Telemetry | None,
    ) -> None:
        self.host: Final = host
        self.tls: Final = tls
        self.retry: Final = retry
        self.timeout: Final = timeout
        self.attempt_timeout: Final = attempt_timeout
        self.connect_timeout: Final = connect_timeout
        self.telemetry: Final = telemetry
        self._target = target
        self._keepalive = keepalive
        self._submit_retry: SubmitRetry = submit_retry
        self._max_response_bytes = max_response_bytes
        self._extra_options = list(channel_options)
        self._interceptors = list(interceptors)

        self.channel: grpc.aio.Channel | None = None
        self.methods: Methods | None = None
        self.closed = False
        self._close_task: asyncio.Task[None] | None = None
        # made in the loop by the first connect(); set by close(), which ends a connect()
        # still waiting, retry backoffs and waits for a connection
        self._closing: asyncio.Event | None = None
        self._connect_lock: asyncio.Lock | None = None

    # -- lifecycle --------------------------------------------------------------------

    async def connect(self) -> bool:
        """Open the channel and wait for it (see ``RainbowClient.connect``).

        Returns False when already connected (nothing done)."""
        if self.closed:
            raise ClientClosedError("the client is closed; create a new RainbowClient")
        if self._connect_lock is None:
            self._connect_lock = asyncio.Lock()
            self._closing = asyncio.Event()
        async with self._connect_lock:
            if self.methods is not None:
                return False
            channel = self._make_channel()
            try:
                await self._wait_ready(channel)
                if self.closed:
                    raise ClientClosedError("the client was closed while it was connecting")
            except BaseException:
                await channel.close(None)
                raise
            # only ever set here, under the lock, on a client not closed
            self.channel = channel
            self.methods = Methods.bind(channel)
        return True

    async def close(self, grace: float | None) -> None:
        """Close the channel (see ``RainbowClient.close``)."""
        self.closed = True
        if self._closing is not None:
            self._closing.set()
        lock = self._connect_lock
        if lock is not None and lock.locked():
            async with lock:  # a connect() in progress sees the client closed and gives up
                pass
        if self.channel is None:
            return
        if self._close_task is None:
            _log.debug("closing the channel to %s (grace %s s)", self.host, grace)
            self._close_task = asyncio.create_task(self.channel.close(grace))
        await asyncio.shield(self._close_task)

    def _make_channel(self) -> grpc.aio.Channel:
        options: list[tuple[str, int | str]] = [
            # this channel's own connection, never shared with other channels to the host
            ("grpc.use_local_subchannel_pool", 1),
            # reconnect at least as often as the retry policy's longest backoff, so a
            # retry after a server restart finds a fresh connection attempt
            ("grpc.initial_reconnect_backoff_ms", 200),
            ("grpc.max_reconnect_backoff_ms", max(1000, round(self.retry.max_backoff * 1000))),
            ("grpc.primary_user_agent", "rainbow-aio"),
            ("grpc.max_receive_message_length", self._max_response_bytes),
            *self._keepalive.channel_options(),
        ]
        if self.tls is not None and self.tls.server_name:
            options.append(("grpc.ssl_target_name_override", self.tls.server_name))
        options.extend(self._extra_options)
        interceptors = self._interceptors or None
        if self.tls is None:
            return grpc.aio.insecure_channel(
                self._target, options=options, interceptors=interceptors
            )
        creds = self.tls.channel_credentials()
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
        deadline = loop.time() + self.connect_timeout
        serial = Methods.bind(channel).serial
        last_error = "no connection attempt finished"
        state = channel.get_state(try_to_connect=True)
        while state is not grpc.ChannelConnectivity.READY:
            if state is grpc.ChannelConnectivity.TRANSIENT_FAILURE:
                try:
                    await serial(serial_request("connect"), timeout=_DIAGNOSE_TIMEOUT)
                    return  # the connection came up in the meantime
                except grpc.aio.AioRpcError as exc:
                    last_error = exc.details() or exc.code().name
                error = self._connect_error(last_error)
                if isinstance(error, TLSError):
                    raise error
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            if await self.until_closing(channel.wait_for_state_change(state), remaining):
                return  # closed meanwhile: connect() sees it and gives up
            state = channel.get_state(try_to_connect=True)
        else:
            return
        raise self._connect_error(
            f"no connection within {self.connect_timeout:g} s (channel {state.name}): {last_error}"
        )

    def _connect_error(self, details: str) -> RainbowError:
        return error_from_status(
            grpc.StatusCode.UNAVAILABLE,
            details,
            rpc="connect",
            host=self.host,
            tls=self.tls is not None,
        )

    # -- what every call uses ---------------------------------------------------------

    def require_methods(self, rpc: str, cluster: str | None) -> Methods:
        """The channel's methods, or ClientClosedError before connect() and after close()."""
        if self.closed:
            raise ClientClosedError("the client is closed", rpc=rpc, cluster=cluster)
        if self.methods is None:
            raise ClientClosedError(
                "the client is not connected: use 'async with RainbowClient(...)' or "
                "await client.connect() first",
                rpc=rpc,
                cluster=cluster,
            )
        return self.methods

    def budget(self, timeout: float | None) -> float:
        """A call's whole budget: its own ``timeout=``, else the client's."""
        if timeout is None:
            return self.timeout
        return positive_seconds("timeout", timeout)

    def map(
        self, exc: grpc.aio.AioRpcError, rpc: str, cluster: str | None, *, attempts: int | None
    ) -> RainbowError:
        """grpc's error as this library's."""
        return error_from_status(
            exc.code(),
            exc.details(),
            rpc=rpc,
            cluster=cluster,
            host=self.host,
            attempts=attempts,
            tls=self.tls is not None,
        )

    def raise_if_closed_under(self, rpc: str, cluster: str | None) -> None:
        """Turn grpc's cancellation of in-flight calls by close() into ClientClosedError.

        A CancelledError that is really a cancellation of the calling task propagates.
        """
        task = asyncio.current_task()
        if self.closed and (task is None or task.cancelling() == 0):
            raise ClientClosedError(
                "the client was closed while the call was in flight; the server may have "
                "acted on it",
                rpc=rpc,
                cluster=cluster,
                outcome=CallOutcome.UNKNOWN,
            ) from None

    def _ready(self) -> bool:
        """Whether the channel is READY now (asking it to connect if it is idle)."""
        channel = self.channel
        assert channel is not None
        return channel.get_state(try_to_connect=True) is grpc.ChannelConnectivity.READY

    async def wait_connected(self, rpc: str, cluster: str | None, limit: float) -> None:
        """Wait up to ``limit`` seconds for the channel to be READY before sending.

        Without this, every attempt made while grpc waits out its reconnect backoff
        would fail at once and use up the retry policy in a fraction of a second. If the
        channel is still connecting at the end, the attempt fails as "not connected"
        without sending anything; in TRANSIENT_FAILURE it is sent anyway and fails fast
        with grpc's own reason (refused, reset, TLS...).
        """
        channel, closing = self.channel, self._closing
        assert channel is not None
        assert closing is not None
        if channel.get_state(try_to_connect=True) is grpc.ChannelConnectivity.READY:
            return
        await self.until_closing(channel.channel_ready(), limit)
        self.require_methods(rpc, cluster)  # closed meanwhile: ClientClosedError
        state = channel.get_state()
        if state in (grpc.ChannelConnectivity.READY, grpc.ChannelConnectivity.TRANSIENT_FAILURE):
            return
        raise error_from_status(
            grpc.StatusCode.UNAVAILABLE,
            f"no connection within {limit:.3g} s (channel {state.name}); nothing was sent",
            rpc=rpc,
            cluster=cluster,
            host=self.host,
            tls=self.tls is not None,
        )

    async def until_closing(self, waited: Awaitable[object], limit: float) -> bool:
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

    def _final(self, error: RainbowError, call: _Call) -> RainbowError:
        """The error ``call`` ends with: mapped again, by the one mapping function, so that
        it names the host, the attempts made and a budget that ran out, with the whole
        call's outcome (UNKNOWN as soon as one attempt may have reached the server)."""
        trace = call.trace
        outcome = CallOutcome.UNKNOWN if trace.maybe_ran_before else error.outcome
        if error.code is not None:
            spent = time.monotonic() >= call.deadline - _BUDGET_SLACK
            error = error_from_status(
                error.code,
                error.details,
                rpc=call.rpc,
                cluster=call.cluster,
                host=self.host,
                attempts=trace.attempts,
                tls=self.tls is not None,
                budget=call.budget if spent else None,
            )
        error.outcome = outcome
        return error

    # -- one unary call ---------------------------------------------------------------

    def unary(
        self,
        rpc: str,
        pick: Callable[[Methods], grpc.aio.UnaryUnaryMultiCallable[_Req, _Resp]],
        request: _Req,
        *,
        cluster: str | None,
        timeout: float | None,
    ) -> Coroutine[Any, Any, tuple[_Resp, Trace]]:
        """Send one unary call with the deadline and retries its RPC is allowed (in a span
        of its own when telemetry is on); to be awaited."""
        telemetry = self.telemetry
        if telemetry is None or not telemetry.tracing:
            return self._call(rpc, pick, request, cluster=cluster, timeout=timeout)
        return self._traced(telemetry, rpc, pick, request, cluster=cluster, timeout=timeout)

    async def _traced(
        self,
        telemetry: Telemetry,
        rpc: str,
        pick: Callable[[Methods], grpc.aio.UnaryUnaryMultiCallable[_Req, _Resp]],
        request: _Req,
        *,
        cluster: str | None,
        timeout: float | None,
    ) -> tuple[_Resp, Trace]:
        with telemetry.call(rpc, cluster, self.host) as span:
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
        pick: Callable[[Methods], grpc.aio.UnaryUnaryMultiCallable[_Req, _Resp]],
        request: _Req,
        *,
        cluster: str | None,
        timeout: float | None,
        span: CallSpan | None = None,
    ) -> tuple[_Resp, Trace]:
        self.require_methods(rpc, cluster)
        budget = self.budget(timeout)
        call = _Call(rpc, cluster, budget, time.monotonic() + budget, span)
        try:
            # The first attempt goes out directly: building a tenacity retrier costs
            # more than a local call, and most calls never need one. (Nor does this path
            # make closures: at tens of thousands of calls a second, every object a call
            # leaves for the garbage collector shows.)
            return await self._attempt(call, pick, request), call.trace
        except RainbowError as error:
            if not self._retry_if(rpc, error) or self.retry.max_attempts < 2:
                raise self._final(error, call) from error.__cause__
            first = error
        return await self._retry(call, pick, request, first), call.trace

    async def _attempt(
        self,
        call: _Call,
        pick: Callable[[Methods], grpc.aio.UnaryUnaryMultiCallable[_Req, _Resp]],
        request: _Req,
    ) -> _Resp:
        """One attempt of ``call``: wait for the connection (within the budget), send."""
        rpc, cluster, trace = call.rpc, call.cluster, call.trace
        method = pick(self.require_methods(rpc, cluster))
        trace.attempts += 1
        remaining = call.deadline - time.monotonic()
        if remaining <= 0:
            spent = error_from_status(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                "no time left for another attempt",
                rpc=rpc,
                cluster=cluster,
                budget=call.budget,
            )
            spent.outcome = CallOutcome.NOT_APPLIED  # this attempt sent nothing
            raise spent
        if not self._ready():
            await self.wait_connected(rpc, cluster, min(self.connect_timeout, remaining))
            remaining = max(call.deadline - time.monotonic(), 0.001)
        started = time.perf_counter()
        try:
            resp = await method(request, timeout=min(self.attempt_timeout, remaining))
        except grpc.aio.AioRpcError as exc:
            error = self.map(exc, rpc, cluster, attempts=None)
            outcome = attempt_outcome(error)
            if outcome.may_have_acted:
                trace.maybe_ran_before = True
            if call.span is not None:
                call.span.attempt_failed(exc.code().value[0], outcome, type(error).__name__)
            raise error from exc
        except asyncio.CancelledError:
            trace.maybe_ran_before = True
            self.raise_if_closed_under(rpc, cluster)
            raise
        trace.last_rtt = time.perf_counter() - started
        return resp

    def _retry_if(self, rpc: str, error: BaseException) -> bool:
        return should_retry(rpc, error, submit_retry=self._submit_retry)

    async def _retry(
        self,
        call: _Call,
        pick: Callable[[Methods], grpc.aio.UnaryUnaryMultiCallable[_Req, _Resp]],
        request: _Req,
        first: RainbowError,
    ) -> _Resp:
        """The attempts after a first one that failed with ``first`` (retryable), by the
        retry policy, within the call's budget."""
        failed_first: list[BaseException] = [first]

        async def replay_first_then_attempt() -> _Resp:
            # tenacity sees the first failure as its attempt 1, so the attempt count and
            # the backoff schedule are the policy's, as if it had made that attempt.
            if failed_first:
                raise failed_first.pop()
            return await self._attempt(call, pick, request)

        retrying = build_retrying(
            self.retry,
            rpc=call.rpc,
            budget=max(call.deadline - time.monotonic(), 0.0),
            retry_if=lambda error: self._retry_if(call.rpc, error),
            sleep=self._sleep,
        )
        try:
            resp: _Resp = await retrying(replay_first_then_attempt)
        except RainbowError as error:
            raise self._final(error, call) from error.__cause__
        return resp


class _Call:
    """One unary call's facts, shared by its attempts."""

    __slots__ = ("budget", "cluster", "deadline", "rpc", "span", "trace")

    def __init__(
        self, rpc: str, cluster: str | None, budget: float, deadline: float, span: CallSpan | None
    ) -> None:
        self.rpc = rpc
        self.cluster = cluster
        self.budget = budget
        self.deadline = deadline
        self.span = span
        self.trace = Trace()


def now() -> Timestamp:
    """The current time as a protobuf Timestamp (the requests' ``sent``)."""
    # Timestamp.GetCurrentTime() does the same in Python, at four times the cost
    seconds, nanos = divmod(time.time_ns(), 1_000_000_000)
    return Timestamp(seconds=seconds, nanos=nanos)


def serial_request(request_id: str) -> pb.Request:
    """A Serial (or Stream) request carrying ``request_id``."""
    return pb.Request(content=pb.Content(id=request_id), sent=now())
