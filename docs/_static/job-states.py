"""Draws docs/_static/job-states.svg and .png, the agent's job states (running-jobs.md).

Needs Graphviz's dot (Debian: apt-get install graphviz). Run from anywhere:
``python docs/_static/job-states.py``; commit the outputs with this script.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent

DOT = r"""
digraph states {
  graph [rankdir=LR, fontname="Helvetica", fontsize=11, nodesep=0.35, ranksep=0.55,
         bgcolor="white", pad=0.2];
  node  [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=12,
         fillcolor="#eef3fb", color="#4a6fa5", penwidth=1.2, margin="0.15,0.07"];
  edge  [fontname="Helvetica", fontsize=10, color="#555555", arrowsize=0.7];

  listed    [label="listed on the server\n(held until nodes are free)", shape=box,
             style="rounded,dashed", fillcolor="white", color="#888888"];
  accepting [label="accepting\n(intent journaled)"];
  accepted  [label="accepted\n(this agent owns it)"];
  running   [label="running\n(executor's handle)"];

  finished    [label="finished\n(exit 0)", fillcolor="#e5f4e8", color="#3d8b4f"];
  failed      [label="failed\n(exit ≠ 0, killed, timed out,\ncould not start)",
               fillcolor="#fbeaea", color="#b44a4a"];
  interrupted [label="interrupted\n(cancelled)", fillcolor="#fdf3e1", color="#b5832b"];
  not_taken   [label="not_taken\n(still on the server)", fillcolor="#f2f2f2", color="#888888"];
  uncertain   [label="uncertain\n(shared mode: not run)", fillcolor="#f2f2f2", color="#888888"];
  refused     [label="refused\n(can never fit)", fillcolor="#f2f2f2", color="#888888"];

  listed -> refused [label="more nodes\nthan the agent has"];
  listed -> accepting [label="nodes free"];
  accepting -> accepted [label="AcceptJobs took it"];
  accepting -> not_taken [label="not taken"];
  accepting -> uncertain [label="answer lost\n(shared mode)"];
  accepted -> running [label="executor.start"];
  running -> finished [label="exit 0"];
  running -> failed;
  running -> interrupted [label="cancel"];
  running -> running [label="agent restart:\nreattach", style=dashed];

  {rank=same; finished; failed; interrupted}
  {rank=same; not_taken; uncertain}
}
"""


def main() -> None:
    for fmt in ("svg", "png"):
        args = ["dot", f"-T{fmt}", "-o", str(HERE / f"job-states.{fmt}")]
        if fmt == "png":
            args.insert(1, "-Gdpi=110")
        subprocess.run(args, input=DOT, text=True, check=True)


if __name__ == "__main__":
    main()
