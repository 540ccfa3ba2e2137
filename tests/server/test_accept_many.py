"""AcceptJobs of long id lists: deleted in a few statements per transaction, answered
exactly as one id at a time would be (PROTOCOL.md: SUCCESS only when every id was
deleted; otherwise PARTIAL, with every valid id deleted all the same).

The lists cross the boundaries of one DELETE statement (``IDS_PER_DELETE``) and of one
transaction (``ACCEPT_CHUNK``), with the ids that are not deleted placed on both sides.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from rainbow_aio._proto import rainbow_pb2 as pb
from rainbow_aio._proto import rainbow_pb2_grpc as pb_grpc
from rainbow_aio.server import RainbowServer
from rainbow_aio.server._store import ACCEPT_CHUNK, IDS_PER_DELETE

from ._helpers import SECRET, Cluster, fill, listed, register

Stub = pb_grpc.RainbowSchedulerStub
UNLIMITED = [("grpc.max_receive_message_length", -1)]
WAITING = 2 * ACCEPT_CHUNK + 300  # alpha's jobs; beta has a few


@pytest.fixture
async def loaded(
    tmp_path: Path,
) -> AsyncIterator[tuple[Stub, Cluster, Cluster, list[int], list[int]]]:
    """A server on a file where alpha has ``WAITING`` jobs and beta 10 (their ids)."""
    db = tmp_path / "accept.db"
    server = RainbowServer(db=db, secret=SECRET)
    async with server, grpc.aio.insecure_channel(server.address) as channel:
        alpha = await register(pb_grpc.RainbowSchedulerStub(channel), "alpha")
        beta = await register(pb_grpc.RainbowSchedulerStub(channel), "beta")
    mine = list(await asyncio.to_thread(fill, db, "alpha", WAITING))
    theirs = list(await asyncio.to_thread(fill, db, "beta", 10))
    async with (
        RainbowServer(db=db, secret=SECRET) as server,
        grpc.aio.insecure_channel(server.address, options=UNLIMITED) as channel,
    ):
        yield pb_grpc.RainbowSchedulerStub(channel), alpha, beta, mine, theirs


async def accept(stub: Stub, cluster: Cluster, ids: list[int]) -> int:
    resp = await stub.AcceptJobs(
        pb.AcceptJobsRequest(cluster=cluster.name, secret=cluster.secret, jobids=ids),
        timeout=60,
    )
    return int(resp.status)


@pytest.mark.parametrize(
    "length", [1, 2, 3, IDS_PER_DELETE - 1, IDS_PER_DELETE, IDS_PER_DELETE + 1, ACCEPT_CHUNK + 1]
)
async def test_every_id_deleted_is_success_at_every_length(
    loaded: tuple[Stub, Cluster, Cluster, list[int], list[int]], length: int
) -> None:
    stub, alpha, beta, mine, theirs = loaded
    assert await accept(stub, alpha, mine[:length]) == pb.AcceptJobsResponse.RESULT_TYPE_SUCCESS
    left = await listed(stub, alpha)
    assert sorted(left) == mine[length:]
    assert sorted(await listed(stub, beta)) == theirs


@pytest.mark.parametrize(
    "case", ["unknown", "other-cluster", "duplicated", "negative", "already-accepted"]
)
@pytest.mark.parametrize("where", [0, IDS_PER_DELETE - 1, IDS_PER_DELETE, ACCEPT_CHUNK, -1])
async def test_ids_not_deleted_anywhere_in_a_long_list_make_it_partial(
    loaded: tuple[Stub, Cluster, Cluster, list[int], list[int]], case: str, where: int
) -> None:
    """The odd id at a statement's or a transaction's edge: PARTIAL, and every valid id
    of the list deleted, no other job."""
    stub, alpha, beta, mine, theirs = loaded
    valid = mine[: ACCEPT_CHUNK + IDS_PER_DELETE + 7]
    if case == "already-accepted":
        done = mine[-1]
        assert await accept(stub, alpha, [done]) == pb.AcceptJobsResponse.RESULT_TYPE_SUCCESS
    odd = {
        "unknown": 10**9,
        "other-cluster": theirs[3],
        "duplicated": valid[-1],  # listed again, so one of the two is not deleted
        "negative": -valid[0],
        "already-accepted": mine[-1],
    }[case]
    ids = list(valid)
    ids.insert(where if where >= 0 else len(ids), odd)
    assert await accept(stub, alpha, ids) == pb.AcceptJobsResponse.RESULT_TYPE_PARTIAL
    left = sorted(await listed(stub, alpha))
    expect_left = [i for i in mine[len(valid) :] if case != "already-accepted" or i != mine[-1]]
    assert left == expect_left
    assert sorted(await listed(stub, beta)) == theirs


async def test_a_list_of_one_id_many_times_deletes_it_once(
    loaded: tuple[Stub, Cluster, Cluster, list[int], list[int]],
) -> None:
    stub, alpha, _, mine, _ = loaded
    ids = [mine[5]] * (IDS_PER_DELETE + 3)
    assert await accept(stub, alpha, ids) == pb.AcceptJobsResponse.RESULT_TYPE_PARTIAL
    assert sorted(await listed(stub, alpha)) == [i for i in mine if i != mine[5]]
    assert await accept(stub, alpha, [mine[5]]) == pb.AcceptJobsResponse.RESULT_TYPE_PARTIAL
