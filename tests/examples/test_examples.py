"""The example scripts run as written against ``rainbow-aio serve``.

One real server process (``python -m rainbow_aio serve`` on a free loopback port, default
registration secret, as a user would start it) serves the whole module; each example
runs as a child process with only ``--host`` pointing at it. Ctrl-C is a real SIGINT sent
to the child once it is busy.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli._run import SilentServer, interrupt
from support.scripts import credentials_printed

from rainbow_aio.testing import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
FLUX = ROOT / "examples" / "flux"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("served") / "rainbow.db") as proc:
        yield proc


def run(script: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONIOENCODING": "utf-8", "PYTHONWARNINGS": "error"}
    return subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=env,
        cwd=ROOT,
        timeout=60,
        check=False,
    )


def test_the_flux_scripts_register_submit_poll_and_accept(server: ServerProcess) -> None:
    host = ("--host", server.address)

    registered = run(FLUX / "register.py", *host, "--cluster", "flux-demo")
    assert registered.returncode == 0, registered.stderr
    token, secret = credentials_printed(registered.stdout)

    again = run(FLUX / "register.py", *host, "--cluster", "flux-demo")
    assert again.returncode == 1
    assert again.stdout.splitlines() == [
        "status: REGISTER_EXISTS",
        "",
        "The cluster flux-demo already exists.",
    ]

    for words in (["echo", "hello", "world"], ["sleep", "1"]):
        submitted = run(
            FLUX / "submit-job.py", *host, "--token", token, "--cluster", "flux-demo", *words
        )
        assert submitted.returncode == 0, submitted.stderr
        out = submitted.stdout.splitlines()
        assert out[0] == f"⭐️ Submitting job: {' '.join(words)}"
        assert re.fullmatch(r"jobid: \d+", out[1])
        assert out[2] == "status: SUBMIT_SUCCESS"

    poll = (FLUX / "poll-jobs.py", *host, "--secret", secret, "--cluster", "flux-demo")
    listed = run(*poll)
    assert listed.returncode == 0, listed.stderr
    out = listed.stdout.splitlines()
    assert out[:2] == ["Status: REQUEST_JOBS_SUCCESS", "Received 2 jobs for inspection!"]
    assert '"command":"echo hello world"' in out[2]
    assert out[2].startswith('{"id":')

    accepting = run(*poll, "--accept", "1")
    assert accepting.returncode == 0, accepting.stderr
    first_id = re.match(r'\{"id":(\d+),', accepting.stdout.splitlines()[2])
    assert first_id
    assert accepting.stdout.splitlines()[-2:] == ["Accepting 1 jobs...", f"[{first_id[1]}]"]

    after = run(*poll)
    assert after.stdout.splitlines()[1] == "Received 1 jobs for inspection!"
    assert '"command":"sleep 1"' in after.stdout


def test_a_wrong_token_is_reported_without_a_traceback(server: ServerProcess) -> None:
    result = run(FLUX / "submit-job.py", "--host", server.address, "--token", "nope", "true")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "request denied" in result.stderr
    assert "nope" not in result.stderr


def test_many_clusters_runs_every_job_once(server: ServerProcess) -> None:
    result = run(
        ROOT / "examples" / "many_clusters.py",
        "--host",
        server.address,
        "--clusters",
        "4",
        "--jobs",
        "40",
        "--consumers",
        "3",
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "submitted 40 jobs to 4 clusters"
    assert sum(int(line.rsplit(" ", 2)[1]) for line in lines[1:5]) == 40
    assert lines[-1] == "ran 40 jobs, 40 distinct, of 40 submitted"


@pytest.mark.parametrize(
    ("script", "description", "options"),
    [
        ("register.py", "🌈️ Rainbow scheduler register", ["--cluster", "--host", "--secret"]),
        (
            "submit-job.py",
            "🌈️ Rainbow scheduler submit job",
            ["--cluster", "--host", "--token", "--nodes", "command"],
        ),
        (
            "poll-jobs.py",
            "🌈️ Rainbow scheduler poll (request jobs) and accept",
            ["--cluster", "--host", "--max-jobs", "--secret", "--nodes", "--accept"],
        ),
    ],
)
def test_the_flux_scripts_keep_the_original_help(
    script: str, description: str, options: list[str]
) -> None:
    result = run(FLUX / script, "--help")
    assert result.returncode == 0
    assert description in result.stdout
    for option in options:
        assert option in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--jobs", "0"), "argument --jobs: must be 1 or more, not 0"),
        (("--jobs", "-5"), "argument --jobs: must be 1 or more, not -5"),
        (("--clusters", "0"), "argument --clusters: must be 1 or more, not 0"),
        (("--consumers", "0"), "argument --consumers: must be 1 or more, not 0"),
        (("--jobs", "many"), "argument --jobs: not a whole number: 'many'"),
    ],
)
def test_many_clusters_refuses_counts_below_one(
    server: ServerProcess, args: tuple[str, ...], message: str
) -> None:
    """``--jobs 0`` used to wait forever for a job that never came, ``--clusters 0`` to
    divide by zero."""
    result = run(ROOT / "examples" / "many_clusters.py", "--host", server.address, *args)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines()[-1] == f"many_clusters.py: error: {message}"
    assert "Traceback" not in result.stderr


async def test_ctrl_c_while_consuming_stops_many_clusters_cleanly(server: ServerProcess) -> None:
    """The consumers finish the job in hand, the queued jobs go back to the server, and
    the script says how far it got, in one line."""
    result = await interrupt(
        str(ROOT / "examples" / "many_clusters.py"),
        "--host",
        server.address,
        "--clusters",
        "3",
        "--jobs",
        "300",
        "--consumers",
        "1",
        when_line="submitted ",
    )
    assert result.code == 130, result
    [line] = result.err.splitlines()
    done = re.fullmatch(
        r"many_clusters\.py: interrupted after running (\d+) of 300 jobs; "
        r"the others are still waiting on the server",
        line,
    )
    assert done, line
    assert int(done[1]) < 300


@pytest.mark.parametrize(
    "script",
    [
        ("many_clusters.py",),
        ("flux/register.py",),
        ("flux/submit-job.py", "--token", "t", "true"),
        ("flux/poll-jobs.py", "--secret", "s"),
    ],
)
async def test_ctrl_c_during_a_call_is_one_line(script: tuple[str, ...]) -> None:
    name, *args = script
    async with SilentServer() as silent:
        result = await interrupt(
            str(ROOT / "examples" / name),
            *args,
            "--host",
            silent.address,
            when=lambda: silent.calls > 0,
        )
    assert result.code == 130, result
    assert result.err == f"{Path(name).name}: interrupted\n", result
