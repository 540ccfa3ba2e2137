"""The local executor: outcomes, no shell, environment, folders, and exactly-once starts
through the folder's claim (a second start of the same job never runs it again)."""

from __future__ import annotations

import asyncio
import os
import shlex
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from rainbow_aio.agent import Ended, Launch, LaunchError, LocalExecutor

from .conftest import jobs_alive, kill_job_processes, supervisors_alive, wait_until


def launch(tmp_path: Path, job_id: int, command: str, limit: float | None = None) -> Launch:
    folder = tmp_path / str(job_id)
    folder.mkdir()
    return Launch(job_id, "c", command, tuple(shlex.split(command)), 2, 3, folder, limit)


async def run(ex: LocalExecutor, la: Launch) -> Ended:
    return await ex.wait(la, await ex.start(la))


@pytest.fixture
async def executor(tmp_path: Path) -> AsyncIterator[LocalExecutor]:
    ex = LocalExecutor(cancel_grace=2.0)
    yield ex
    kill_job_processes(tmp_path)
    await ex.aclose()


@pytest.mark.parametrize(
    ("command", "code", "reason"),
    [
        ("true", 0, "exit 0"),
        ("sh -c 'exit 3'", 3, "exit 3"),
        ("sh -c 'kill -KILL $$'", None, "killed by SIGKILL"),
    ],
)
async def test_outcomes(
    executor: LocalExecutor, tmp_path: Path, command: str, code: int | None, reason: str
) -> None:
    ended = await run(executor, launch(tmp_path, 1, command))
    assert ended == Ended(code, reason)


@pytest.mark.parametrize(
    ("command", "reason"),
    [("no-such-command-xyz --flag", "command not found: no-such-command-xyz")],
)
async def test_launch_errors(
    executor: LocalExecutor, tmp_path: Path, command: str, reason: str
) -> None:
    with pytest.raises(LaunchError, match=reason):
        await executor.start(launch(tmp_path, 1, command))


