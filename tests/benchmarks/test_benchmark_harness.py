"""The benchmark harness still runs end to end, so the benchmark code cannot rot.

It runs ``python -m benchmarks run --toy`` (every benchmark at toy size, each with its
own server process and worker processes) and checks that each one wrote a result file
whose own correctness checks passed. No timing is asserted: speed is what the benchmarks
measure, not what the tests check.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _kill_group(pgid: int) -> bool:
    """Kill what is left of a process group; True if anything was left."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    os.killpg(pgid, signal.SIGKILL)
    return True


def _run_toy(args: list[str], *, timeout: float) -> str:
    """``python -m benchmarks run --toy --no-charts ARGS``; its output, once it passed.

    The harness starts server and worker processes of its own; it runs in a session of
    its own so that, whatever ends the test (a failure, pytest-timeout), the whole
    process group is killed and nothing is left running."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks", "run", "--toy", "--no-charts", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    finally:
        left_running = _kill_group(proc.pid)
        proc.wait()
    output = f"{stdout[-4000:]}\n{stderr[-4000:]}"
    assert not left_running, "the harness left processes running\n" + output
    assert proc.returncode == 0, output
    return output


@pytest.mark.slow  # about 40 s: in tox -e soak, which .ci/run calls, not the default run
def test_every_benchmark_runs_correctly_at_toy_size(tmp_path: Path) -> None:
    # (no __init__.py here: a package named "benchmarks" would shadow the real one)
    listing = subprocess.run(
        [sys.executable, "-m", "benchmarks", "list"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    names = sorted(line.split()[0] for line in listing.stdout.splitlines() if line.strip())
    assert names, listing.stderr
    output = _run_toy(["--results-dir", str(tmp_path)], timeout=170)
    results = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("*.json"))]
    assert sorted(r["benchmark"] for r in results) == names, output
    for r in results:
        assert r["correct"], (r["benchmark"], [c for c in r["checks"] if not c["ok"]])
        assert r["checks"], r["benchmark"]
        assert r["machine"]["grpcio"]
        assert r["machine"]["cores_logical"]


def test_original_benchmark_compares_with_the_client_of_another_tree(tmp_path: Path) -> None:
    # --client-tree: a per-job drain runs with that tree's rainbow_aio (here a copy of
    # this one), side by side with this checkout's, and the run checks which it imported
    other = tmp_path / "other-tree"
    shutil.copytree(ROOT / "rainbow_aio", other / "rainbow_aio")
    results_dir = tmp_path / "results"
    args = ["--only", "original", "--client-tree", str(other), "--results-dir", str(results_dir)]
    _run_toy(args, timeout=120)
    (path,) = results_dir.glob("*-original-toy.json")
    result = json.loads(path.read_text())
    assert result["correct"], [c for c in result["checks"] if not c["ok"]]
    imported = [c["check"] for c in result["checks"] if "ran the rainbow_aio of" in c["check"]]
    assert any(str(other) in check for check in imported), imported
    assert any("this checkout" in check for check in imported), imported
    per_job = [s for s in result["results"]["summary"] if s["mode"] == "rainbow_aio"]
    assert per_job
    assert all(s["vs_before"] > 0 for s in per_job)
    assert any(t["name"].startswith("per-job jobs/s vs before") for t in result["targets"])


def test_a_size_some_benchmarks_lack_is_refused_before_anything_runs() -> None:
    # --size NAME (the server's "backlog" and "cost"): every benchmark chosen must have it
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "run", "--size", "backlog", "--only", "batches"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert "no size 'backlog' in batches" in proc.stderr
