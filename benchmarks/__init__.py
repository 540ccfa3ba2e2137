"""rainbow-aio benchmarks: what the client, the poller and the embedded server cost.

Run ``python -m benchmarks run [--quick] [--only NAME]``; ``python -m benchmarks list``
names the benchmarks. Each benchmark starts its own ``rainbow-aio serve`` process on
127.0.0.1 with a temporary database, drives it from a separate load-generator process,
checks its own correctness while it runs (every job accepted exactly once, none lost),
and writes one JSON file (and sometimes a PNG chart) into ``benchmarks/results/``.
BENCHMARKS.md quotes those files.
"""
