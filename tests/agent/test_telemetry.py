"""OpenTelemetry: a span per job run and the agent's metrics, with the client's scope and
``rainbow.*`` attributes, and no command text or credential in either. Run in a child
process, since a process sets its global providers once."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytest.importorskip("opentelemetry.sdk")

PROBE = r"""
import asyncio, json, sys, tempfile
from pathlib import Path
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

spans = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(spans))
trace.set_tracer_provider(provider)
reader = InMemoryMetricReader()
metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))

from rainbow_aio import PollerOptions, RainbowClient, RainbowServer, Shutdown
from rainbow_aio.agent import Agent, AgentOptions

async def main():
    root = Path(tempfile.mkdtemp())
    server = RainbowServer("127.0.0.1:0", db=":memory:")
    await server.start()
    async with RainbowClient(server.address) as client:
        reg = await client.register("otel", server.secret)
        await client.submit_job("otel", reg.token, "echo secret-command-text", nodes=2)
        await client.submit_job("otel", reg.token, "sh -c 'exit 3'")
        options = AgentOptions(cluster="otel", journal=root / "j.db", workdir=root / "w",
                               nodes=2, allow_root=True,
                               poller=PollerOptions(min_interval=0.01, max_interval=0.05))
        agent = Agent(client, reg.secret, options)
        stop = Shutdown()
        task = asyncio.create_task(agent.run(stop))
        while agent.stats.finished + agent.stats.failed < 2:
            await asyncio.sleep(0.02)
        stop.request("done")
        await task
    await server.stop(grace=None)
    return reg

reg = asyncio.run(main())
out = {
    "spans": [
        {"name": s.name, "attributes": dict(s.attributes), "status": s.status.status_code.name,
         "scope": s.instrumentation_scope.name}
        for s in spans.get_finished_spans() if s.name.startswith("rainbow.agent")
    ],
    "metrics": {},
    "secret_seen": False,
}
data = reader.get_metrics_data()
for rm in data.resource_metrics:
    for sm in rm.scope_metrics:
        for m in sm.metrics:
            if m.name.startswith("rainbow.agent"):
                out["metrics"][m.name] = [
                    {"attributes": dict(p.attributes), "value": getattr(p, "value", None),
                     "count": getattr(p, "count", None)}
                    for p in m.data.data_points
                ]
text = json.dumps(out)
out["secret_seen"] = reg.secret in text or reg.token in text
print(json.dumps(out))
"""


def test_spans_and_metrics_of_job_runs() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.splitlines()[-1])
    runs = out["spans"]
    assert len(runs) == 2
    for span in runs:
        assert span["name"] == "rainbow.agent/run"
        assert span["scope"] == "rainbow_aio"
        assert span["attributes"]["rainbow.cluster"] == "otel"
        assert span["attributes"]["rainbow.agent.executor"] == "local"
    by_state = {s["attributes"]["rainbow.job.state"]: s for s in runs}
    assert by_state["finished"]["attributes"]["rainbow.job.exit_code"] == 0
    assert by_state["failed"]["attributes"]["rainbow.job.exit_code"] == 3
    assert by_state["failed"]["status"] == "ERROR"
    jobs = {
        p["attributes"]["rainbow.job.state"]: p["value"]
        for p in out["metrics"]["rainbow.agent.jobs"]
    }
    assert jobs == {"finished": 1, "failed": 1}
    assert [p["count"] for p in out["metrics"]["rainbow.agent.job.duration"]] == [2]
    assert [p["value"] for p in out["metrics"]["rainbow.agent.nodes.in_use"]] == [0]
    assert "secret-command-text" not in json.dumps(out)
    assert not out["secret_seen"]
