"""Run a known sequence of calls with OpenTelemetry's SDK set up; print what was exported.

    python _probe.py sdk        # global SDK providers, in-memory exporters
    python _probe.py off        # the same, with RainbowClient(telemetry=False)
    python _probe.py late       # the SDK set up only after the first calls
    python _probe.py missing    # opentelemetry cannot be imported at all

Prints one JSON object: the spans and metric points exported, the credentials used (so
the test can check none of them leaked), and the modules of opentelemetry loaded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from typing import Any

MODE = sys.argv[1]
if MODE == "missing":
    sys.modules["opentelemetry"] = None  # type: ignore[assignment]  # import fails

from rainbow_aio import DeniedError, RainbowClient, RainbowServer  # noqa: E402


def sdk() -> tuple[Any, Any]:
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    trace.set_tracer_provider(tracer_provider)
    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    return spans, reader


async def main() -> dict[str, Any]:
    exporters = sdk() if MODE in ("sdk", "off") else None
    out: dict[str, Any] = {"credentials": []}
    async with RainbowServer("127.0.0.1:0", secret="probe-registration-secret") as server:
        out["credentials"].append(server.secret)
        client = RainbowClient(server.address, telemetry=MODE != "off")
        async with client:
            reg = await client.register("alpha", server.secret)
            out["credentials"] += [reg.token, reg.secret]
            ids = [await client.submit_job("alpha", reg.token, f"job {i}") for i in range(5)]
            if MODE == "late":  # a tracer provider set while the client is in use
                exporters = sdk()
            with contextlib.suppress(DeniedError):
                await client.request_jobs("alpha", "not-the-secret")
            listing = asyncio.create_task(client.request_jobs("alpha", reg.secret))
            await asyncio.sleep(0)  # the call has begun
            listing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listing
            async with client.poller("alpha", reg.secret, max_jobs=5) as poller:
                batch = await poller.get_batch(3)  # of the five listed: two stay queued
                first, second, third = batch
                assert len(await batch.subset([first, second]).accept()) == 2  # one call
                third.release()
                out["stats"] = {
                    "polls": poller.stats.polls,
                    "jobs_listed": poller.stats.jobs_listed,
                    "queued": poller.stats.queued,
                }
                if exporters is not None:  # while the poller lives: its counters are read
                    data = exporters[1].get_metrics_data()
                    out["metrics"] = json.loads(data.to_json()) if data is not None else None
            out["ids"] = ids
    if exporters is not None:
        out["spans"] = [json.loads(span.to_json()) for span in exporters[0].get_finished_spans()]
    out["otel_modules"] = sorted(
        name for name, module in sys.modules.items() if name.startswith("opentelemetry") and module
    )
    return out


print(json.dumps(asyncio.run(main())))
