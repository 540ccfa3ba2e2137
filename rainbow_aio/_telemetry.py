"""OpenTelemetry, when it is installed: a span per RPC call and the pollers' metrics.

Nothing here imports ``opentelemetry`` until a client with ``telemetry=True`` (the
default) is made, and then only if ``opentelemetry-api`` is installed (the ``otel``
extra); without it every hook below is ``None`` and costs nothing. Spans and metrics go
to the global tracer and meter providers, which are no-ops until the application sets an
SDK up, as OpenTelemetry instrumentations do.

Spans follow the RPC semantic conventions: named ``{rpc.service}/{rpc.method}``, kind
CLIENT, with ``rpc.system`` (``grpc``), ``rpc.service``, ``rpc.method``,
``rpc.grpc.status_code``, ``server.address`` and ``server.port``, plus
``rainbow.cluster``, ``rainbow.attempts`` and ``rainbow.outcome`` (the call's
:class:`CallOutcome`); each failed attempt is an event. They never carry a request, a
token or a secret: only these attributes, and error messages, which never hold one.

Poller metrics carry ``rainbow.cluster``: counters read from the pollers' own counters
when a reader collects (nothing is added to the path of a job), the latency of each poll
and of each AcceptJobs call as histograms, and the jobs waiting in queues as a gauge.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Final, Protocol

from . import _protocol as P
from ._outcome import CallOutcome

__all__ = ["CallSpan", "PollerCounts", "Telemetry", "load"]

_SCOPE: Final = "rainbow_aio"


class PollerCounts(Protocol):
    """What the metrics read from a running poller (its cluster and counters)."""

    @property
    def cluster(self) -> str: ...

    def counters(self) -> Mapping[str, int]: ...

    def queued(self) -> int: ...


class CallSpan:
    """The span of one call, as the client sees it: ends with the call's outcome."""

    __slots__ = ("_span", "attempts")

    def __init__(self, span: Any) -> None:
        self._span = span
        self.attempts = 0

    def attempt_failed(self, code: int | None, outcome: CallOutcome, error: str) -> None:
        self.attempts += 1
        attributes: dict[str, Any] = {
            "rainbow.attempt": self.attempts,
            "rainbow.outcome": outcome.name,
            "exception.type": error,
        }
        if code is not None:
            attributes["rpc.grpc.status_code"] = code
        self._span.add_event("rainbow.attempt_failed", attributes)

    def cancelled(self, *, attempts: int) -> None:
        """The caller was cancelled before the call ended: whether it acted is unknown."""
        self.finish(
            attempts=attempts, code=None, outcome=CallOutcome.UNKNOWN, error="CancelledError"
        )

    def finish(
        self, *, attempts: int, code: int | None, outcome: CallOutcome, error: str | None
    ) -> None:
        from opentelemetry.trace import Status, StatusCode

        span = self._span
        span.set_attribute("rainbow.attempts", attempts)
        span.set_attribute("rainbow.outcome", outcome.name)
        if code is not None:
            span.set_attribute("rpc.grpc.status_code", code)
        if error is None:
            span.set_status(Status(StatusCode.OK))
        else:
            span.set_attribute("error.type", error)
            span.set_status(Status(StatusCode.ERROR, error))


