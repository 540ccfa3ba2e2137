"""Calls whose request reaches the server but whose answer never comes back in time.

The chaos proxy holds everything the server sends (a one-way stall) for longer than
the call's deadline, so the server acts on the request and the client sees a deadline.
These are the cases where "did it happen?" has no answer on the wire:

* SubmitJob (safe mode): the client raises; the job may be stored. It must be stored at
  most once, and the client must not have repeated the call.
* AcceptJobs through a poller in batched mode (this process is the only accepter):
  the job was deleted by our own call, so this process owns it. The poller must not
  lose it: ``accept()`` either returns True, or raises AcceptUncertainError and the job
  is not gone from the server (so a later poll hands it out again). (Before the poller
  sent such accepts again until answered, this lost the job: accept() raised and nobody
  owned it.)
* RequestJobs: listing claims nothing, so a lost answer is simply retried.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from support.chaos import ChaosProxy

from rainbow_aio import (
    AcceptUncertainError,
    DeadlineExceededError,
    RainbowClient,
    RainbowServer,
    RetryPolicy,
    UnavailableError,
)

DEADLINE = 0.5
HOLD = 2.0  # longer than DEADLINE: the answer arrives after the client gave up
RETRY = RetryPolicy(max_attempts=3, initial_backoff=0.05, max_backoff=0.2)


@contextlib.asynccontextmanager
async def through_proxy() -> AsyncIterator[tuple[RainbowClient, ChaosProxy, RainbowClient]]:
    async with (
        RainbowServer("127.0.0.1:0") as server,
        ChaosProxy(server.address, chaos=False) as proxy,
        RainbowClient(server.address) as admin,
        RainbowClient(proxy.address, retry=RETRY, timeout=5, attempt_timeout=DEADLINE) as client,
    ):
        yield admin, proxy, client


async def test_submit_whose_answer_is_lost_is_stored_at_most_once() -> None:
    async with through_proxy() as (admin, proxy, client):
        reg = await admin.register("lost-submit", "chocolate-cookies")
        await client.ping()
        proxy.stall_all(HOLD, direction="down")
        with pytest.raises((DeadlineExceededError, UnavailableError)) as info:
            await client.submit_job("lost-submit", reg.token, "echo once", timeout=DEADLINE)
        assert info.value.rpc == "SubmitJob"
        proxy.resume()
        jobs = await admin.request_jobs("lost-submit", reg.secret)
        assert [j.command for j in jobs] in ([], ["echo once"])


async def test_listing_whose_answer_is_lost_is_retried() -> None:
    async with through_proxy() as (admin, proxy, client):
        reg = await admin.register("lost-list", "chocolate-cookies")
        job_id = await admin.submit_job("lost-list", reg.token, "echo")
        await client.ping()
        proxy.stall_all(DEADLINE * 1.5, direction="down")
        jobs = await client.request_jobs("lost-list", reg.secret, timeout=10)
        assert [j.id for j in jobs] == [job_id]


async def test_batched_accept_whose_answer_is_lost_does_not_lose_the_job() -> None:
    async with through_proxy() as (admin, proxy, client):
        reg = await admin.register("lost-accept", "chocolate-cookies")
        job_id = await admin.submit_job("lost-accept", reg.token, "echo mine")
        async with client.poller("lost-accept", reg.secret, min_interval=0.05) as poller:
            job = await asyncio.wait_for(poller.get(), 30)
            assert job.id == job_id
            proxy.stall_all(HOLD, direction="down")
            try:
                owned = await asyncio.wait_for(job.accept(), 30)
            except AcceptUncertainError:
                owned = False
            proxy.resume()
            left = [j.id for j in await admin.request_jobs("lost-accept", reg.secret)]
            # owned by this consumer, or still on the server to be handed out again
            assert owned or left == [job_id], (owned, left)
            assert not (owned and left), "accepted and still waiting"
