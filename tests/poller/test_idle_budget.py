"""A group's idle polling has a budget that does not grow with its number of clusters,
and clusters that recently had jobs are polled first."""

from __future__ import annotations

import asyncio
import time

import pytest

from rainbow_aio import InvalidArgumentError, RainbowClient, RainbowServer

from .conftest import FAST, MakeCluster, submit, wait_until


async def test_idle_polls_of_a_whole_group_stay_within_the_budget(
    rainbow_client: RainbowClient, rainbow_server: RainbowServer, make_cluster: MakeCluster
) -> None:
    clusters = [await make_cluster() for _ in range(60)]
    rate = 40.0
    async with rainbow_client.poll_many(
        {c.name: c.secret for c in clusters}, idle_polls_per_second=rate, **FAST
    ) as group:
        # the first polls go at once (up to max_concurrent_polls clusters); every poll
        # after them follows an empty one, and is an idle poll
        await wait_until(
            lambda: all(s.polls >= 1 for s in group.stats.values()), what="first polls"
        )
        before = rainbow_server.call_counts["RequestJobs"]
        started = time.monotonic()
        # unbudgeted, 60 clusters polling every 5 to 50 ms would list thousands a second
        await wait_until(
            lambda: rainbow_server.call_counts["RequestJobs"] - before >= 80,
            what="polls happening",
        )
        polls = rainbow_server.call_counts["RequestJobs"] - before
        elapsed = time.monotonic() - started
    burst = rate / 10
    assert polls <= burst + rate * elapsed + 1
    assert all(s.errors == 0 for s in group.stats.values())


async def test_a_cluster_that_just_had_jobs_is_polled_before_the_idle_ones(
    rainbow_client: RainbowClient, rainbow_server: RainbowServer, make_cluster: MakeCluster
) -> None:
    idle = [await make_cluster() for _ in range(150)]
    busy = await make_cluster(jobs=1)
    secrets = {c.name: c.secret for c in [*idle, busy]}
    async with rainbow_client.poll_many(secrets, idle_polls_per_second=30, **FAST) as group:
        first = await group.get()  # the busy cluster's first job: it now counts as recent
        assert first.cluster == busy.name
        assert await first.accept()
        # every idle cluster is waiting its turn by now (150 of them at 30 a second)
        await wait_until(lambda: group.stats[busy.name].polls >= 3, what="busy idle again")
        polls = rainbow_server.call_counts["RequestJobs"]
        [job_id] = await submit(rainbow_client, busy, 1)
        async with asyncio.timeout(30):
            second = await group.get()
        waited_for = rainbow_server.call_counts["RequestJobs"] - polls
    assert (second.cluster, second.id) == (busy.name, job_id)
    # first come first served would have listed the 150 idle clusters before it
    assert waited_for < 30


async def test_without_a_budget_idle_polls_follow_their_intervals(
    rainbow_client: RainbowClient, rainbow_server: RainbowServer, make_cluster: MakeCluster
) -> None:
    clusters = [await make_cluster() for _ in range(20)]
    async with rainbow_client.poll_many(
        {c.name: c.secret for c in clusters}, idle_polls_per_second=None, **FAST
    ) as group:
        await wait_until(
            lambda: all(s.polls >= 5 for s in group.stats.values()), what="five polls each"
        )


@pytest.mark.parametrize("rate", [0, -1, float("nan"), float("inf"), True, "500"])
def test_bad_budgets_are_refused(rainbow_client: RainbowClient, rate: object) -> None:
    with pytest.raises(InvalidArgumentError):
        rainbow_client.poll_many({"alpha": "secret"}, idle_polls_per_second=rate)  # type: ignore[arg-type]


async def test_idle_clusters_are_not_starved_by_busy_ones_asking_more_than_the_budget(
    rainbow_client: RainbowClient, rainbow_server: RainbowServer, make_cluster: MakeCluster
) -> None:
    busy = [await make_cluster(jobs=1) for _ in range(30)]
    quiet = await make_cluster()
    async with rainbow_client.poll_many(
        {c.name: c.secret for c in busy}, idle_polls_per_second=20, **FAST
    ) as group:
        for _ in busy:  # each busy cluster had a job: from now on it counts as recent
            assert await (await group.get()).accept()
        # 30 recent clusters re-polling every 10 to 50 ms ask for far more than 20 a
        # second; a cluster that never had jobs still gets its share of the budget
        group.add(quiet.name, quiet.secret)
        [job_id] = await submit(rainbow_client, quiet, 1)
        async with asyncio.timeout(20):
            job = await group.get()
        assert (job.cluster, job.id) == (quiet.name, job_id)
        assert group.stats[quiet.name].polls >= 1
