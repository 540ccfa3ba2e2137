"""OpenTelemetry: a span per call with the RPC semantic conventions, the pollers' metrics,
no credential anywhere in them, and nothing at all when it is off or not installed.

Each case runs ``_probe.py`` in a fresh interpreter (global providers can be set once per
process), against a real embedded server over loopback.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk", reason="opentelemetry-sdk is part of the test extra")

PROBE = Path(__file__).with_name("_probe.py")
SERVICE = "convergedcomputing.org.grpc.v1.RainbowScheduler"


def probe(mode: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(PROBE), mode], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    result["raw"] = done.stdout
    return result


def attributes(span: dict[str, Any]) -> dict[str, Any]:
    return dict(span["attributes"])


def points(metrics: dict[str, Any], name: str) -> list[dict[str, Any]]:
    found = []
    for resource in metrics["resource_metrics"]:
        for scope in resource["scope_metrics"]:
            for metric in scope["metrics"]:
                if metric["name"] == name:
                    found += metric["data"]["data_points"]
    return found


@pytest.fixture(scope="module")
def sdk() -> dict[str, Any]:
    return probe("sdk")


def test_each_call_is_one_client_span_named_by_its_rpc(sdk: dict[str, Any]) -> None:
    ours = [s for s in sdk["spans"] if s["name"].startswith(SERVICE + "/")]
    methods = [attributes(s)["rpc.method"] for s in ours]
    # register, five submits, the denied listing, a cancelled one; then the poller's
    # listings and accept
    assert methods[:7] == ["Register", *["SubmitJob"] * 5, "RequestJobs"]
    assert methods.count("AcceptJobs") == 1  # the two accepts went out as one call
    assert methods.count("RequestJobs") >= 1 + sdk["stats"]["polls"]  # it may poll on
    for span in ours:
        a = attributes(span)
        assert span["kind"] == "SpanKind.CLIENT"
        assert span["name"] == f"{SERVICE}/{a['rpc.method']}"
        assert (a["rpc.system"], a["rpc.service"]) == ("grpc", SERVICE)
        assert a["server.address"] == "127.0.0.1"
        assert isinstance(a["server.port"], int)
        assert a["rainbow.attempts"] == 1
    ok = [s for s in ours if s["status"]["status_code"] == "OK"]
    assert all(attributes(s)["rpc.grpc.status_code"] == 0 for s in ok)
    assert all(attributes(s)["rainbow.outcome"] == "APPLIED" for s in ok)
    errors = [s for s in ours if s["status"]["status_code"] == "ERROR"]
    # the listing the probe cancels, and any poll of the poller cancelled as it closed
    cancelled = [s for s in errors if attributes(s).get("error.type") == "CancelledError"]
    assert cancelled
    for span in cancelled:
        a = attributes(span)
        assert (a["rpc.method"], a["rainbow.outcome"]) == ("RequestJobs", "UNKNOWN")
    [denied] = [s for s in errors if s not in cancelled]
    a = attributes(denied)
    assert (a["rpc.method"], a["rainbow.cluster"]) == ("RequestJobs", "alpha")
    assert a["rpc.grpc.status_code"] == 2  # UNKNOWN, as the Go server answers
    assert (a["error.type"], a["rainbow.outcome"]) == ("DeniedError", "NOT_APPLIED")
    [event] = denied["events"]
    assert event["name"] == "rainbow.attempt_failed"


def test_poller_metrics_count_what_happened_per_cluster(sdk: dict[str, Any]) -> None:
    metrics = sdk["metrics"]

    def value(name: str) -> int:
        [point] = points(metrics, name)
        assert point["attributes"] == {"rainbow.cluster": "alpha"}
        return int(point["value"])

    assert value("rainbow.poller.polls") == sdk["stats"]["polls"]
    assert value("rainbow.poller.jobs.listed") == sdk["stats"]["jobs_listed"]
    assert value("rainbow.poller.jobs.handed_out") == 3
    assert value("rainbow.poller.jobs.accepted") == 2
    assert value("rainbow.poller.jobs.released") == 1
    assert value("rainbow.poller.jobs.lost") == 0
    assert value("rainbow.poller.jobs.uncertain") == 0
    [polls] = points(metrics, "rainbow.poller.poll.duration")
    assert polls["count"] == sdk["stats"]["polls"]
    assert polls["attributes"] == {"rainbow.cluster": "alpha"}
    [accepts] = points(metrics, "rainbow.poller.accept.duration")
    assert accepts["count"] == 1
    assert accepts["sum"] > 0
    # two of the five listed jobs were never handed out: the gauge says what stats says
    assert sdk["stats"]["queued"] == 2
    [depth] = points(metrics, "rainbow.poller.queue.depth")
    assert depth["attributes"] == {"rainbow.cluster": "alpha"}
    assert depth["value"] == 2


def test_no_credential_in_any_span_or_metric(sdk: dict[str, Any]) -> None:
    exported = json.dumps({"spans": sdk["spans"], "metrics": sdk["metrics"]})
    assert len(sdk["credentials"]) == 3
    for credential in sdk["credentials"]:
        assert credential not in exported


def test_calls_made_after_a_tracer_provider_is_set_have_spans() -> None:
    # before an SDK is set up nothing records spans, and the client makes none; once a
    # provider is set (here after register and the submits), every call has its span
    late = probe("late")
    methods = [
        attributes(s)["rpc.method"] for s in late["spans"] if s["name"].startswith(SERVICE + "/")
    ]
    assert methods[0] == "RequestJobs"  # the denied listing, the first call after
    assert "Register" not in methods
    assert "SubmitJob" not in methods
    assert methods.count("AcceptJobs") == 1
    assert methods.count("RequestJobs") >= 1 + late["stats"]["polls"]


def test_telemetry_off_reports_nothing() -> None:
    off = probe("off")
    assert not [s for s in off["spans"] if s["name"].startswith(SERVICE)]
    assert off["metrics"] is None or not points(off["metrics"], "rainbow.poller.polls")


def test_without_opentelemetry_nothing_is_imported_and_everything_works() -> None:
    missing = probe("missing")
    assert missing["otel_modules"] == []
    assert missing["stats"]["polls"] >= 1
