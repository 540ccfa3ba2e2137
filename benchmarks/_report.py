"""Markdown tables from result files: ``python -m benchmarks report FILE...``.

BENCHMARKS.md quotes these tables, so every number in it can be traced to a JSON file.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any


def _table(head: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:,.3f}" if abs(v) < 10 else f"{v:,.0f}"
        if isinstance(v, int):
            return f"{v:,}"
        return str(v)

    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _num(v: float | None) -> str:
    if v is None:
        return "-"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    return f"{v:.1f}" if abs(v) >= 10 else f"{v:.3f}"


def targets(data: dict[str, Any]) -> str:
    if not data["targets"]:
        return "_(no numeric target)_"
    return _table(
        ["target", "measured", "goal", "measured / goal", "verdict"],
        (
            [t["name"], f"{_num(t['measured'])} {t['unit']}".strip(),
             f"{t['direction']} {t['goal']}", t["ratio_vs_goal"], f"**{t['verdict']}**"]
            for t in data["targets"]
        ),
    )  # fmt: skip


def server(d: dict[str, Any]) -> str:
    rows = sorted(d["results"]["phases"], key=lambda p: (p["rpc"], p["stored"], p["in_flight"]))
    out = [] if not rows else [_table(
        ["RPC", "jobs stored at start", "in flight", "calls/s", "p50 ms", "p99 ms", "server CPU %",
         "load-gen CPU %"],
        ([p["rpc"], p.get("stored_total_at_start", p["stored"]), p["in_flight"],
          p["calls_per_s"], p["latency"]["p50_ms"], p["latency"]["p99_ms"],
          p["server_cpu_pct"], p["client_cpu_pct"]] for p in rows),
    )]  # fmt: skip
    backlog = d["results"].get("backlog")
    if backlog:
        out.append(_table(
            ["jobs waiting", "restart to first answer s (each)", "server RSS MB",
             "RequestJobs(10) p50 ms, not cached / cached", "Serial p50 ms",
             "server CPU us per RequestJobs(10), not cached", "RequestJobs(10) calls/s at 16, "
             "cached", "SubmitJob calls/s at 64", "SubmitJob p99 ms"],
            ([s["waiting"] if s["label"].endswith(" waiting")
              else f"{s['waiting']:,} ({s['label']})",
              " / ".join(f"{x:.3f}" for x in s["restart"]["to_first_answer_s"]), s["rss_mb"],
              f"{s['probe']['request_fresh_1']['latency']['p50_ms']:.3f} / "
              f"{s['probe']['request_1']['latency']['p50_ms']:.3f}",
              s["probe"]["serial_1"]["latency"]["p50_ms"],
              s["probe"]["request_fresh_16"].get("server_cpu_us_per_listing"),
              s["probe"]["request_16"]["calls_per_s"],
              s["probe"]["submit_64"]["calls_per_s"],
              s["probe"]["submit_64"]["latency"]["p99_ms"]] for s in backlog["states"]),
        ))  # fmt: skip
        out.append(_table(
            ["full listing", "jobs", "answer MB", "listing s", "small calls meanwhile",
             "their p50 ms", "their slowest ms (SubmitJob / RequestJobs)", "over 100 ms",
             "small calls otherwise: slowest ms", "server RSS peak MB",
             "server RSS 1 s after MB"],
            ([i + 1, x["jobs"], x["answer_mb"], x["listing_s"], x["small_calls_during"]["n"],
              x["small_calls_during"]["p50_ms"],
              _by_rpc(x),
              x.get("small_calls_over_100ms"),
              x["small_calls_outside"]["max_ms"], x["server_rss"]["peak_mb"],
              x["server_rss"]["after_1s_mb"]] for i, x in enumerate(backlog["listings"])),
        ))  # fmt: skip
    drain = d["results"].get("drain")
    if drain:
        out.append(_table(
            ["drain round", "server", "jobs", "listed", "calls", "seconds", "jobs/s",
             "server us per job", "event loop thread us", "other threads us"],
            ([r["round"], r["server"], r["jobs"], r["listed"], r["calls"], r["seconds"],
              r["jobs_per_s"], r["server_us_per_job"], r["event_loop_thread_us_per_job"],
              r["other_threads_us_per_job"]] for r in drain["rounds"]),
        ))  # fmt: skip
        if drain.get("this_over_other") is not None:
            m = drain["medians"]
            out.append(
                f"Drain side by side with `{drain['other_tree']['path']}`: median server CPU "
                f"per listed and accepted job, this / other, "
                f"{m['this']['server_us_per_job']} / {m['other']['server_us_per_job']} us "
                f"({drain['this_over_other']:.3f}x)."
            )
    side = d["results"].get("side_by_side")
    if side:
        out.append(_table(
            ["round", "server", "SubmitJob calls/s at 64", "RequestJobs(10) calls/s at 16"],
            ([r["round"], r["server"], r["SubmitJob"], r["RequestJobs"]]
             for r in side["rounds"]),
        ))  # fmt: skip
        out.append(
            f"Side by side with `{side['other_tree']['path']}`: means this / other, SubmitJob "
            f"{side['means']['this']['SubmitJob']:,.0f} / "
            f"{side['means']['other']['SubmitJob']:,.0f} calls/s "
            f"({side['this_over_other']['SubmitJob']:.3f}x), RequestJobs "
            f"{side['means']['this']['RequestJobs']:,.0f} / "
            f"{side['means']['other']['RequestJobs']:,.0f} calls/s "
            f"({side['this_over_other']['RequestJobs']:.3f}x)."
        )
    floods = d["results"].get("floods")
    if floods:
        out.append(_table(
            ["flood", "clients x submits at once", "acknowledged", "stored", "raised",
             "answered 'database is locked'", "seconds", "latency p50 / p99 / max ms",
             "server RSS before / peak / after MB"],
            ([f["label"], f"{f['clients']} x {f['in_flight_each']:,}", f["acknowledged"],
              f["stored"], sum(f["errors"].values()), f["busy_answers"], f["seconds"],
              " / ".join(f"{f['latency_with_retries'][k]:,.0f}"
                         for k in ("p50_ms", "p99_ms", "max_ms")),
              " / ".join(str(f["server_rss"][k]) for k in ("start_mb", "peak_mb", "end_mb"))]
             for f in floods),
        ))  # fmt: skip
    return "\n\n".join(out)


def _by_rpc(listing: dict[str, Any]) -> str:
    worst = f"{listing['small_calls_during']['max_ms']:,.0f}"
    by_rpc = listing.get("small_calls_during_by_rpc")
    if not by_rpc:
        return worst
    parts = (by_rpc[rpc]["max_ms"] for rpc in ("SubmitJob", "RequestJobs"))
    return f"{worst} ({' / '.join('-' if v is None else f'{v:,.0f}' for v in parts)})"


def client_overhead(d: dict[str, Any]) -> str:
    return _table(
        ["call", "in flight", "raw stub calls/s", "RainbowClient calls/s", "ratio",
         "per-round ratios", "raw CPU us/call", "client CPU us/call"],
        ([r["op"], r["in_flight"], r["raw_calls_per_s"], r["client_calls_per_s"], r["ratio"],
          " ".join(f"{x:.2f}" for x in r["round_ratios"]), r["raw_cpu_us_per_call"],
          r["client_cpu_us_per_call"]] for r in d["results"]["rows"]),
    )  # fmt: skip


def original(d: dict[str, Any]) -> str:
    return _table(
        ["clusters", "max_jobs", "rainbow-aio settings", "original jobs/s",
         "rainbow-aio jobs/s", "speed x", "original CPU s/1000 jobs",
         "rainbow-aio CPU s/1000 jobs", "CPU ratio"],
        ([s["clusters"], s["max_jobs"], s.get("mode", "rainbow_aio"), s["baseline_jobs_per_s"],
          s["rainbow_aio_jobs_per_s"], s["speedup"], s["baseline_cpu_s_per_1000"],
          s["rainbow_aio_cpu_s_per_1000"], s["cpu_ratio"]] for s in d["results"]["summary"]),
    )  # fmt: skip


def drain(d: dict[str, Any]) -> str:
    runs = _table(
        ["settings", "accepts", "run", "jobs", "seconds", "jobs/s", "AcceptJobs calls",
         "polls", "client CPU us/job", "server CPU s"],
        ([r["variant"], r["mode"], r["run"], r["jobs"], r["seconds"], r["jobs_per_s"],
          r["accept_calls"], r["polls"], r["client_cpu_us_per_job"], r["server_cpu_s"]]
         for r in d["results"]["runs"]),
    )  # fmt: skip
    summ = _table(
        ["settings", "batched jobs/s", "one-by-one jobs/s", "batched / one-by-one"],
        ([v, s["batched_jobs_per_s"], s["one_by_one_jobs_per_s"], s["speedup"]]
         for v, s in d["results"]["summary"].items()),
    )  # fmt: skip
    return summ + "\n\n" + runs


def latency(d: dict[str, Any]) -> str:
    return _table(
        ["poller settings", "load", "jobs (timed)", "offered jobs/s", "handed out p50 ms",
         "handed out p99 ms", "accepted p50 ms", "accepted p99 ms", "SubmitJob answer p99 ms",
         "polls"],
        ([p["config"], p["load"], f"{p['jobs']} ({p.get('timed_jobs', p['jobs'])})",
          p["offered_rate_per_s"], p["handed_out"]["p50_ms"], p["handed_out"]["p99_ms"],
          p["accepted"]["p50_ms"], p["accepted"]["p99_ms"],
          (p.get("submit_ack") or {}).get("p99_ms"), p["polls"]]
         for p in d["results"]["phases"]),
    )  # fmt: skip


def scale(d: dict[str, Any]) -> str:
    return _table(
        ["pollers", "RSS KiB/poller", "RSS after MiB", "CPU % of a core",
         "CPU % probe only", "CPU us/poll",
         "loop lag p50 ms", "loop lag p99 ms", "polls/s", "expected polls/s", "start s",
         "all polled s", "stop s"],
        ([r["pollers"], r["rss_per_poller_kib"], r["rss_after_mib"], r["cpu_pct"],
          r.get("cpu_pct_without_pollers"), r["cpu_us_per_poll"], r["lag"]["p50_ms"],
          r["lag"]["p99_ms"], r["polls_per_s"],
          r.get("expected_polls_per_s"), r["start_s"], r["all_polled_s"], r["stop_s"]]
         for r in d["results"]["rows"]),
    )  # fmt: skip


def batches(d: dict[str, Any]) -> str:
    """Per cell and mode: jobs/s and CPU per job against the original usage, jobs listed
    and RPCs per job drained, and (with --client-tree) against the other tree."""
    runs = d["results"]["runs"]

    def per_job(cell: tuple[str, int, int], mode: str) -> tuple[float | None, float | None]:
        rs = [r for r in runs if (r["kind"], r["clusters"], r["max_jobs"], r["mode"]) ==
              (*cell, mode)]  # fmt: skip
        jobs = sum(r["jobs"] for r in rs)
        if not jobs:
            return None, None
        if mode == "baseline":
            return None, sum(r["rpcs"] for r in rs) / jobs
        if mode == "bare":  # no poller: the loop counts its own calls and listed jobs
            return sum(r["jobs_listed"] for r in rs) / jobs, sum(r["rpcs"] for r in rs) / jobs
        listed = sum(r["poller_stats"]["jobs_listed"] for r in rs)
        calls = sum(r["poller_stats"]["polls"] + r["poller_stats"]["accept_calls"] for r in rs)
        return listed / jobs, calls / jobs

    def gc(share: float | None) -> str:
        # the client's CPU in the cyclic garbage collector (files before it was timed: -)
        return "-" if share is None or share != share else f"{100 * share:.0f}%"

    rows = []
    order = {"short": 0, "steady": 1}
    summary = sorted(d["results"]["summary"], key=lambda s: (order.get(s["kind"], 2),
                     -s["clusters"], -s["max_jobs"], s["mode"]))  # fmt: skip
    seen: set[tuple[str, int, int]] = set()
    for s in summary:
        cell = (s["kind"], s["clusters"], s["max_jobs"])
        if cell not in seen:
            seen.add(cell)
            _, rpcs = per_job(cell, "baseline")
            rows.append([s["kind"], f"{s['clusters']} x {s['max_jobs']}", "original",
                         s["baseline_jobs_per_s"], "-", s["baseline_client_us_per_job"], "-",
                         gc(s.get("baseline_gc_share")), s["baseline_server_us_per_job"], 1.0,
                         rpcs, "-"])  # fmt: skip
        listed, rpcs = per_job(cell, s["mode"])
        before = "-"
        if "vs_before" in s:
            before = f"{s['vs_before']:.2f}x, CPU {s['cpu_vs_before']:.2f}x"
        rows.append([s["kind"], f"{s['clusters']} x {s['max_jobs']}", s["mode"],
                     s["jobs_per_s"], f"{s['speedup']:.2f}x", s["client_us_per_job"],
                     f"{s['cpu_ratio']:.2f}x", gc(s.get("gc_share")), s["server_us_per_job"],
                     listed, rpcs, before])  # fmt: skip
    return _table(
        ["cell", "clusters x max_jobs", "mode", "jobs/s", "vs original", "client µs/job",
         "vs original", "of which GC", "server µs/job", "jobs listed / job", "RPCs / job",
         "vs before (jobs/s, client CPU)"],
        rows,
    )  # fmt: skip


def first_job(d: dict[str, Any]) -> str:
    return _table(
        ["poller or group", "median ms", "reps ms", "first rep of the process ms"],
        ([r["variant"], r["median_ms"], " ".join(f"{x:.1f}" for x in r["reps_ms"]),
          r["first_rep_ms"]] for r in d["results"]["variants"]),
    )  # fmt: skip


TABLES: dict[str, Callable[[dict[str, Any]], str]] = {
    "batches": batches,
    "first_job": first_job,
    "server": server,
    "client_overhead": client_overhead,
    "original": original,
    "drain": drain,
    "latency": latency,
    "scale": scale,
}


def render(files: Sequence[Path]) -> str:
    out = []
    for f in files:
        d = json.loads(f.read_text())
        m = d["machine"]
        out.append(f"### {d['benchmark']}: {d['title']}")
        out.append(
            f"`{d['command']}` -> `{f.name}`; {d['size']} size, {d['duration_s']} s, "
            f"started {d['started_utc']}; load average {m['loadavg']} at start, "
            f"{m.get('loadavg_end')} at end; {m['cores_logical']} cores, Python "
            f"{m['python']}, grpcio {m['grpcio']}, commit {m['git_commit']}"
            f"{' (dirty)' if m.get('git_dirty') else ''}; correctness checks: "
            f"{sum(c['ok'] for c in d['checks'])}/{len(d['checks'])} passed."
        )
        if d.get("server_tree"):
            tree = d["server_tree"]
            out.append(
                f"**Servers run from another tree:** `{tree['path']}` "
                f"(commit {tree.get('git_commit') or 'unknown'})."
            )
        if d["benchmark"] in TABLES and d["results"]:
            out.append(TABLES[d["benchmark"]](d))
        out.append(targets(d))
        if d.get("chart"):
            out.append(f"![{d['benchmark']}](benchmarks/results/{d['chart']})")
        out.append("")
    return "\n\n".join(out)