class Telemetry:
    """The tracer and meter of rainbow-aio (from the global providers)."""

    __slots__ = (
        "_accept_duration",
        "_inert",
        "_meter",
        "_poll_duration",
        "_pollers",
        "_provider",
        "_server",
        "_tracer",
    )

    def __init__(self, trace_api: Any, metrics_api: Any) -> None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            ours = version("rainbow-aio")
        except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
            ours = None
        self._tracer = trace_api.get_tracer(_SCOPE, ours)
        # the global tracer provider before an SDK sets one (or a no-op one): its spans
        # are recorded nowhere; see ``tracing``
        self._provider: Callable[[], Any] = trace_api.get_tracer_provider
        self._inert = (trace_api.ProxyTracerProvider, trace_api.NoOpTracerProvider)
        self._meter = meter = metrics_api.get_meter(_SCOPE, ours)
        self._pollers: weakref.WeakSet[Any] = weakref.WeakSet()
        self._server: dict[str, tuple[str, int | None]] = {}
        self._poll_duration = meter.create_histogram(
            "rainbow.poller.poll.duration", unit="s", description="RequestJobs of a poller"
        )
        self._accept_duration = meter.create_histogram(
            "rainbow.poller.accept.duration",
            unit="s",
            description="AcceptJobs of a poller, resends after a lost answer included",
        )
        for name, counter, description in _COUNTERS:
            meter.create_observable_counter(
                name, callbacks=[self._observer(counter)], unit="{job}", description=description
            )
        meter.create_observable_gauge(
            "rainbow.poller.queue.depth",
            callbacks=[self._observe_queued],
            unit="{job}",
            description="Jobs waiting in pollers' queues for a consumer",
        )

    # spans

    @property
    def tracing(self) -> bool:
        """Whether spans are recorded: a tracer provider other than the API's stand-in
        has been set. Asked at each call (a provider may be set at any time), so that
        calls do not build spans nobody records (a few percent of a small call's cost)."""
        return not isinstance(self._provider(), self._inert)

    @contextmanager
    def call(self, rpc: str, cluster: str | None, host: str) -> Iterator[CallSpan]:
        """The span of one call of ``rpc`` (current while the call runs)."""
        from opentelemetry.trace import SpanKind

        address, port = self._server_of(host)
        attributes: dict[str, Any] = {
            "rpc.system": "grpc",
            "rpc.service": P.SERVICE,
            "rpc.method": rpc,
            "server.address": address,
        }
        if port is not None:
            attributes["server.port"] = port
        if cluster is not None:
            attributes["rainbow.cluster"] = cluster
        with self._tracer.start_as_current_span(
            f"{P.SERVICE}/{rpc}",
            kind=SpanKind.CLIENT,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            yield CallSpan(span)

    def _server_of(self, host: str) -> tuple[str, int | None]:
        known = self._server.get(host)
        if known is None:
            if host.startswith("unix:"):
                known = (host, None)
            else:
                name, _, port = host.rpartition(":")
                known = (name.strip("[]"), int(port) if port.isdigit() else None)
            self._server[host] = known
        return known

    # poller metrics

    def watch(self, poller: PollerCounts) -> Callable[[float], None]:
        """Report ``poller``'s counters while it lives; the recorder of its poll latency."""
        self._pollers.add(poller)
        attributes = {"rainbow.cluster": poller.cluster}
        histogram = self._poll_duration

        def record(seconds: float) -> None:
            histogram.record(seconds, attributes)

        return record

    def accept_recorder(self, cluster: str) -> Callable[[float], None]:
        attributes = {"rainbow.cluster": cluster}
        histogram = self._accept_duration

        def record(seconds: float) -> None:
            histogram.record(seconds, attributes)

        return record

    def unwatch(self, poller: PollerCounts) -> None:
        self._pollers.discard(poller)

    def _by_cluster(self, value: Callable[[PollerCounts], int]) -> dict[str, int]:
        totals: dict[str, int] = {}
        for poller in list(self._pollers):
            totals[poller.cluster] = totals.get(poller.cluster, 0) + value(poller)
        return totals

    def _observer(self, counter: str) -> Callable[[Any], Iterable[Any]]:
        def observe(options: Any) -> Iterable[Any]:
            from opentelemetry.metrics import Observation

            totals = self._by_cluster(lambda poller: poller.counters()[counter])
            return [Observation(n, {"rainbow.cluster": c}) for c, n in totals.items()]

        return observe

    def _observe_queued(self, options: Any) -> Iterable[Any]:
        from opentelemetry.metrics import Observation

        totals = self._by_cluster(lambda poller: poller.queued())
        return [Observation(n, {"rainbow.cluster": c}) for c, n in totals.items()]


# (metric, counter of PollerCounts.counters(), description)
_COUNTERS: Final = (
    ("rainbow.poller.polls", "polls", "RequestJobs calls of pollers that returned"),
    ("rainbow.poller.jobs.listed", "jobs_listed", "Jobs listed by polls, repeats counted"),
    ("rainbow.poller.jobs.handed_out", "handed_out", "Jobs given to consumers"),
    ("rainbow.poller.jobs.accepted", "accepted", "Jobs this process now owns"),
    ("rainbow.poller.jobs.lost", "lost_to_others", "Jobs someone else took first"),
    ("rainbow.poller.jobs.released", "released", "Jobs given back to the server"),
    ("rainbow.poller.jobs.uncertain", "uncertain", "Accepts with an unknown outcome"),
    ("rainbow.poller.jobs.given_up", "given_up", "Jobs no longer handed out after failures"),
    ("rainbow.poller.accept_errors", "accept_errors", "AcceptJobs calls that failed"),
    ("rainbow.poller.jobs.hold_expired", "hold_expired", "Jobs held past max_hold, given back"),
    ("rainbow.poller.jobs.unhandled", "unhandled", "Accepted jobs not handled before closing"),
)

_loaded: Telemetry | None = None
_missing = False


def load() -> Telemetry | None:
    """The process's :class:`Telemetry`, or None when ``opentelemetry-api`` is missing."""
    global _loaded, _missing
    if _loaded is None and not _missing:
        try:
            from opentelemetry import metrics, trace
        except ImportError:
            _missing = True
            return None
        _loaded = Telemetry(trace, metrics)
    return _loaded
