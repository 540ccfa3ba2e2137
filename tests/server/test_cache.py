"""The cache of short RequestJobs answers: never stale, bounded, and answering an idle
cluster's poll without waiting for the database thread."""

from __future__ import annotations

import asyncio
import json

import grpc
import pytest

from rainbow_aio._proto import rainbow_pb2 as pb
from rainbow_aio._proto import rainbow_pb2_grpc as pb_grpc
from rainbow_aio.server import RainbowServer
from rainbow_aio.server._cache import ENTRY_COST, AnswerCache

from ._helpers import SECRET, Cluster, called, listed, register, submit

Stub = pb_grpc.RainbowSchedulerStub


async def accept(stub: Stub, cluster: Cluster, ids: list[int]) -> int:
    resp = await stub.AcceptJobs(
        pb.AcceptJobsRequest(cluster=cluster.name, secret=cluster.secret, jobids=ids)
    )
    return int(resp.status)


async def test_a_listing_repeated_after_a_write_shows_the_write(
    stub: Stub, alpha: Cluster, beta: Cluster
) -> None:
    assert await listed(stub, alpha, 10) == {}
    assert await listed(stub, alpha, 10) == {}  # from the cache now
    first = await submit(stub, alpha, "one")
    assert list(await listed(stub, alpha, 10)) == [first]
    assert list(await listed(stub, alpha, 10)) == [first]
    other = await submit(stub, beta, "elsewhere")
    assert list(await listed(stub, alpha, 10)) == [first]
    assert list(await listed(stub, beta, 0)) == [other]
    second = await submit(stub, alpha, "two")
    assert list(await listed(stub, alpha, 1)) == [first]
    assert sorted(await listed(stub, alpha, 10)) == [first, second]
    assert sorted(await listed(stub, alpha, 0)) == [first, second]
    assert await accept(stub, alpha, [first]) == pb.AcceptJobsResponse.RESULT_TYPE_SUCCESS
    assert list(await listed(stub, alpha, 1)) == [second]
    assert list(await listed(stub, alpha, 0)) == [second]
    assert list(await listed(stub, beta, 0)) == [other]


async def test_every_listing_after_an_acknowledged_write_shows_it(
    stub: Stub, alpha: Cluster
) -> None:
    """Pollers and submitters racing: no listing made after a submit or accept was
    answered misses that write, however often the same listing is asked for."""
    taken: set[int] = set()

    async def poller() -> None:
        for _ in range(300):
            await listed(stub, alpha, 5)

    async def writer(n: int) -> None:
        for i in range(20):
            job_id = await submit(stub, alpha, f"{n}-{i}")
            assert job_id in await listed(stub, alpha, 0)
            if i % 2:
                assert await accept(stub, alpha, [job_id]) == 2  # RESULT_TYPE_SUCCESS
                taken.add(job_id)
                assert job_id not in await listed(stub, alpha, 0)

    await asyncio.gather(*(poller() for _ in range(4)), *(writer(n) for n in range(4)))
    waiting = await listed(stub, alpha, 0)
    assert len(waiting) == 40
    assert not set(waiting) & taken
    assert {json.loads(text)["command"] for text in waiting.values()} == {
        f"{n}-{i}" for n in range(4) for i in range(0, 20, 2)
    }


async def test_an_idle_poll_is_answered_while_the_database_thread_is_busy() -> None:
    async with (
        RainbowServer("127.0.0.1:0", secret=SECRET) as server,
        grpc.aio.insecure_channel(server.address) as channel,
    ):
        stub = pb_grpc.RainbowSchedulerStub(channel)
        alpha, idle = await register(stub, "alpha"), await register(stub, "idle")
        job = await submit(stub, idle, "waiting")
        assert list(await listed(stub, idle, 10)) == [job]
        # an accept of 100,000 ids that do not exist keeps the database thread busy
        slow = asyncio.ensure_future(
            stub.AcceptJobs(
                pb.AcceptJobsRequest(
                    cluster="alpha", secret=alpha.secret, jobids=range(10**9, 10**9 + 100_000)
                )
            )
        )
        await called(server, "AcceptJobs", 1)
        assert list(await listed(stub, idle, 10)) == [job]
        assert not slow.done()
        await slow


def test_the_cache_keeps_to_its_size_and_forgets_least_recently_used() -> None:
    cache = AnswerCache(max_bytes=10 * (100 + ENTRY_COST))
    for n in range(10):
        cache.put(f"c{n}", 10, bytes(100))
    assert len(cache) == 10
    assert cache.get("c0", 10) is not None  # now the most recently used
    cache.put("c10", 10, bytes(100))
    assert len(cache) == 10
    assert cache.get("c1", 10) is None  # the least recently used went
    assert cache.get("c0", 10) is not None
    assert cache.size <= 10 * (100 + ENTRY_COST)
    # empty answers count too, so endless maxJobs values cannot grow it
    for limit in range(10_000):
        cache.put("many", limit, b"")
    assert cache.size <= 10 * (100 + ENTRY_COST)
    cache.put("huge", 0, bytes(10 * (100 + ENTRY_COST)))  # larger than the cache: not kept
    assert cache.get("huge", 0) is None


@pytest.mark.parametrize("limit", [0, -1, -100])
def test_every_limit_below_one_is_one_key(limit: int) -> None:
    cache = AnswerCache()
    cache.put("a", 0, b"all")
    assert cache.get("a", limit) == b"all"
    cache.put("a", 5, b"five")
    cache.put("b", 0, b"other")
    cache.drop("a")
    assert cache.get("a", 0) is None
    assert cache.get("a", 5) is None
    assert cache.get("b", 0) == b"other"
    assert cache.size == len(b"other") + ENTRY_COST
