"""Command line: ``python -m benchmarks run [--quick] [--only NAME ...]``.

``run`` runs the benchmarks one after another (full size unless ``--quick``), each
against its own server process, and writes ``benchmarks/results/<UTC stamp>-<name>.json``
(``-quick`` is added to quick runs' names) plus a chart where one helps. The exit status
is non-zero when any benchmark's correctness check failed; a missed speed target is
reported, not an error. ``list`` names the benchmarks; ``summary FILE...`` prints the
targets of result files; ``report FILE...`` prints their markdown tables (BENCHMARKS.md);
``profile FILE`` summarises a py-spy profile written by ``run --profile``; ``plot FILE...``
draws the documentation's charts from result files (``docs/_static/benchmarks/``).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import shlex
import sys
import time
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any

from benchmarks import _harness as H

# Run order: the cheapest first, so a broken set-up fails fast.
BENCHMARKS = [
    "server",
    "client_overhead",
    "original",
    "batches",
    "first_job",
    "drain",
    "latency",
    "scale",
    "agent",
]


def load(name: str) -> ModuleType:
    return importlib.import_module(f"benchmarks.{name}")


async def run_one(ctx: H.RunContext, name: str) -> tuple[bool, Path]:
    mod = load(name)
    H.say(f"\n== {name}: {mod.TITLE} [{ctx.size}]")
    checks = H.Checks()
    machine = H.machine_info()
    started = time.time()
    t0 = time.perf_counter()
    out: dict[str, Any] = {}
    try:
        out = await mod.run(ctx, checks)
    except Exception as exc:
        traceback.print_exc()
        checks.check("benchmark ran to completion", False, f"{type(exc).__name__}: {exc}")
    duration = time.perf_counter() - t0
    machine["loadavg_end"] = [round(x, 2) for x in __import__("os").getloadavg()]
    payload = {
        "benchmark": name,
        "title": mod.TITLE,
        "size": ctx.size,
        "command": ctx.command,
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "duration_s": round(duration, 2),
        "machine": machine,
        "params": out.get("params", {}),
        "preload": out.get("preload"),
        "results": out.get("results", {}),
        "targets": out.get("targets", []),
        "correct": checks.ok,
        "checks": checks.items,
    }
    if ctx.server_tree is not None:
        payload["server_tree"] = H.tree_info(ctx.server_tree)
    if ctx.compare_tree is not None:
        payload["compare_tree"] = H.tree_info(ctx.compare_tree)
    if ctx.client_tree is not None:
        payload["client_tree"] = H.tree_info(ctx.client_tree)
    path = H.write_result(ctx, name, payload)
    if ctx.charts and checks.ok and hasattr(mod, "chart") and payload["results"]:
        png = path.with_suffix(".png")
        try:
            if mod.chart(payload, str(png)):
                payload["chart"] = png.name
                path.write_text(json.dumps(payload, indent=2) + "\n")
        except Exception as exc:  # a chart is a nicety; never fail the run for it
            H.say(f"  (chart not drawn: {type(exc).__name__}: {exc})")
    for t in payload["targets"]:
        H.say(
            f"  {t['verdict']:<4} {t['name']}: {t['measured']} {t['unit']} "
            f"(target {t['direction']} {t['goal']}, ratio {t['ratio_vs_goal']})"
        )
    verdict = "CORRECT" if checks.ok else "INCORRECT (a fast wrong run is a failure)"
    H.say(f"  {name}: {verdict}; {duration:.1f} s; wrote {H.shown_path(path)}")
    return checks.ok, path


async def run_all(ctx: H.RunContext, names: list[str]) -> int:
    ok_all = True
    try:
        for name in names:
            ok, _ = await run_one(ctx, name)
            ok_all &= ok
    finally:
        ctx.cleanup()
    return 0 if ok_all else 1


def summary(files: list[str]) -> int:
    for f in files:
        data = json.loads(Path(f).read_text())
        print(
            f"{data['benchmark']} ({data['size']}, {data['started_utc']}, "
            f"load {data['machine']['loadavg']}): correct={data['correct']}"
        )
        for t in data["targets"]:
            print(
                f"  {t['verdict']:<4} {t['name']}: {t['measured']} {t['unit']} "
                f"(target {t['direction']} {t['goal']}, ratio {t['ratio_vs_goal']})"
            )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run benchmarks and write results")
    size = r.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="short run (about a minute)")
    size.add_argument("--toy", action="store_true", help=argparse.SUPPRESS)  # smoke test size
    size.add_argument(
        "--size",
        metavar="NAME",
        help="a size some benchmarks define besides toy, quick and full (the server's "
        "`backlog`: only its part with a million waiting jobs); every benchmark run "
        "must define it",
    )
    r.add_argument(
        "--only",
        action="append",
        choices=BENCHMARKS,
        metavar="NAME",
        help="run only this benchmark (repeatable); see `list`",
    )
    r.add_argument("--results-dir", type=Path, default=H.RESULTS_DIR)
    r.add_argument("--no-charts", action="store_true")
    r.add_argument(
        "--server-tree",
        type=Path,
        metavar="DIR",
        help="run the servers from the rainbow_aio of this source tree (an older "
        "checkout, say) for a before/after comparison; results are marked -other-server",
    )
    r.add_argument(
        "--compare-tree",
        type=Path,
        metavar="DIR",
        help="the server benchmark also runs SubmitJob and RequestJobs against the server "
        "of this source tree and this one's, in alternating rounds, side by side",
    )
    r.add_argument(
        "--client-tree",
        type=Path,
        metavar="DIR",
        help="the original benchmark also drains with one-job-at-a-time consumers running "
        "the rainbow_aio of this source tree (an older checkout), side by side with this "
        "one's: a before/after comparison of the per-job path",
    )
    r.add_argument(
        "--profile",
        action="store_true",
        help="run the measured client workers under py-spy (collapsed stacks beside "
        "the results, *.pyspy.txt; summarise with `profile FILE`)",
    )
    sub.add_parser("list", help="name the benchmarks")
    rp = sub.add_parser("report", help="markdown tables of result files (for BENCHMARKS.md)")
    rp.add_argument("files", nargs="+", type=Path)
    pl = sub.add_parser("plot", help="draw the documentation's charts from result files")
    pl.add_argument("files", nargs="+", type=Path)
    pl.add_argument("--out", type=Path, default=None, help="directory (docs/_static/benchmarks)")
    pr = sub.add_parser("profile", help="summarise a py-spy profile written by run --profile")
    pr.add_argument("file", type=Path)
    pr.add_argument("--top", type=int, default=25)
    s = sub.add_parser("summary", help="print the targets of result files")
    s.add_argument("files", nargs="+")
    args = parser.parse_args(argv)

    if args.cmd == "list":
        for name in BENCHMARKS:
            print(f"{name:<16} {load(name).TITLE}")
        return 0
    if args.cmd == "summary":
        return summary(args.files)
    if args.cmd == "report":
        from benchmarks._report import render

        print(render(args.files))
        return 0
    if args.cmd == "plot":
        from benchmarks._plot import DEFAULT_OUT, plot

        for path in plot(args.files, args.out or DEFAULT_OUT):
            print(H.shown_path(path))
        return 0
    if args.cmd == "profile":
        print(H.profile_summary(args.file, args.top))
        return 0
    size = args.size or ("toy" if args.toy else "quick" if args.quick else "full")
    names = [n for n in BENCHMARKS if not args.only or n in args.only]
    lacking = [n for n in names if size not in getattr(load(n), "SIZES", {size: None})]
    if lacking:
        parser.error(f"no size {size!r} in {', '.join(lacking)} (choose them with --only)")
    shown = ["python", "-m", "benchmarks", *(argv if argv is not None else sys.argv[1:])]
    ctx = H.RunContext(
        size=size,
        results_dir=args.results_dir,
        stamp=H.now_stamp(),
        command=shlex.join(shown),
        charts=not args.no_charts,
        profile=args.profile,
        server_tree=args.server_tree.resolve() if args.server_tree else None,
        compare_tree=args.compare_tree.resolve() if args.compare_tree else None,
        client_tree=args.client_tree.resolve() if args.client_tree else None,
    )
    # debug=False: tox sets PYTHONDEVMODE, whose slow-callback reports are noise here
    return asyncio.run(run_all(ctx, names), debug=False)


if __name__ == "__main__":
    sys.exit(main())