async def test_no_shell_output_files_and_environment(
    executor: LocalExecutor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAINBOW_SECRET", "a-secret-that-must-not-reach-jobs")
    ex = LocalExecutor()  # reads the environment when made
    la = launch(tmp_path, 7, "sh -c 'env; echo to-stderr >&2' ; echo $HOME")
    assert la.argv[-3:] == (";", "echo", "$HOME")  # words, not shell syntax
    ended = await run(ex, launch(tmp_path, 8, "echo a;b $HOME '&&' ls"))
    assert ended.ok
    assert (tmp_path / "8" / "stdout").read_text() == "a;b $HOME && ls\n"
    assert (await run(ex, la)).ok
    out = (la.folder / "stdout").read_text()
    for line in (
        "RAINBOW_JOB_ID=7",
        "RAINBOW_CLUSTER=c",
        "RAINBOW_NODES=2",
        "RAINBOW_TASKS=3",
        f"RAINBOW_JOB_DIR={la.folder}",
    ):
        assert line in out.splitlines()
    assert "RAINBOW_SECRET" not in out
    assert (la.folder / "stderr").read_text() == "to-stderr\n"


async def test_a_program_named_like_a_shell_builtin_runs_the_program(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "true"  # `true` is also a builtin of the wrapper's shell
    fake.write_text("#!/bin/sh\necho the-program\nexit 5\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    ex = LocalExecutor()  # reads the environment when made
    la = launch(tmp_path, 9, "true")
    assert await run(ex, la) == Ended(5, "exit 5")
    assert (la.folder / "stdout").read_text() == "the-program\n"


async def test_time_limit(executor: LocalExecutor, tmp_path: Path) -> None:
    ended = await run(executor, launch(tmp_path, 1, "sleep 30", limit=0.2))
    assert ended == Ended(None, "timed out after 0.2 s")
    assert jobs_alive(tmp_path) == []


async def test_cancel(executor: LocalExecutor, tmp_path: Path) -> None:
    la = launch(tmp_path, 1, "sleep 30")
    handle = await executor.start(la)
    waiting = asyncio.create_task(executor.wait(la, handle))
    await asyncio.sleep(0.1)
    await executor.cancel(la, handle)
    assert await waiting == Ended(None, "cancelled")


async def test_a_second_start_of_a_started_job_never_runs_it_again(
    executor: LocalExecutor, tmp_path: Path
) -> None:
    """The danger window of a restart: the job was spawned, the journal does not know.
    Starting it again yields a wrapper that refuses; waiting on it waits for the first."""
    la = launch(tmp_path, 1, "sh -c 'echo run >> ../runs; sleep 0.5'")
    first = await executor.start(la)
    restarted = LocalExecutor()  # a "restarted agent"
    second = await restarted.start(la)
    assert second == first  # the job that runs, not a second one
    ended = await LocalExecutor().wait(la, second)
    assert ended.ok
    assert await executor.wait(la, first) == ended
    assert (tmp_path / "runs").read_text() == "run\n"
    await restarted.aclose()


async def test_reattach(executor: LocalExecutor, tmp_path: Path) -> None:
    never = launch(tmp_path, 1, "true")
    assert await LocalExecutor().reattach(never, None) is None

    la = launch(tmp_path, 2, "sh -c 'sleep 0.3; exit 4'")
    handle = await executor.start(la)
    again = LocalExecutor()  # the next agent: not the wrapper's parent
    found = await again.reattach(la, handle)
    assert found == handle
    assert await again.wait(la, handle) == Ended(4, "exit 4")
    assert await LocalExecutor().reattach(la, handle) == Ended(4, "exit 4")
    assert await LocalExecutor().reattach(la, None) == Ended(4, "exit 4")  # claim + exit
    await executor.wait(la, handle)


async def test_a_reused_pid_is_not_the_job(executor: LocalExecutor, tmp_path: Path) -> None:
    la = launch(tmp_path, 1, "sleep 30")
    handle = await executor.start(la)
    pid = int(handle.split(":")[0])
    other = f"{os.getpid()}:1"  # a live process that is not the job's wrapper
    found = await LocalExecutor().reattach(launch(tmp_path, 2, "true"), other)
    # not taken for the job's wrapper; and with a handle journaled, never started again
    assert found == Ended(None, "ended without recording an exit status (killed?)")
    await executor.cancel(la, handle)
    assert (await executor.wait(la, handle)).reason == "cancelled"
    assert pid not in jobs_alive(tmp_path)


async def test_a_folder_it_cannot_use_is_a_clear_outcome(
    executor: LocalExecutor, tmp_path: Path
) -> None:
    (tmp_path / "1").write_text("a file where the folder should be")
    la = Launch(1, "c", "true", ("true",), 1, 1, tmp_path / "1", None)
    with pytest.raises(LaunchError, match=f"cannot write the job folder {tmp_path / '1'}"):
        await executor.start(la)
    made = Launch(2, "c", "true", ("true",), 1, 1, tmp_path / "2", None)
    assert await run(executor, made) == Ended(0, "exit 0")  # a missing folder is made


async def test_jobs_outlive_the_executor_and_the_supervisor_leaves_after_them(
    tmp_path: Path,
) -> None:
    """The agent gone (its executor closed), the job runs on; its end is written by the
    supervisor, read back by the next executor; then no process of the workdir is left."""
    first = LocalExecutor()
    la = launch(tmp_path, 1, "sh -c 'sleep 0.3; exit 6'")
    handle = await first.start(la)
    assert supervisors_alive(tmp_path)
    await first.aclose()
    again = LocalExecutor()
    assert await again.reattach(la, handle) == handle  # still running
    await again.aclose()
    await wait_until(lambda: "exit 6" in (la.folder / "claim").read_text(), what="the job to end")
    again = LocalExecutor()
    assert await again.reattach(la, handle) == Ended(6, "exit 6")
    await again.aclose()
    await wait_until(
        lambda: not supervisors_alive(tmp_path) and not jobs_alive(tmp_path),
        what="the supervisor to leave",
    )


async def test_a_job_of_a_killed_supervisor_is_still_waited_for(tmp_path: Path) -> None:
    """A supervisor killed on its own: its job runs on, the executor waits for it by its
    pid, and says its end is unknown (nobody recorded it); the next job gets a new
    supervisor."""
    ex = LocalExecutor()
    try:
        la = launch(tmp_path, 1, "sleep 0.5")
        handle = await ex.start(la)
        (supervisor,) = supervisors_alive(tmp_path)
        os.kill(supervisor, 9)
        ended = await ex.wait(la, handle)
        assert ended == Ended(None, "ended without recording an exit status (killed?)")
        assert await run(ex, launch(tmp_path, 2, "true")) == Ended(0, "exit 0")
        assert supervisors_alive(tmp_path) != [supervisor]
    finally:
        await ex.aclose()
        kill_job_processes(tmp_path)


async def test_a_peer_that_sends_garbage_is_dropped_and_the_supervisor_serves_on(
    tmp_path: Path,
) -> None:
    ex = LocalExecutor()
    try:
        assert await run(ex, launch(tmp_path, 1, "true")) == Ended(0, "exit 0")
        (supervisor,) = supervisors_alive(tmp_path)
        reader, writer = await asyncio.open_unix_connection(str(tmp_path / ".supervisor.sock"))
        writer.write(b'{"start": 5}\nnot json\n')
        assert await reader.read() == b""  # dropped
        writer.close()
        await writer.wait_closed()
        assert supervisors_alive(tmp_path) == [supervisor]
        assert await run(ex, launch(tmp_path, 2, "true")) == Ended(0, "exit 0")
    finally:
        await ex.aclose()
        kill_job_processes(tmp_path)
