"""Entry point of a benchmark worker process: ``python -m benchmarks._worker MODULE:FUNC``.

The parameters arrive as one JSON object on stdin; the function's result (a JSON-able
dict) goes to stdout on one line after a marker, so stray prints cannot corrupt it.
An ``async def`` function runs in a fresh event loop. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import json
import sys
import traceback
from typing import Any

from benchmarks._harness import RESULT_MARK


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks._worker")
    parser.add_argument("role", help="module:function, e.g. benchmarks.drain:consume")
    parser.add_argument("--profile", help="write a pyinstrument HTML profile here")
    args = parser.parse_args()
    params: dict[str, Any] = json.loads(sys.stdin.read() or "{}")
    module_name, _, func_name = args.role.partition(":")
    func = getattr(importlib.import_module(module_name), func_name)

    profiler = None
    if args.profile:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.001, async_mode="disabled")
        profiler.start()
    code = 0
    try:
        result = asyncio.run(func(params)) if inspect.iscoroutinefunction(func) else func(params)
    except BaseException as exc:
        traceback.print_exc()
        result = {"error": f"{type(exc).__name__}: {exc}"}
        code = 1
    finally:
        if profiler is not None:
            profiler.stop()
            with open(args.profile, "w") as f:
                f.write(profiler.output_html())
    sys.stdout.write(RESULT_MARK + json.dumps(result) + "\n")
    sys.stdout.flush()
    return code


if __name__ == "__main__":
    sys.exit(main())
