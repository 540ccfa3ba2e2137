"""The Flux executor against a real Flux instance (``flux start --test-size=2``).

Skipped without ``RAINBOW_FLUX_PREFIX`` (failed under ``CI=true``); ``tox -e flux`` runs
it. Every test starts its own instance and shuts it down. No timing is asserted.
"""

from __future__ import annotations

import asyncio
import shlex
from collections.abc import AsyncIterator
from itertools import count
from pathlib import Path

import pytest
from support.flux import FluxInstance, flux_instance, flux_prefix

PREFIX = flux_prefix()

from rainbow_aio.agent import Ended, Launch, LaunchError  # noqa: E402
from rainbow_aio.agent._flux import (  # noqa: E402
    JOBID_FILE,
    NONCE_FILE,
    FluxExecutor,
    FluxUnavailableError,
    job_name,
)

pytestmark = pytest.mark.flux

_ids = count(1)


@pytest.fixture
async def instance() -> AsyncIterator[FluxInstance]:
    async with flux_instance(PREFIX, size=2) as running:
        yield running


@pytest.fixture
async def executor(instance: FluxInstance) -> AsyncIterator[FluxExecutor]:
    async with FluxExecutor(instance.uri) as opened:
        yield opened


def launch(
    tmp_path: Path, command: str, *, nodes: int = 1, tasks: int = 1, limit: float | None = None
) -> Launch:
    job_id = next(_ids)
    folder = tmp_path / str(job_id)
    folder.mkdir()
    return Launch(
        job_id=job_id,
        cluster="flux-test",
        command=command,
        argv=tuple(shlex.split(command)),
        nodes=nodes,
        tasks=tasks,
        folder=folder,
        time_limit=limit,
    )


async def run(executor: FluxExecutor, job: Launch) -> Ended:
    return await executor.wait(job, await executor.start(job))


async def test_exit_codes_and_output(executor: FluxExecutor, tmp_path: Path) -> None:
    ok = launch(tmp_path, "sh -c 'echo out; echo err >&2'")
    assert await run(executor, ok) == Ended(0, "exit 0")
    assert (ok.folder / "stdout").read_text() == "out\n"
    assert (ok.folder / "stderr").read_text() == "err\n"
    assert await run(executor, launch(tmp_path, "sh -c 'exit 3'")) == Ended(3, "exit 3")


