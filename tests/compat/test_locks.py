"""The Go server with its SQLite database locked: its answers, and what the client does.

The Go server opens its database afresh for every call and waits up to 5 s (its SQLite
driver's busy timeout) for a lock. Another connection holding the lock, as a long write,
a backup or a second process would, makes it give the answers it gives under load, on
demand: ``database is locked``, and, while only the write lock is held, a SubmitJob
answered SUBMIT_SUCCESS that stored nothing. ``GoServer.write_lock`` holds that lock.
"""

from __future__ import annotations

import asyncio

import pytest
from support.gofixtures import REGISTRATION_SECRET, MakeGoCluster, unique_name
from support.goserver import GoServer

from rainbow_aio import AcceptStatus, RainbowClient, RetryPolicy, ServerBusyError

pytestmark = pytest.mark.compat

BUSY_WAIT = 5.0  # the Go server's SQLite busy timeout
LOCKED = "database is locked"


async def test_a_locked_database_is_a_busy_error_and_changes_nothing(
    go_server: GoServer, make_go_cluster: MakeGoCluster
) -> None:
    cluster = await make_go_cluster(jobs=1)
    [job] = go_server.stored_jobs(cluster.name)
    newcomer = unique_name("locked-out")
    async with RainbowClient(go_server.address, retry=RetryPolicy.disabled()) as once:
        with go_server.write_lock("exclusive"):
            outcomes = await asyncio.gather(
                once.register(newcomer, REGISTRATION_SECRET),
                once.submit_job(cluster.name, cluster.token, "never stored"),
                once.request_jobs(cluster.name, cluster.secret),
                once.accept_jobs(cluster.name, cluster.secret, [job.id]),
                return_exceptions=True,
            )
    for rpc, outcome in zip(
        ["Register", "SubmitJob", "RequestJobs", "AcceptJobs"], outcomes, strict=True
    ):
        assert isinstance(outcome, ServerBusyError), (rpc, outcome)
        assert (outcome.rpc, outcome.details, outcome.attempts) == (rpc, LOCKED, 1)
        assert outcome.retryable
    assert newcomer not in go_server.cluster_names()
    assert go_server.stored_jobs(cluster.name) == [job]
    assert go_server.waiting_jobs(cluster.name) == [job]


async def test_calls_and_pollers_get_through_a_locked_database(
    go_client: RainbowClient, go_server: GoServer, make_go_cluster: MakeGoCluster
) -> None:
    cluster = await make_go_cluster(jobs=2)
    first, second = go_server.stored_jobs(cluster.name)
    bystander = await make_go_cluster(jobs=2)  # only listed, so its listing is known
    newcomer = unique_name("after-lock")
    locked = asyncio.Event()

    async def hold_the_lock() -> None:
        # longer than the server's busy wait, so the first attempt of each call fails
        with go_server.write_lock("exclusive"):
            locked.set()
            await asyncio.sleep(BUSY_WAIT + 1.5)

    async def poll_one_job() -> bool:
        async with go_client.poller(
            cluster.name, cluster.secret, max_jobs=1, min_interval=0.05
        ) as poller:
            job = await poller.get()
            assert job.id == first.id
            return await job.accept()

    holder = asyncio.create_task(hold_the_lock())
    await locked.wait()
    reg, submitted, listed, polled, accepted = await asyncio.gather(
        go_client.register(newcomer, REGISTRATION_SECRET),
        go_client.submit_job(cluster.name, cluster.token, "after the lock"),
        go_client.request_jobs(bystander.name, bystander.secret),
        poll_one_job(),
        go_client.accept_jobs(cluster.name, cluster.secret, [second.id]),
    )
    await holder
    assert reg.cluster == newcomer
    assert newcomer in go_server.cluster_names()
    assert submitted is None
    assert [job.command for job in go_server.waiting_jobs(cluster.name)] == ["after the lock"]
    assert [job.command for job in listed] == bystander.commands
    assert polled is True
    assert accepted.status is AcceptStatus.SUCCESS
    assert accepted.attempts >= 2  # the first attempt met the lock and was repeated


async def test_the_go_server_confirms_a_submit_it_did_not_store(
    go_server: GoServer, make_go_cluster: MakeGoCluster
) -> None:
    # A characterisation of the server, not of rainbow-aio: with the write lock held
    # elsewhere its INSERT fails after the busy wait, it ignores that error and answers
    # SUBMIT_SUCCESS. No client can tell; docs/go-server.md says what to expect.
    cluster = await make_go_cluster(jobs=1)
    [old] = go_server.stored_jobs(cluster.name)
    async with RainbowClient(go_server.address) as client:
        with go_server.write_lock("immediate"):
            submitted, listed = await asyncio.gather(
                client.submit_job(cluster.name, cluster.token, "lost"),
                client.request_jobs(cluster.name, cluster.secret),  # reads still work
            )
    assert submitted is None  # SUBMIT_SUCCESS, as for any submit to the Go server
    assert [job.id for job in listed] == [old.id]
    assert go_server.stored_jobs(cluster.name) == [old]  # nothing was written
