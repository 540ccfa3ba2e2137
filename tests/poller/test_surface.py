"""The public surface: options are checked, stats are snapshots, secrets never show."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import subprocess
import sys

import pytest

from rainbow_aio import (
    AcceptMode,
    InvalidArgumentError,
    Poller,
    PollerGroup,
    PollerStats,
    RainbowClient,
    RainbowServer,
)

from .conftest import FAST, MakeCluster, wait_until, waiting


async def test_client_factories_build_pollers_with_options(
    rainbow_client: RainbowClient, make_cluster: MakeCluster
) -> None:
    c = await make_cluster()
    poller = rainbow_client.poller(c.name, c.secret, max_jobs=3, accept_mode="shared")
    assert isinstance(poller, Poller)
    assert poller.options.max_jobs == 3
    assert poller.options.accept_mode is AcceptMode.SHARED
    group = rainbow_client.poll_many({c.name: c.secret}, queue_size=5)
    assert isinstance(group, PollerGroup)
    assert group.options.queue_size == 5
    assert group.clusters == [c.name]
    # a group's clusters share one queue, so its default is larger than one poller's
    assert rainbow_client.poller(c.name, c.secret).options.queue_size == 100
    assert rainbow_client.poll_many({c.name: c.secret}).options.queue_size == 1000


@pytest.mark.parametrize(
    "options",
    [
        {"max_jobs": 0},
        {"max_jobs": 2**31},
        {"queue_size": -1},
        {"min_interval": 0},
        {"min_interval": 2, "max_interval": 1},
        {"accept_mode": "exclusive"},
        {"accept_window": -0.1},
        {"accept_batch_size": True},
        {"denied_attempts": 0},
    ],
)
def test_bad_options_are_refused(rainbow_client: RainbowClient, options: dict[str, object]) -> None:
    with pytest.raises(InvalidArgumentError):
        rainbow_client.poller("alpha", "secret", **options)
    with pytest.raises(InvalidArgumentError):
        rainbow_client.poll_many({"alpha": "secret"}, **options)


def test_unknown_options_and_empty_credentials_are_refused(rainbow_client: RainbowClient) -> None:
    with pytest.raises(TypeError):
        rainbow_client.poller("alpha", "secret", interval=1)
    with pytest.raises(InvalidArgumentError):
        rainbow_client.poller("alpha", "")
    with pytest.raises(InvalidArgumentError):
        rainbow_client.poll_many({"": "secret"})
    with pytest.raises(InvalidArgumentError):
        rainbow_client.poll_many({"alpha": "s"}, max_concurrent_polls=0)


async def test_stats_are_frozen_snapshots(
    rainbow_client: RainbowClient, make_cluster: MakeCluster
) -> None:
    c = await make_cluster(jobs=2)
    async with rainbow_client.poller(c.name, c.secret, **FAST) as poller:
        before = poller.stats
        assert before == PollerStats(cluster=c.name)
        job = await poller.get()
        assert await job.accept()
        after = poller.stats
        assert before.handed_out == 0
        assert after.handed_out == 1
        assert after.accepted == 1
        assert after.polls >= 1
        assert after.last_poll_latency is not None
        with pytest.raises(dataclasses.FrozenInstanceError):
            after.polls = 0  # type: ignore[misc]


async def test_stats_say_how_many_jobs_wait_in_the_queue_and_how_many_are_held(
    rainbow_client: RainbowClient, make_cluster: MakeCluster
) -> None:
    c = await make_cluster(jobs=5)
    async with rainbow_client.poll_many({c.name: c.secret}, max_jobs=5, **FAST) as group:
        await wait_until(lambda: group.stats[c.name].queued == 5, what="five jobs queued")
        batch = await group.get_batch(3)
        stats = group.stats[c.name]
        assert (stats.queued, stats.held) == (2, 3)
        assert len(await batch.accept()) == 3
        stats = group.stats[c.name]
        assert (stats.queued, stats.held, stats.accepted) == (2, 0, 3)


async def test_secrets_never_show_in_reprs_stats_or_logs(
    rainbow_client: RainbowClient, make_cluster: MakeCluster, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    c = await make_cluster(jobs=3)
    texts: list[str] = []
    async with rainbow_client.poller(c.name, c.secret, **FAST) as poller:
        job = await poller.get()
        texts += [repr(poller), str(poller), repr(job), repr(job.job), repr(poller.stats)]
        assert await job.accept()
        (await poller.get()).release()
    async with rainbow_client.poll_many({c.name: c.secret}, **FAST) as group:
        job = await group.get()
        texts += [repr(group), repr(job), repr(group.stats)]
        assert await job.accept()
    texts.append(caplog.text)
    for text in texts:
        assert c.secret not in text
        assert c.token not in text
    assert await waiting(rainbow_client, c) == {c.ids[2]}


async def test_entering_the_first_poller_of_a_process_loads_no_modules(
    rainbow_server: RainbowServer, make_cluster: MakeCluster
) -> None:
    """What a poller needs is loaded with the package: the first ``async with`` of a
    fresh process does not stop its event loop to import (anyio's asyncio backend took
    13 ms there, before the first poll)."""
    c = await make_cluster(jobs=1)
    script = (
        "import asyncio, sys\n"
        "import rainbow_aio\n"
        "async def main():\n"
        "    address, cluster, secret = sys.argv[1:]\n"
        "    async with rainbow_aio.RainbowClient(address) as client:\n"
        "        before = set(sys.modules)\n"
        "        async with client.poller(cluster, secret) as poller:\n"
        "            entered = sorted(set(sys.modules) - before)\n"
        "            job = await poller.get()\n"
        "            job.release()\n"
        "    print(entered)\n"
        "asyncio.run(main())\n"
    )
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", script, rainbow_server.address, c.name, c.secret],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
