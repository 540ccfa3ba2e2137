"""``Poller`` and ``PollerGroup`` against the Go server: each job handed out once,
``accept()`` answers that match what the server did, many clusters drained exactly once.

Only the public poller API is used. What the server really stored and still holds is
read from its database (``GoServer.stored_jobs`` / ``waiting_jobs``).
"""

from __future__ import annotations

import asyncio

import pytest
from support.gofixtures import MakeGoCluster
from support.goserver import GoServer
from support.ledger import Ledger

from rainbow_aio import AcceptStatus, DeniedError, Job, PolledJob, RainbowClient

pytestmark = pytest.mark.compat

FAST = {"min_interval": 0.02, "max_interval": 0.2}
WAIT = 30.0  # the longest a test waits for the server's queue to empty


@pytest.mark.parametrize("accept_mode", ["batched", "shared"])
async def test_a_poller_hands_out_each_job_once_and_owns_what_it_accepts(
    go_client: RainbowClient,
    go_server: GoServer,
    make_go_cluster: MakeGoCluster,
    accept_mode: str,
) -> None:
    cluster = await make_go_cluster(jobs=25)
    expected = {job.id: job.command for job in go_server.stored_jobs(cluster.name)}
    ledger = Ledger()
    async with go_client.poller(
        cluster.name, cluster.secret, accept_mode=accept_mode, max_jobs=4, **FAST
    ) as poller:
        consumers = ledger.start(poller, 3)
        left = await go_server.wait_drained(WAIT)
        await poller.stop()
        await consumers
        stats = poller.stats
    assert left == []
    assert ledger.owned_twice == []
    assert ledger.commands == expected  # every job, with its own command, owned once
    assert (ledger.lost, ledger.uncertain, ledger.refused) == ([], [], {})
    assert stats.accepted == stats.handed_out == 25
    if accept_mode == "shared":
        assert stats.accept_calls == 25  # one id per AcceptJobs
    assert poller.error is None


async def test_a_released_job_is_handed_out_again(
    go_client: RainbowClient, go_server: GoServer, make_go_cluster: MakeGoCluster
) -> None:
    cluster = await make_go_cluster(jobs=1)
    async with go_client.poller(cluster.name, cluster.secret, **FAST) as poller:
        first = await poller.get()
        first.release()
        async with asyncio.timeout(WAIT):
            again = await poller.get()
        assert again.id == first.id
        assert await again.accept() is True
    assert go_server.waiting_jobs(cluster.name) == []
    assert poller.stats.released == 1


@pytest.mark.parametrize("accept_mode", ["batched", "shared"])
async def test_accept_is_false_when_someone_else_took_the_job(
    go_client: RainbowClient,
    go_server: GoServer,
    make_go_cluster: MakeGoCluster,
    accept_mode: str,
) -> None:
    cluster = await make_go_cluster(jobs=1)
    async with go_client.poller(
        cluster.name, cluster.secret, accept_mode=accept_mode, **FAST
    ) as poller:
        job = await poller.get()
        # another process (here: a plain AcceptJobs) takes it first
        taken = await go_client.accept_jobs(cluster.name, cluster.secret, [job.id])
        assert taken.status is AcceptStatus.SUCCESS
        assert await job.accept() is False  # the Go server answered PARTIAL
        assert poller.stats.lost_to_others == 1
    assert go_server.waiting_jobs(cluster.name) == []


async def test_a_group_drains_many_clusters_exactly_once(
    go_client: RainbowClient, go_server: GoServer, make_go_cluster: MakeGoCluster
) -> None:
    clusters = [await make_go_cluster(jobs=12, prefix="drain") for _ in range(10)]
    secrets = {c.name: c.secret for c in clusters}
    expected = {
        job.id: (job.cluster, job.command)
        for c in clusters
        for job in go_server.stored_jobs(c.name)
    }
    assert len(expected) == 120
    handled: list[tuple[int, str]] = []

    async def handler(job: PolledJob) -> None:
        handled.append((job.id, job.cluster))

    async with go_client.poll_many(secrets, max_jobs=5, **FAST) as group:
        runner = asyncio.create_task(group.run(handler, concurrency=6, accept="before"))
        left = await go_server.wait_drained(WAIT)
        await group.stop()
        await runner
        stats = group.stats
        errors = group.errors
    assert left == []
    assert errors == {}
    # run(accept="before") calls the handler only for jobs this process owns
    assert sorted(handled) == sorted((i, c) for i, (c, _) in expected.items())
    assert sum(s.accepted for s in stats.values()) == 120
    # batched accepts: several ids per AcceptJobs call, all answered SUCCESS
    assert sum(s.accept_calls for s in stats.values()) < 120


async def test_a_denied_cluster_stops_alone(
    go_client: RainbowClient, go_server: GoServer, make_go_cluster: MakeGoCluster
) -> None:
    good = [await make_go_cluster(jobs=5) for _ in range(2)]
    bad = await make_go_cluster(jobs=3)
    secrets = {c.name: c.secret for c in good} | {bad.name: "not-the-secret"}
    ledger = Ledger()
    left: list[Job] = []

    async def poll_until_the_good_ones_are_drained() -> None:
        async with go_client.poll_many(secrets, **FAST) as group:
            consumers = ledger.start(group, 2)
            async with asyncio.timeout(WAIT):
                while bad.name not in group.errors:  # noqa: ASYNC110 - no event to wait on
                    await asyncio.sleep(0.02)
            left.extend(await go_server.wait_drained(WAIT, clusters={c.name for c in good}))
            await group.stop()
            await consumers
        # leaving the group raises the errors nobody has seen

    with pytest.raises(ExceptionGroup) as raised:
        await poll_until_the_good_ones_are_drained()
    [error] = raised.value.exceptions
    assert isinstance(error, DeniedError)
    assert error.details == "request denied"
    assert error.cluster == bad.name
    assert left == []
    owned_clusters = set(ledger.clusters.values())
    assert owned_clusters == {c.name for c in good}
    assert len(go_server.waiting_jobs(bad.name)) == 3  # untouched


# The batch API (poller.batches(max_size=N) yielding JobBatch, `await batch.accept()`)
# gets its test here once it exists: a batch of jobs accepted with one AcceptJobs call,
# the Go server's SUCCESS or PARTIAL answer reported per job, each job owned once.
