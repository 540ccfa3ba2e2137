"""A worker as users write it: stopping on a signal, a limit per cluster, and the plain
``asyncio.run(main())`` worker stopped with Ctrl-C and started again (issue 23)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest

from rainbow_aio import PolledJob, RainbowClient, RainbowServer, Shutdown, UnhandledJobsError

from .conftest import FAST, MakeCluster, wait_until, waiting


async def test_both_limits_hold_at_once(
    rainbow_client: RainbowClient, make_cluster: MakeCluster
) -> None:
    """``concurrency`` bounds the group, ``per_cluster`` each cluster, together."""
    clusters = [await make_cluster(jobs=30) for _ in range(3)]
    running: Counter[str] = Counter()
    most: Counter[str] = Counter()
    most_total = 0
    done = 0

    async with rainbow_client.poll_many({c.name: c.secret for c in clusters}, **FAST) as group:

        async def handler(job: PolledJob) -> None:
            nonlocal most_total, done
            running[job.cluster] += 1
            most[job.cluster] = max(most[job.cluster], running[job.cluster])
            most_total = max(most_total, sum(running.values()))
            await asyncio.sleep(0.005)
            running[job.cluster] -= 1
            done += 1
            if done == 90:
                await group.stop()

        await group.run(handler, concurrency=5, per_cluster=2)
    assert done == 90
    assert most_total == 5  # the group's limit was reached, never passed
    assert max(most.values()) == 2  # each cluster's limit was reached, never passed
    assert all(n <= 2 for n in most.values())


async def test_handlers_run_in_concurrency_worker_tasks_not_a_task_each(
    rainbow_client: RainbowClient, make_cluster: MakeCluster
) -> None:
    """run() keeps ``concurrency`` workers: a handler runs in the worker that took its
    job, so 40 jobs are handled in at most 3 tasks (a task per job made 40)."""
    cluster = await make_cluster(jobs=40)
    tasks: set[asyncio.Task[object] | None] = set()
    done = 0

    async with rainbow_client.poller(cluster.name, cluster.secret, **FAST) as poller:

        async def handler(job: PolledJob) -> None:
            nonlocal done
            tasks.add(asyncio.current_task())
            await asyncio.sleep(0)
            done += 1
            if done == 40:
                await poller.stop()

        report = await poller.run(handler, concurrency=3)
    assert (done, report.handled) == (40, 40)
    assert None not in tasks
    assert 1 <= len(tasks) <= 3


async def test_a_cluster_at_its_limit_goes_on_as_each_handler_ends(
    rainbow_client: RainbowClient, make_cluster: MakeCluster
) -> None:
    """One cluster, ``per_cluster=1``, four workers: three always wait while the cluster
    is at its limit, and each handler's end lets the next job go (none is stranded)."""
    cluster = await make_cluster(jobs=20)
    running = most = done = 0

    async with rainbow_client.poller(cluster.name, cluster.secret, **FAST) as poller:

        async def handler(job: PolledJob) -> None:
            nonlocal running, most, done
            running += 1
            most = max(most, running)
            await asyncio.sleep(0.002)
            running -= 1
            done += 1
            if done == 20:
                await poller.stop()

        async with asyncio.timeout(20):
            await poller.run(handler, concurrency=4, per_cluster=1)
    assert (done, most) == (20, 1)


async def test_run_stops_on_sigint_and_returns(
    rainbow_client: RainbowClient, make_cluster: MakeCluster
) -> None:
    cluster = await make_cluster(jobs=20)
    finished: list[int] = []

    async def handler(job: PolledJob) -> None:
        if len(finished) == 5:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C, while this handler runs
        await asyncio.sleep(0.01)
        finished.append(job.id)

    before = signal.getsignal(signal.SIGINT)
    async with rainbow_client.poller(cluster.name, cluster.secret, **FAST) as poller:
        report = await poller.run(handler, stop_on_signals=True)
    assert report.stopped_by == "SIGINT"
    assert report.handled == len(finished)
    left = await waiting(rainbow_client, cluster)
    # nothing lost: every job ran to its end here, or is still on the server
    assert sorted([*finished, *left]) == cluster.ids
    assert signal.getsignal(signal.SIGINT) == before  # the previous handler is back


async def test_a_shutdown_shared_by_two_runs_stops_both(
    rainbow_client: RainbowClient, make_cluster: MakeCluster
) -> None:
    first, second = await make_cluster(jobs=5), await make_cluster(jobs=5)
    stop = Shutdown()

    async def handler(job: PolledJob) -> None:
        await asyncio.sleep(0.01)

    async with (
        rainbow_client.poller(first.name, first.secret, **FAST) as a,
        rainbow_client.poller(second.name, second.secret, **FAST) as b,
    ):
        runs = [asyncio.create_task(p.run(handler, stop=stop)) for p in (a, b)]
        await wait_until(lambda: a.stats.accepted + b.stats.accepted >= 4, what="work")
        stop.request("test")
        reports = await asyncio.gather(*runs)
    assert [report.stopped_by for report in reports] == ["test", "test"]


