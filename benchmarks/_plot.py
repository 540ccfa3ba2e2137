"""Charts from result files: ``python -m benchmarks plot FILE... [--out DIR]``.

Each chart is drawn from the JSON files named, never from figures typed by hand, so the
images on the documentation site can be traced to the result files BENCHMARKS.md cites:

- a ``batches`` file: ``batches-jobs.png`` (jobs/s per cell, the original usage against
  the batch loop and ``run()``) and ``batches-cpu.png`` (client and server CPU per job);
- a ``scale`` file: ``idle-groups.png`` (what an idle group costs against its size);
- a ``first_job`` file: ``first-job.png`` (time from entering to the first batch).

Files of other benchmarks are skipped. Returns the paths written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "docs" / "_static" / "benchmarks"

_FORM_NAMES = {
    "baseline": "original usage (thread per cluster, channel per call)",
    "loop": "batch loop, one consumer",
    "run": "run(batch_size, concurrency=8)",
    "run_wide": "run(batch_size, concurrency=one per cluster)",
    "bare": "bare grpc.aio loop, no library",
}


def plot(files: list[Path], out: Path = DEFAULT_OUT) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for f in files:
        data = json.loads(f.read_text())
        name = data["benchmark"]
        if name == "batches":
            written += _batches(data, f.name, out)
        elif name == "scale":
            written.append(_scale(data, f.name, out / "idle-groups.png"))
        elif name == "first_job":
            written.append(_first_job(data, f.name, out / "first-job.png"))
    return written


def _save(fig: Any, source: str, path: Path) -> Path:
    """Finish a chart: the result file it came from in a corner, then write and close it."""
    import matplotlib.pyplot as plt

    fig.text(0.99, 0.01, source, ha="right", fontsize=6, color="0.4")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _plain_numbers(axis: Any) -> None:
    """Tick labels of a log axis as plain numbers (``20``, not ``2 x 10^1``), at the
    powers of ten and at 2 and 5 times them."""
    from matplotlib.ticker import FuncFormatter, LogLocator

    plain = FuncFormatter(lambda value, _: f"{value:g}")
    axis.set_minor_locator(LogLocator(base=10, subs=(2.0, 5.0)))
    axis.set_major_formatter(plain)
    axis.set_minor_formatter(plain)


def _cells(summary: list[dict[str, Any]]) -> list[tuple[str, int, int]]:
    order = {"short": 0, "steady": 1}
    cells = {(s["kind"], s["clusters"], s["max_jobs"]) for s in summary}
    return sorted(cells, key=lambda c: (order.get(c[0], 2), -c[1], -c[2]))


def _cell_label(cell: tuple[str, int, int], jobs: dict[tuple[str, int, int], int]) -> str:
    kind, clusters, max_jobs = cell
    return f"{clusters} x {max_jobs}\n{jobs[cell]:,} jobs, {kind}"


def _batches(data: dict[str, Any], source: str, out: Path) -> list[Path]:
    import matplotlib.pyplot as plt

    summary = data["results"]["summary"]
    cells = _cells(summary)
    jobs = {
        (c["kind"], c["clusters"], c["max_jobs"]): c["clusters"] * c["jobs_per_cluster"]
        for c in data["params"]["cells"]
    }
    forms = [m for m in ("loop", "run", "run_wide", "bare") if any(s["mode"] == m for s in summary)]
    by = {(s["kind"], s["clusters"], s["max_jobs"], s["mode"]): s for s in summary}
    labels = [_cell_label(c, jobs) for c in cells]
    xs = list(range(len(cells)))
    width = 0.8 / (1 + len(forms))
    paths = []

    fig, ax = plt.subplots(figsize=(10, 4.6))
    base = [by[(*c, forms[0])]["baseline_jobs_per_s"] for c in cells]
    ax.bar([x - 0.4 + width / 2 for x in xs], base, width, label=_FORM_NAMES["baseline"],
           color="0.6")  # fmt: skip
    for i, form in enumerate(forms, start=1):
        vals = [by[(*c, form)]["jobs_per_s"] for c in cells]
        bars = ax.bar([x - 0.4 + width / 2 + i * width for x in xs], vals, width,
                      label=_FORM_NAMES[form])  # fmt: skip
        for bar, c in zip(bars, cells, strict=True):
            ax.annotate(f"{by[(*c, form)]['speedup']:.2f}x", (bar.get_x() + width / 2,
                        bar.get_height()), ha="center", va="bottom", fontsize=7)  # fmt: skip
    for x, b in zip(xs, base, strict=True):  # the goal: 1.5x the original
        ax.hlines(1.5 * b, x - 0.4, x + 0.4, colors="k", linestyles="dotted", linewidth=1)
    ax.set_xticks(xs, labels, fontsize=8)
    ax.set_ylabel("jobs drained per second")
    ax.set_ylim(0, 1.35 * max(1.5 * max(base), *(by[(*c, f)]["jobs_per_s"] for c in cells
                                               for f in forms)))  # fmt: skip
    ax.set_title("Draining a backlog: clusters x max_jobs (dotted: 1.5x the original)",
                 fontsize=10)  # fmt: skip
    ax.legend(fontsize=8, ncol=3, loc="upper center")
    ax.grid(True, axis="y", alpha=0.3)
    paths.append(_save(fig, source, out / "batches-jobs.png"))

    fig, ax = plt.subplots(figsize=(10, 4.6))
    modes = ["baseline", *forms]
    width = 0.8 / len(modes)
    for i, mode in enumerate(modes):
        key = forms[0] if mode == "baseline" else mode
        prefix = "baseline_" if mode == "baseline" else ""
        client = [by[(*c, key)][f"{prefix}client_us_per_job"] for c in cells]
        server = [by[(*c, key)][f"{prefix}server_us_per_job"] for c in cells]
        pos = [x - 0.4 + width / 2 + i * width for x in xs]
        color = "0.6" if mode == "baseline" else f"C{i - 1}"
        ax.bar(pos, client, width, color=color, label=f"{_FORM_NAMES[mode]}: client")
        ax.bar(pos, server, width, bottom=client, color=color, alpha=0.35, hatch="//",
               label=f"{_FORM_NAMES[mode]}: server")  # fmt: skip
    for x, c in zip(xs, cells, strict=True):  # the goal: half the original's client CPU
        half = 0.5 * by[(*c, forms[0])]["baseline_client_us_per_job"]
        ax.hlines(half, x - 0.4, x + 0.4, colors="k", linestyles="dotted", linewidth=1)
    ax.set_xticks(xs, labels, fontsize=8)
    ax.set_ylabel("CPU µs per job (log)")
    ax.set_yscale("log")
    ax.set_ylim(bottom=1)
    _plain_numbers(ax.yaxis)
    ax.set_title(
        "CPU per job: client solid, server hatched on top (dotted: half the original's client CPU)",
        fontsize=10,
    )
    ax.legend(fontsize=7, ncol=3, loc="upper center")
    ax.set_ylim(top=ax.get_ylim()[1] * 8)
    ax.grid(True, axis="y", alpha=0.3)
    paths.append(_save(fig, source, out / "batches-cpu.png"))
    return paths


def _scale(data: dict[str, Any], source: str, path: Path) -> Path:
    import matplotlib.pyplot as plt

    rows = sorted(data["results"]["rows"], key=lambda r: r["pollers"])
    n = [r["pollers"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.6))
    panels = (
        ("RequestJobs per second", [r["polls_per_s"] for r in rows]),
        ("CPU, % of one core", [r["cpu_pct"] for r in rows]),
        ("memory per cluster, KiB", [r["rss_per_poller_kib"] for r in rows]),
    )
    for ax, (title, values) in zip(axes, panels, strict=True):
        ax.plot(n, values, marker="o")
        ax.set_xscale("log")
        ax.set_xlabel("idle clusters in the group")
        ax.set_title(title, fontsize=10)
        if title.startswith("memory"):
            ax.set_yscale("log")
            _plain_numbers(ax.yaxis)
        ax.grid(True, alpha=0.3)
    axes[0].axhline(500, color="k", linestyle="dotted", linewidth=1)
    axes[0].annotate("budget: 500/s", (n[0], 500), fontsize=7, va="bottom")
    fig.suptitle("What an idle PollerGroup costs", fontsize=11)
    return _save(fig, source, path)


def _first_job(data: dict[str, Any], source: str, path: Path) -> Path:
    import matplotlib.pyplot as plt

    rows = data["results"]["variants"]
    fig, ax = plt.subplots(figsize=(7, 3.4))
    names = [r["variant"] for r in rows]
    bars = ax.bar(names, [r["median_ms"] for r in rows], color="C0")
    for bar, r in zip(bars, rows, strict=True):
        ax.annotate(f"{r['median_ms']:.1f} ms", (bar.get_x() + bar.get_width() / 2,
                    bar.get_height()), ha="center", va="bottom", fontsize=8)  # fmt: skip
    ax.axhline(10, color="k", linestyle="dotted", linewidth=1)
    ax.set_yscale("log")
    _plain_numbers(ax.yaxis)
    ax.set_ylabel("ms, median (log)")
    ax.set_title("Entering a poller or group with jobs waiting, to its first batch "
                 "(dotted: 10 ms)", fontsize=9)  # fmt: skip
    ax.grid(True, axis="y", alpha=0.3)
    return _save(fig, source, path)