async def test_environment_folder_nodes_and_tasks(
    executor: FluxExecutor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAINBOW_SECRET", "not-for-jobs")
    job = launch(
        tmp_path,
        "sh -c 'echo $RAINBOW_JOB_ID $RAINBOW_CLUSTER $RAINBOW_NODES "
        "$RAINBOW_TASKS $FLUX_TASK_RANK $(pwd) ${RAINBOW_SECRET:-none}'",
        nodes=2,
        tasks=4,
    )
    assert (await run(executor, job)).ok
    lines = sorted((job.folder / "stdout").read_text().splitlines())
    assert lines == [f"{job.job_id} flux-test 2 4 {rank} {job.folder} none" for rank in range(4)]


async def test_nonexistent_command(executor: FluxExecutor, tmp_path: Path) -> None:
    ended = await run(executor, launch(tmp_path, "no-such-command-here --flag"))
    assert ended == Ended(None, "command not found: no-such-command-here")


async def test_time_limit(executor: FluxExecutor, tmp_path: Path) -> None:
    ended = await run(executor, launch(tmp_path, "sleep 60", limit=1))
    assert ended == Ended(None, "timed out after 1 s")


async def test_cancel(executor: FluxExecutor, tmp_path: Path) -> None:
    job = launch(tmp_path, "sh -c 'echo started; exec sleep 60'")
    handle = await executor.start(job)
    waiting = asyncio.create_task(executor.wait(job, handle))
    await started(job)
    await executor.cancel(job, handle)
    assert await waiting == Ended(None, "cancelled")
    await executor.cancel(job, handle)  # an ended job: nothing to do, no error


async def test_more_nodes_than_the_instance_has(executor: FluxExecutor, tmp_path: Path) -> None:
    # the scheduler, not the submission, refuses it: the job ends without running
    ended = await run(executor, launch(tmp_path, "true", nodes=3, tasks=3))
    assert ended.exit_code is None
    assert ended.reason.startswith("flux alloc: "), ended
    assert "unsatisfiable" in ended.reason, ended
    with pytest.raises(LaunchError, match="one task per node"):
        await executor.start(launch(tmp_path, "true", nodes=2, tasks=1))


async def test_free_nodes(executor: FluxExecutor, instance: FluxInstance, tmp_path: Path) -> None:
    assert await executor.free_nodes() == 2
    job = launch(tmp_path, "sh -c 'echo started; exec sleep 60'", nodes=2, tasks=2)
    handle = await executor.start(job)
    await started(job)
    # a job on every core of both nodes leaves none free
    code, out = await instance.run("resource", "list", "-s", "free", "-no", "{nnodes}")
    assert code == 0, out
    assert await executor.free_nodes() == int(out.strip())
    await executor.cancel(job, handle)
    await executor.wait(job, handle)


async def test_reattach_with_a_handle_after_a_restart(
    instance: FluxInstance, tmp_path: Path
) -> None:
    running = launch(tmp_path, "sh -c 'echo started; exec sleep 60'")
    finished = launch(tmp_path, "sh -c 'exit 4'")
    async with FluxExecutor(instance.uri) as first:
        running_handle = await first.start(running)
        finished_handle = await first.start(finished)
        assert await first.wait(finished, finished_handle) == Ended(4, "exit 4")
    # a new executor object, as after the agent's restart
    async with FluxExecutor(instance.uri) as second:
        assert await second.reattach(running, running_handle) == running_handle
        assert await second.reattach(finished, finished_handle) == Ended(4, "exit 4")
        unknown = await second.reattach(launch(tmp_path, "true"), "123456789")
        assert isinstance(unknown, Ended)
        assert unknown.exit_code is None
        assert "unknown" in unknown.reason
        await second.cancel(running, running_handle)
        assert await second.wait(running, running_handle) == Ended(None, "cancelled")


async def test_reattach_without_a_handle_finds_the_submitted_job(
    instance: FluxInstance, tmp_path: Path
) -> None:
    """The agent died after start() submitted but before it journaled the handle."""
    job = launch(tmp_path, "sh -c 'echo started; exec sleep 60'")
    async with FluxExecutor(instance.uri) as first:
        handle = await first.start(job)
    async with FluxExecutor(instance.uri) as second:
        # through the id that start() wrote to the job's folder
        assert await second.reattach(job, None) == handle
        # and with that file lost too, by the job's name in the instance
        (job.folder / JOBID_FILE).unlink()
        assert await second.reattach(job, None) == handle
        assert (job.folder / JOBID_FILE).read_text().strip() == handle
        await second.cancel(job, handle)
        await second.wait(job, handle)


async def test_reattach_without_a_handle_finds_a_submitted_job_that_ended(
    instance: FluxInstance, tmp_path: Path
) -> None:
    job = launch(tmp_path, "sh -c 'exit 5'")
    async with FluxExecutor(instance.uri) as first:
        handle = await first.start(job)
        await first.wait(job, handle)
    (job.folder / JOBID_FILE).unlink()
    async with FluxExecutor(instance.uri) as second:
        assert await second.reattach(job, None) == Ended(5, "exit 5")


async def test_reattach_cancels_a_job_submitted_but_never_released(
    instance: FluxInstance, tmp_path: Path
) -> None:
    """The agent died between the held submission and writing its id: the job never ran,
    must not run, and is reported as never started (the agent then starts it once)."""
    job = launch(tmp_path, "sh -c 'echo ran > ran'")
    code, out = await instance.run(
        "submit", "--urgency=hold", f"--job-name={job_name(job)}", f"--cwd={job.folder}",
        "sh", "-c", "echo ran > ran",
    )  # fmt: skip
    assert code == 0, out
    held = out.strip()
    async with FluxExecutor(instance.uri) as second:
        assert await second.reattach(job, None) is None
        code, out = await instance.run("job", "wait-event", held, "clean")
        assert code == 0, out
        assert not (job.folder / "ran").exists()
        # started now, it runs once
        assert await run(second, job) == Ended(0, "exit 0")
    assert (job.folder / "ran").read_text() == "ran\n"


async def test_reattach_releases_a_held_job_whose_id_was_written(
    instance: FluxInstance, tmp_path: Path
) -> None:
    """The agent died after writing the id, before releasing the job: it is released."""
    job = launch(tmp_path, "sh -c 'exit 6'")
    code, out = await instance.run(
        "submit", "--urgency=hold", f"--job-name={job_name(job)}", "sh", "-c", "exit 6"
    )
    assert code == 0, out
    (job.folder / JOBID_FILE).write_text(out.strip() + "\n")
    async with FluxExecutor(instance.uri) as second:
        handle = await second.reattach(job, None)
        assert isinstance(handle, str)
        assert await second.wait(job, handle) == Ended(6, "exit 6")


async def test_reattach_ignores_an_older_job_of_the_same_name(
    instance: FluxInstance, tmp_path: Path
) -> None:
    """A job of the same cluster and id from before (a reset server reusing ids) is not
    this launch's: the nonce that start() wrote before submitting tells them apart."""
    job = launch(tmp_path, "true")
    code, out = await instance.run("run", f"--job-name={job_name(job)}", "true")
    assert code == 0, out
    (job.folder / NONCE_FILE).write_text("a-submission-that-never-happened\n")
    async with FluxExecutor(instance.uri) as executor:
        assert await executor.reattach(job, None) is None


async def test_uri_from_the_environment(
    instance: FluxInstance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLUX_URI", instance.uri)
    async with FluxExecutor() as executor:
        assert executor.uri == instance.uri
        assert await run(executor, launch(tmp_path, "true")) == Ended(0, "exit 0")


async def test_no_instance_is_a_clear_error(tmp_path: Path) -> None:
    executor = FluxExecutor(f"local://{tmp_path}/nothing-here")
    with pytest.raises(FluxUnavailableError, match="cannot connect to the Flux instance"):
        await executor.open()
    await executor.aclose()


async def started(job: Launch) -> None:
    """Until the job has printed ``started`` (it runs, it is not only submitted)."""
    while True:
        try:
            if "started" in (job.folder / "stdout").read_text():
                return
        except FileNotFoundError:
            pass
        await asyncio.sleep(0.05)