WORKER = textwrap.dedent(
    """
    import asyncio, json, os, sys
    from rainbow_aio import RainbowClient

    HOST, OUT = sys.argv[1], sys.argv[2]
    SECRETS = json.loads(os.environ["WORKER_SECRETS"])

    async def handle(job):
        await asyncio.sleep(0.02)
        with open(OUT, "a") as f:
            f.write(f"{job.cluster} {job.id}\\n")

    async def main():
        async with RainbowClient(HOST) as client:
            async with client.poll_many(SECRETS) as group:
                await group.run(handle, concurrency=8)

    asyncio.run(main())
    """
)


async def test_the_plain_worker_stopped_with_ctrl_c_loses_nothing(
    rainbow_client: RainbowClient,
    rainbow_server: RainbowServer,
    make_cluster: MakeCluster,
    tmp_path: Path,
) -> None:
    """The worker people write first (issue 23's script, no signal handling of its own):
    Ctrl-C midway, start it again, and every job is handled exactly once."""
    clusters = [await make_cluster(jobs=150) for _ in range(2)]
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    out = tmp_path / "handled.txt"
    out.touch()
    env = {**os.environ, "WORKER_SECRETS": json.dumps({c.name: c.secret for c in clusters})}

    def lines() -> list[str]:
        return out.read_text().splitlines()

    async def worker_until(condition: str, done: object) -> int:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(script), rainbow_server.address, str(out), env=env
        )
        try:
            await wait_until(done, within=60, what=condition)  # type: ignore[arg-type]
            proc.send_signal(signal.SIGINT)
            async with asyncio.timeout(30):
                return await proc.wait()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()

    await worker_until("100 jobs handled", lambda: len(lines()) >= 100)
    assert len(lines()) < 300  # stopped midway
    await worker_until("every job handled", lambda: len(lines()) >= 300)
    handled = Counter(lines())
    assert len(handled) == 300
    assert set(handled.values()) == {1}  # exactly once
    for cluster in clusters:
        assert await waiting(rainbow_client, cluster) == set()


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
async def test_per_cluster_is_checked(
    rainbow_client: RainbowClient, make_cluster: MakeCluster, bad: object
) -> None:
    cluster = await make_cluster()

    async def handler(job: PolledJob) -> None:
        pass

    async with rainbow_client.poller(cluster.name, cluster.secret, **FAST) as poller:
        with pytest.raises(ValueError, match="per_cluster"):
            await poller.run(handler, per_cluster=bad)  # type: ignore[arg-type]


async def test_a_second_sigint_cuts_handlers_short_and_says_what_was_left(
    rainbow_client: RainbowClient, make_cluster: MakeCluster
) -> None:
    cluster = await make_cluster(jobs=1)
    started = asyncio.Event()

    async def handler(job: PolledJob) -> None:
        started.set()
        await asyncio.sleep(3600)

    async def interrupt_twice() -> None:
        await started.wait()
        os.kill(os.getpid(), signal.SIGINT)
        await asyncio.sleep(0.1)
        os.kill(os.getpid(), signal.SIGINT)

    async with rainbow_client.poller(cluster.name, cluster.secret, **FAST) as poller:
        interrupter = asyncio.create_task(interrupt_twice())
        with pytest.raises(UnhandledJobsError) as caught:
            await poller.run(handler, stop_on_signals=True)
        await interrupter
        assert [job.id for job in caught.value.jobs] == cluster.ids
        assert poller.stats.unhandled == 1


class _Abort(BaseException):
    """What a handler may raise that run() does not catch (not an Exception)."""


async def test_a_handler_raising_past_run_ends_it_with_that_error_not_a_hang(
    rainbow_client: RainbowClient, make_cluster: MakeCluster
) -> None:
    """run() catches a handler's Exception; anything else kills the worker that ran the
    handler, which ends the intake: run() lets the other handlers finish and raises it,
    rather than going on with one worker fewer (or none, and waiting forever)."""
    cluster = await make_cluster(jobs=6)
    seen: list[int] = []

    async with rainbow_client.poller(cluster.name, cluster.secret, **FAST) as poller:

        async def handler(job: PolledJob) -> None:
            seen.append(job.id)
            raise _Abort

        async with asyncio.timeout(20):
            with pytest.raises(_Abort):
                await poller.run(handler, concurrency=1)
    assert len(seen) == 1
