"""The original rainbow Python bindings' scripts, unchanged, against ``rainbow-aio serve``.

Users of the original bindings run ``examples/flux/register.py``, ``submit-job.py`` and
``poll-jobs.py`` with the bindings' own generated stubs. The embedded server is a
drop-in for them only if those scripts register, submit, poll and accept against it as
they do against the Go server. ``RAINBOW_ORIGINAL_BINDINGS`` names the bindings' folder
(this repository's CI uses ``../shared/peers/rainbow-go/python-v1``); without it this
module is skipped with one reason (and fails under ``CI=true``).

Each script runs as a child process with ``PYTHONPATH`` set to that folder, so it
imports its own ``rainbow.protos`` stubs, never this package's. The stubs were made by
protoc for protobuf 4.25; the protobuf 7 runtime this project requires still loads them
(warnings are errors in the child, so a deprecation would show here too), which is why
they need no environment of their own.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from support.peers import original_bindings
from support.scripts import credentials_printed, run_python

from rainbow_aio import RainbowClient
from rainbow_aio.testing import ServerProcess

pytestmark = pytest.mark.compat

BINDINGS = original_bindings()
SCRIPTS = BINDINGS / "examples" / "flux"


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[ServerProcess]:
    """``rainbow-aio serve`` as a child process, with the Go server's default secret."""
    async with ServerProcess(tmp_path / "rainbow.db") as server:
        yield server


async def original(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        run_python, str(SCRIPTS / script), *args, env={"PYTHONPATH": str(BINDINGS)}
    )


async def test_the_original_scripts_work_against_the_embedded_server(
    served: ServerProcess,
) -> None:
    where = ("--host", served.address, "--cluster", "flux-original")

    registered = await original("register.py", *where)
    assert registered.returncode == 0, registered.stderr
    token, secret = credentials_printed(registered.stdout)
    again = await original("register.py", *where)
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines() == [
        "status: REGISTER_EXISTS",
        "",
        "The cluster flux-original already exists.",
    ]

    commands = ["echo hello world", "sleep 1 && echo <done>", "hostname"]
    for number, command in enumerate(commands, start=1):
        submitted = await original(
            "submit-job.py", *where, "--token", token, "--nodes", "2", *command.split()
        )
        assert submitted.returncode == 0, submitted.stderr
        # the embedded server answers the real id, which the original prints as it is
        assert submitted.stdout.splitlines() == [
            f"⭐️ Submitting job: {command}",
            f"jobid: {number}",
            "status: SUBMIT_SUCCESS",
            "",
        ]

    poll = ("poll-jobs.py", *where, "--secret", secret)
    listed = await original(*poll)
    assert listed.returncode == 0, listed.stderr
    head, jobs = listed.stdout.splitlines()[:2], listed.stdout.splitlines()[2:]
    assert head == ["Status: REQUEST_JOBS_SUCCESS", "Received 3 jobs for inspection!"]
    # the original prints them in map order, each as the server's job JSON
    async with RainbowClient(served.address) as client:
        listing = await client.request_jobs("flux-original", secret)
    assert [(job.id, job.command, job.nodes) for job in listing] == [
        (n, c, 2) for n, c in enumerate(commands, start=1)
    ]
    assert sorted(jobs) == sorted(job.to_json() for job in listing)

    # --accept takes jobs in random order: see which one, then check the server
    accepting = await original(*poll, "--accept", "1")
    assert accepting.returncode == 0, accepting.stderr
    assert accepting.stdout.splitlines()[-2] == "Accepting 1 jobs..."
    taken = json.loads(accepting.stdout.splitlines()[-1])
    assert len(taken) == 1
    assert taken[0] in (1, 2, 3)
    async with RainbowClient(served.address) as client:
        left = [job.id for job in await client.request_jobs("flux-original", secret)]
    assert left == sorted({1, 2, 3} - set(taken))

    rest = await original(*poll, "--accept", "5")
    assert rest.returncode == 0, rest.stderr
    assert sorted(json.loads(rest.stdout.splitlines()[-1])) == left
    # nothing left: REQUEST_JOBS_NORESULTS is 0, which the original reports this way
    empty = await original(*poll)
    assert empty.returncode == 0, empty.stderr
    assert empty.stdout.splitlines() == ["Issue with requesting jobs:", ""]


async def test_the_original_scripts_see_the_go_servers_errors(served: ServerProcess) -> None:
    where = ("--host", served.address, "--cluster", "flux-denied")
    for args in (
        ("register.py", *where, "--secret", "wrong"),
        ("submit-job.py", *where, "--token", "wrong", "true"),
        ("poll-jobs.py", *where, "--secret", "wrong"),
    ):
        result = await original(*args)
        # the original scripts do not catch errors: grpc raises with the server's details
        assert result.returncode == 1
        assert "StatusCode.UNKNOWN" in result.stderr
        assert 'details = "request denied"' in result.stderr
