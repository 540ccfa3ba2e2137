"""The command line (``rainbow-aio register|submit|poll``) and ``examples/flux/*.py``
against the Go server, each run as a child process the way a user would.

Both front ends keep the original scripts' options and output, so one flow checks both:
register (and again: exists), submit three jobs, list them, accept two, list the last.
What they print is compared with what the Go server holds (its database) and with the
job JSON it sends (read with the generated stub).
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from support.gofixtures import unique_name
from support.goserver import GoServer
from support.scripts import ROOT, credentials_printed, run_python

from rainbow_aio._proto import rainbow_pb2 as pb
from rainbow_aio._proto import rainbow_pb2_grpc as pb_grpc

pytestmark = pytest.mark.compat

FLUX = ROOT / "examples" / "flux"
FRONT_ENDS = {
    "cli": {
        "register": ["-m", "rainbow_aio", "register"],
        "submit": ["-m", "rainbow_aio", "submit"],
        "poll": ["-m", "rainbow_aio", "poll"],
    },
    "examples": {
        "register": [str(FLUX / "register.py")],
        "submit": [str(FLUX / "submit-job.py")],
        "poll": [str(FLUX / "poll-jobs.py")],
    },
}


@pytest.fixture(scope="module")
def stub(go_server: GoServer) -> Iterator[pb_grpc.RainbowSchedulerStub]:
    with grpc.insecure_channel(go_server.address) as channel:
        yield pb_grpc.RainbowSchedulerStub(channel)


def go_json(stub: pb_grpc.RainbowSchedulerStub, cluster: str, secret: str) -> dict[int, str]:
    """The job JSON the Go server sends for ``cluster``: id -> text."""
    answer = stub.RequestJobs(pb.RequestJobsRequest(cluster=cluster, secret=secret), timeout=10)
    return dict(answer.jobs)


@pytest.mark.parametrize("front_end", sorted(FRONT_ENDS))
def test_register_submit_poll_and_accept(
    go_server: GoServer, stub: pb_grpc.RainbowSchedulerStub, front_end: str
) -> None:
    cmd = FRONT_ENDS[front_end]
    name = unique_name(front_end)
    where = ["--host", go_server.address, "--cluster", name]

    registered = run_python(*cmd["register"], *where)
    assert registered.returncode == 0, registered.stderr
    token, secret = credentials_printed(registered.stdout)

    again = run_python(*cmd["register"], *where)
    assert again.returncode == 1
    assert again.stdout.splitlines() == [
        "status: REGISTER_EXISTS",
        "",
        f"The cluster {name} already exists.",
    ]

    commands = [["echo", "one"], ["sleep", "1", "&&", "echo", "<two>"], ["hostname"]]
    for words in commands:
        submitted = run_python(*cmd["submit"], *where, "--token", token, "--nodes", "2", *words)
        assert submitted.returncode == 0, submitted.stderr
        # no "jobid:" line: the Go server answers jobid 0, which means "not told"
        assert submitted.stdout.splitlines() == [
            f"⭐️ Submitting job: {' '.join(words)}",
            "status: SUBMIT_SUCCESS",
        ]
    rows = go_server.stored_jobs(name)
    assert [(row.command, row.nodes) for row in rows] == [(" ".join(w), 2) for w in commands]
    ids = [row.id for row in rows]

    poll = [*cmd["poll"], *where, "--secret", secret]
    listed = run_python(*poll)
    assert listed.returncode == 0, listed.stderr
    sent = go_json(stub, name, secret)
    assert listed.stdout.splitlines() == [
        "Status: REQUEST_JOBS_SUCCESS",
        "Received 3 jobs for inspection!",
        *(sent[job_id] for job_id in ids),  # the Go server's own JSON, lowest id first
    ]

    accepting = run_python(*poll, "--accept", "2")
    assert accepting.returncode == 0, accepting.stderr
    assert accepting.stdout.splitlines()[-2:] == ["Accepting 2 jobs...", str(ids[:2])]
    assert [row.id for row in go_server.waiting_jobs(name)] == ids[2:]

    last = run_python(*poll, "--max-jobs", "5", "--accept", "5")
    assert last.returncode == 0, last.stderr
    assert last.stdout.splitlines() == [
        "Status: REQUEST_JOBS_SUCCESS",
        "Received 1 jobs for inspection!",
        sent[ids[2]],
        "Accepting 1 jobs...",
        str(ids[2:]),
    ]
    empty = run_python(*poll)
    assert empty.returncode == 0, empty.stderr
    assert empty.stdout.splitlines() == [
        "Status: REQUEST_JOBS_NORESULTS",
        "Received 0 jobs for inspection!",
    ]
    assert go_server.waiting_jobs(name) == []


@pytest.mark.parametrize("front_end", sorted(FRONT_ENDS))
def test_refused_credentials_are_one_line_errors(go_server: GoServer, front_end: str) -> None:
    cmd = FRONT_ENDS[front_end]
    name = unique_name(front_end)
    where = ["--host", go_server.address, "--cluster", name]
    registered = run_python(*cmd["register"], *where)
    assert registered.returncode == 0, registered.stderr

    wrong = "wrong-credential-3f9c"
    for result in (
        run_python(*cmd["register"], *where, "--secret", wrong),
        run_python(*cmd["submit"], *where, "--token", wrong, "true"),
        run_python(*cmd["poll"], *where, "--secret", wrong, "--accept", "1"),
    ):
        assert result.returncode == 1
        assert "Traceback" not in result.stderr
        [line] = result.stderr.splitlines()
        assert "denied" in line
        assert wrong not in result.stdout + result.stderr
    assert go_server.stored_jobs(name) == []
