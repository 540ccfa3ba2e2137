"""README.md states facts that the code decides; these tests keep the two in step."""

from __future__ import annotations

import re
from pathlib import Path

from rainbow_aio import RetryPolicy
from rainbow_aio._retry import RETRY_TABLE, Fault

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")

# README's method names -> the RPC names the retry table is keyed by
RPC_OF = {
    "register": "Register",
    "submit_job": "SubmitJob",
    "request_jobs": "RequestJobs",
    "accept_jobs": "AcceptJobs",
    "ping": "Serial",
    "stream_ping": "Stream",
}
COLUMNS = [Fault.NOT_CONNECTED, Fault.CONNECTION_LOST, Fault.DEADLINE, Fault.BUSY]


def test_the_retry_table_in_the_readme_is_the_clients() -> None:
    section = README.split("\n## Retries\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(\w+)` \| (.+) \|$", section, flags=re.M)
    documented = {name: [c.strip() for c in cells.split("|")] for name, cells in rows}
    assert set(RPC_OF) <= set(documented)
    for name, rpc in RPC_OF.items():
        cells = documented[name]
        assert len(cells) == len(COLUMNS), name
        for fault, cell in zip(COLUMNS, cells, strict=True):
            retried = cell.startswith("retried")
            assert retried == (fault in RETRY_TABLE[rpc]), (name, fault, cell)


def test_the_default_retry_policy_in_the_readme_is_the_clients() -> None:
    policy = RetryPolicy()
    text = " ".join(README.split())
    assert (
        f"RetryPolicy(max_attempts={policy.max_attempts}, "
        f"initial_backoff={policy.initial_backoff}, max_backoff={policy.max_backoff})` "
        "is the default"
    ) in text
