"""The poller's promise at a job's ends: several clients in one process, shutdown,
cancellation, failing handlers, time bounds and hold limits (issue 18's eight cases).

Each test goes through the public API against the embedded server, with the gRPC fault
injector between client and server where a fault is needed; each would fail under the
design before: the ledger's inference of ownership was per client object, send tasks were
settled by their own code, run() was torn down by a cancellation, and a handler that
raised after its job was accepted lost the job.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter

import pytest
from support.grpc_faults import FaultInjector

from rainbow_aio import (
    AcceptUncertainError,
    Job,
    PolledJob,
    PollerStoppedError,
    RainbowClient,
    RainbowServer,
    RetryPolicy,
)
from rainbow_aio.poller import JobReleasedError, JobState, UnhandledJobsError
from rainbow_aio.poller._ledger import live_ledger

from .conftest import FAST, MakeCluster, wait_until, waiting

QUICK_RETRY = RetryPolicy(max_attempts=4, initial_backoff=0.01, max_backoff=0.05)


def fault_client(faults: FaultInjector, **kwargs: object) -> RainbowClient:
    return RainbowClient(faults.address, retry=QUICK_RETRY, **kwargs)  # type: ignore[arg-type]


# 1. two clients in one process ---------------------------------------------------------


async def test_two_clients_never_both_own_a_job(
    rainbow_client: RainbowClient, faults: FaultInjector, make_cluster: MakeCluster
) -> None:
    """A accepts job 1; B's accept of it loses its answer once and the retry says
    PARTIAL. In batched mode B used to infer "ours" (its ledger thought itself the only
    accepter); another client of the process polls the cluster, so it is uncertain."""
    cluster = await make_cluster(jobs=1)
    async with (
        fault_client(faults) as b_client,
        rainbow_client.poller(cluster.name, cluster.secret, **FAST) as a,
        b_client.poller(cluster.name, cluster.secret, **FAST) as b,
    ):
        a_job = await a.get()
        b_job = await b.get()
        assert a_job.id == b_job.id
        assert await a_job.accept() is True
        faults.lose_after("AcceptJobs", times=1)
        with pytest.raises(AcceptUncertainError):
            await b_job.accept()
        assert b.stats.accepted == 0
        assert a.stats.accepted == 1


async def test_a_direct_accept_on_a_polled_cluster_is_not_taken_for_the_pollers(
    rainbow_client: RainbowClient, faults: FaultInjector, make_cluster: MakeCluster
) -> None:
    cluster = await make_cluster(jobs=1)
    async with (
        fault_client(faults) as client,
        client.poller(cluster.name, cluster.secret, **FAST) as poller,
    ):
        job = await poller.get()
        faults.hold("AcceptJobs", times=1)  # the poller's accept waits on the wire...
        accepting = asyncio.create_task(job.accept())
        await faults.wait_held("AcceptJobs")
        # ...while another client of this process takes the job directly
        result = await rainbow_client.accept_jobs(cluster.name, cluster.secret, [job.id])
        assert result.status.value == "partial"  # the held call took it first
        faults.lose_after("AcceptJobs", times=1)
        faults.clear("AcceptJobs")
        faults.lose_after("AcceptJobs", times=1)
        faults.release("AcceptJobs")
        outcome: object
        try:
            outcome = await accepting
        except AcceptUncertainError as exc:
            outcome = exc
        # the held call's answer came back (SUCCESS: ours) or was lost and the retry said
        # PARTIAL while a direct accepter was about: never True on a guess
        if outcome is True:
            assert faults.forwarded["AcceptJobs"] >= 1
        else:
            assert isinstance(outcome, AcceptUncertainError)


async def test_inference_still_holds_for_a_lone_accepter(
    faults: FaultInjector, make_cluster: MakeCluster
) -> None:
    """The other side of case 1: with one accepter in the process the batched mode still
    proves a job taken by a lost attempt ours (a job is never owned by nobody)."""
    cluster = await make_cluster(jobs=1)
    async with (
        fault_client(faults) as client,
        client.poller(cluster.name, cluster.secret, **FAST) as poller,
    ):
        job = await poller.get()
        faults.lose_after("AcceptJobs", times=1)
        assert await job.accept() is True


# 2. a send cancelled before its first step -----------------------------------------------


async def test_a_send_cancelled_before_its_first_step_settles_its_accept(
    rainbow_client: RainbowClient, make_cluster: MakeCluster
) -> None:
    cluster = await make_cluster(jobs=1)
    async with rainbow_client.poller(
        cluster.name, cluster.secret, accept_mode="shared", **FAST
    ) as poller:
        job = await poller.get()
        accepting = asyncio.create_task(job.accept())
        await asyncio.sleep(0)  # accept() ran: its send task exists and has not started
        ledger = live_ledger(rainbow_client, cluster.name)
        assert ledger is not None
        (holder,) = ledger.holders
        (send,) = holder.sends
        send.cancel()  # what closing does to sends still pending at shutdown_timeout
        async with asyncio.timeout(5):
            with pytest.raises(PollerStoppedError, match="before this accept was sent"):
                await accepting
        assert job.state is JobState.HELD  # nothing was sent: still the consumer's
        job.release()
    assert job.id in await waiting(rainbow_client, cluster)


async def test_accepts_racing_a_close_all_return(
    rainbow_server: RainbowServer, faults: FaultInjector, make_cluster: MakeCluster
) -> None:
    """Consumers keep accepting while the block is left and shutdown_timeout runs out:
    every accept() returns (none hangs), and no job is both lost and unreported."""
    cluster = await make_cluster(jobs=150)
    outcomes: Counter[str] = Counter()
    async with fault_client(faults) as client:
        poller = client.poller(
            cluster.name,
            cluster.secret,
            accept_mode="shared",
            shutdown_timeout=0.05,
            max_jobs=150,
            queue_size=150,
            **FAST,
        )

        async def consume() -> None:
            while True:
                try:
                    job = await poller.get()
                except PollerStoppedError:
                    return
                try:
                    ours = await job.accept()
                    outcomes["ours" if ours else "lost"] += 1
                except AcceptUncertainError:
                    outcomes["uncertain"] += 1
                except (PollerStoppedError, JobReleasedError):
                    outcomes["given back"] += 1
                await asyncio.sleep(0)

        async with poller:
            await wait_until(lambda: poller.qsize() >= 100, what="jobs queued")
            faults.hold("AcceptJobs")  # answers wait, so shutdown_timeout runs out
            consumers = [asyncio.create_task(consume()) for _ in range(8)]
            await faults.wait_held("AcceptJobs", 8)
        faults.release("AcceptJobs")
        faults.clear("AcceptJobs")
        async with asyncio.timeout(10):  # a hung accept() fails here
            await asyncio.gather(*consumers)
    async with RainbowClient(rainbow_server.address) as lister:
        still_waiting = await waiting(lister, cluster)
    # every job is on the server still, or was reported ours or uncertain (never silent)
    assert outcomes["ours"] + outcomes["uncertain"] + len(still_waiting) >= 150 - outcomes["lost"]


# 3. cancelling run() while an accept is on the wire --------------------------------------


async def test_cancelling_run_lets_accepted_jobs_reach_their_handlers(
    rainbow_client: RainbowClient, faults: FaultInjector, make_cluster: MakeCluster
) -> None:
    cluster = await make_cluster(jobs=1)
    handled: list[int] = []

    async def handler(job: PolledJob) -> None:
        handled.append(job.id)

    async with fault_client(faults) as client:

        async def service() -> None:
            async with client.poller(cluster.name, cluster.secret, **FAST) as poller:
                await poller.run(handler)

        faults.hold("AcceptJobs", times=1)
        task = asyncio.create_task(service())
        await faults.wait_held("AcceptJobs")  # the server took the job; answer held
        task.cancel()  # Ctrl-C: asyncio.run cancels the main task
        await asyncio.sleep(0.05)
        faults.release("AcceptJobs")
        with pytest.raises(asyncio.CancelledError):
            await task
    assert handled == cluster.ids  # the handler ran for the job the server gave away
    assert await waiting(rainbow_client, cluster) == set()


async def test_a_second_cancellation_cuts_handlers_short_and_reports_the_jobs(
    rainbow_client: RainbowClient, make_cluster: MakeCluster
) -> None:
    cluster = await make_cluster(jobs=1)
    started = asyncio.Event()
    unhandled: list[Job] = []

    async def handler(job: PolledJob) -> None:
        started.set()
        await asyncio.sleep(3600)

    async def service() -> None:
        async with rainbow_client.poller(
            cluster.name, cluster.secret, on_unhandled=unhandled.append, **FAST
        ) as poller:
            await poller.run(handler)

    task = asyncio.create_task(service())
    await started.wait()
    task.cancel()
    await asyncio.sleep(0.05)
    task.cancel()  # the second Ctrl-C
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [job.id for job in unhandled] == cluster.ids


async def test_graceful_stop_past_shutdown_timeout_raises_the_jobs(
    rainbow_client: RainbowClient, make_cluster: MakeCluster
) -> None:
    from rainbow_aio import Shutdown

    cluster = await make_cluster(jobs=1)
    stop = Shutdown()

    async def handler(job: PolledJob) -> None:
        stop.request("test")
        await asyncio.sleep(3600)

    async with rainbow_client.poller(
        cluster.name, cluster.secret, shutdown_timeout=0.1, **FAST
    ) as poller:
        with pytest.raises(UnhandledJobsError) as caught:
            await poller.run(handler, stop=stop)
        assert [job.id for job in caught.value.jobs] == cluster.ids
        assert poller.stats.unhandled == 1


# 4. a handler that raises after its job was accepted ------------------------------------


async def test_a_failing_handler_gets_its_accepted_job_again(
    rainbow_client: RainbowClient, make_cluster: MakeCluster
) -> None:
    cluster = await make_cluster(jobs=1)
    calls: list[int] = []

    async with rainbow_client.poller(
        cluster.name, cluster.secret, redelivery_delay=0.01, max_redelivery_delay=0.02, **FAST
    ) as poller:

        async def handler(job: PolledJob) -> None:
            calls.append(job.id)
            assert job.accepted
            if len(calls) == 1:
                raise RuntimeError("first try fails")
            await poller.stop()

        report = await poller.run(handler)
    assert calls == cluster.ids * 2  # the same job, handed to the handler again
    assert report.failed == 1
    assert report.handled == 1
    assert await waiting(rainbow_client, cluster) == set()


async def test_an_always_failing_handler_gives_its_accepted_job_up_visibly(
    rainbow_client: RainbowClient, make_cluster: MakeCluster
) -> None:
    cluster = await make_cluster(jobs=1)
    given_up: list[Job] = []
    calls = 0

    async with rainbow_client.poller(
        cluster.name,
        cluster.secret,
        redelivery_delay=0.01,
        max_redelivery_delay=0.02,
        max_deliveries=3,
        on_give_up=given_up.append,
        **FAST,
    ) as poller:

        async def handler(job: PolledJob) -> None:
            nonlocal calls
            calls += 1
            raise RuntimeError("poison")

        running = asyncio.create_task(poller.run(handler))
        await wait_until(lambda: poller.stats.given_up == 1, what="the job given up")
        await poller.stop()
        await running
    assert calls == 3
    assert [job.id for job in given_up] == cluster.ids


# 5. accept() has a time bound -----------------------------------------------------------


async def test_accept_is_bounded_and_a_late_answer_hands_the_job_out_again(
    faults: FaultInjector, make_cluster: MakeCluster
) -> None:
    cluster = await make_cluster(jobs=1)
    async with (
        fault_client(faults, timeout=2) as client,
        client.poller(cluster.name, cluster.secret, accept_timeout=0.3, **FAST) as poller,
    ):
        job = await poller.get()
        faults.lose_after("AcceptJobs", times=1)  # the server takes it, the answer is lost
        faults.busy("AcceptJobs")  # ...and every resend is refused as busy
        with pytest.raises(AcceptUncertainError) as caught:
            await job.accept()
        assert caught.value.resolving
        faults.clear("AcceptJobs")  # the resends get through: PARTIAL, so it was ours
        # waiting in the queue again, already owned: counted as queued until handed out
        await wait_until(lambda: poller.stats.queued == 1, what="the job queued again")
        async with asyncio.timeout(10):
            again = await poller.get()
        assert poller.stats.queued == 0
        assert again.id == job.id
        assert again.accepted
        assert await again.accept() is True


# 6. a group whose clusters have all failed ----------------------------------------------


async def test_removing_the_last_healthy_cluster_ends_the_group(
    rainbow_client: RainbowClient, make_cluster: MakeCluster
) -> None:
    healthy = await make_cluster()
    broken = await make_cluster()
    async with rainbow_client.poll_many(
        {healthy.name: healthy.secret, broken.name: "not-the-secret"},
        denied_attempts=1,
        **FAST,
    ) as group:
        await wait_until(lambda: broken.name in group.errors, what="the broken cluster failed")
        await group.remove(healthy.name)
        async with asyncio.timeout(5):
            with pytest.raises(ExceptionGroup):
                await group.get()


# 7. short listings do not reset failure counts ------------------------------------------


async def test_a_cut_short_listing_does_not_reset_failed_deliveries(
    faults: FaultInjector, make_cluster: MakeCluster
) -> None:
    cluster = await make_cluster(jobs=1)
    deliveries = 0
    async with fault_client(faults) as client:
        poller = client.poller(
            cluster.name,
            cluster.secret,
            max_deliveries=2,
            redelivery_delay=0.01,
            max_redelivery_delay=0.01,
            **FAST,
        )
        async with poller:
            for _ in range(4):
                try:
                    async with asyncio.timeout(1):
                        job = await poller.get()
                except TimeoutError:
                    break
                deliveries += 1
                # the job is queued again after its delay: the next listings miss it
                faults.truncate("RequestJobs", times=3)
                job.release(failed=True)
            assert poller.stats.given_up == 1
    assert deliveries == 2


async def test_full_listings_still_forget_records_of_jobs_taken_elsewhere(
    rainbow_client: RainbowClient, make_cluster: MakeCluster
) -> None:
    """With a standing backlog every listing is full; a failure record of a job taken
    elsewhere (below the listing's highest id, not shown) is forgotten all the same."""
    cluster = await make_cluster(jobs=3)
    first, second, third = cluster.ids
    async with rainbow_client.poller(cluster.name, cluster.secret, max_jobs=1, **FAST) as p:
        job = await p.get()
        assert job.id == first
        job.release(failed=True)
        ledger = live_ledger(rainbow_client, cluster.name)
        assert ledger is not None
        assert first in ledger.records.failures
        ledger.records.forget_after = 0.0  # no grace period, for the test
        await rainbow_client.accept_jobs(cluster.name, cluster.secret, [first])
        start = ledger.begin_listing()
        ledger.listed(start, [second, third], asked=2)  # full: says nothing past third
        ledger.end_listing(start)
        assert first not in ledger.records.failures


# 8. the hold limit ----------------------------------------------------------------------


async def test_a_job_held_too_long_is_given_back_and_counted(
    rainbow_client: RainbowClient, make_cluster: MakeCluster
) -> None:
    cluster = await make_cluster(jobs=1)
    async with rainbow_client.poller(cluster.name, cluster.secret, max_hold=0.2, **FAST) as p:
        stray = await p.get()  # a reference kept alive, never settled
        assert p.stats.held == 1
        await wait_until(lambda: p.stats.hold_expired == 1, what="the hold limit")
        assert p.stats.held == 0
        again = await p.get()
        assert again.id == stray.id
        with pytest.raises(JobReleasedError, match="max_hold"):
            await stray.accept()
        assert await again.accept() is True


async def test_a_batch_shares_its_hold_limit_and_each_job_leaves_it_alone(
    rainbow_client: RainbowClient, make_cluster: MakeCluster
) -> None:
    cluster = await make_cluster(jobs=3)
    async with rainbow_client.poller(
        cluster.name, cluster.secret, max_jobs=3, max_hold=0.3, **FAST
    ) as p:
        await wait_until(lambda: p.qsize() == 3, what="three jobs queued")
        batch = await p.get_batch(3)
        assert len(batch) == 3
        first, second, third = batch
        assert await first.accept() is True  # accepted: the limit no longer applies
        second.release()  # given back by its consumer: not counted as expired
        await wait_until(lambda: p.stats.hold_expired == 1, what="the hold limit")
        assert third.state is JobState.RELEASED
        assert first.state is JobState.ACCEPTED
        with pytest.raises(JobReleasedError, match="max_hold"):
            await third.accept()


# smaller surprises ------------------------------------------------------------------------


async def test_accept_after_release_is_a_typed_error(
    rainbow_client: RainbowClient, make_cluster: MakeCluster
) -> None:
    cluster = await make_cluster(jobs=1)
    async with rainbow_client.poller(cluster.name, cluster.secret, **FAST) as p:
        job = await p.get()
        job.release()
        with pytest.raises(JobReleasedError) as caught:
            await job.accept()
        assert caught.value.outcome.value == "not applied"


async def test_request_jobs_with_max_jobs_0_lists_all(
    rainbow_client: RainbowClient, make_cluster: MakeCluster
) -> None:
    cluster = await make_cluster(jobs=25)
    jobs = await rainbow_client.request_jobs(cluster.name, cluster.secret, max_jobs=0)
    assert [job.id for job in jobs] == cluster.ids


async def test_stop_waits_for_the_accepts_it_sends(
    rainbow_client: RainbowClient, make_cluster: MakeCluster
) -> None:
    cluster = await make_cluster(jobs=1)
    async with rainbow_client.poller(cluster.name, cluster.secret, accept_window=5, **FAST) as p:
        job = await p.get()
        accepting = asyncio.create_task(job.accept())
        await asyncio.sleep(0)  # requested, waiting for its (long) window
        await p.stop()  # sends it now and waits for its answer
        assert job.state is JobState.ACCEPTED  # settled before stop() returned
        assert await accepting is True


async def test_leaving_a_poller_with_an_orphaned_accepted_job_raises_it(
    rainbow_client: RainbowClient, faults: FaultInjector, make_cluster: MakeCluster
) -> None:
    """An accept on the wire whose consumer was cancelled takes the job; nobody takes it
    again before the block is left: the application gets it, not a log line."""
    cluster = await make_cluster(jobs=1)
    seen: list[Job] = []

    async def consume_and_leave(client: RainbowClient) -> None:
        async with client.poller(
            cluster.name, cluster.secret, on_unhandled=seen.append, **FAST
        ) as p:
            job = await p.get()
            faults.hold("AcceptJobs", times=1)
            accepting = asyncio.create_task(job.accept())
            await faults.wait_held("AcceptJobs")
            accepting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await accepting
            faults.release("AcceptJobs")
            await wait_until(lambda: p.stats.accepted == 1, what="the accept answered")

    async with fault_client(faults) as client:
        with pytest.raises(UnhandledJobsError) as caught:
            await consume_and_leave(client)
    assert [j.id for j in caught.value.jobs] == cluster.ids
    assert [j.id for j in seen] == cluster.ids
    assert await waiting(rainbow_client, cluster) == set()


async def test_a_declined_job_stays_on_the_server_and_is_not_handed_out_again(
    rainbow_client: RainbowClient, make_cluster: MakeCluster
) -> None:
    cluster = await make_cluster(jobs=2)
    big, small = cluster.ids
    async with rainbow_client.poller(cluster.name, cluster.secret, **FAST) as p:
        first = await p.get()
        assert first.id == big
        first.decline()
        second = await p.get()
        assert second.id == small
        assert await second.accept() is True
        await wait_until(lambda: p.stats.polls >= 5, what="more polls")
        assert p.qsize() == 0  # the declined job was listed again, never queued
        assert p.stats.declined == 1
    assert await waiting(rainbow_client, cluster) == {big}


async def test_aclose_leaves_like_the_block_and_twice_is_harmless(
    rainbow_client: RainbowClient, make_cluster: MakeCluster
) -> None:
    cluster = await make_cluster(jobs=1)
    poller = await rainbow_client.poller(cluster.name, cluster.secret, **FAST).__aenter__()
    job = await poller.get()
    await poller.aclose()
    await poller.aclose()
    assert job.state is JobState.RELEASED  # held jobs go back when it closes
    assert await waiting(rainbow_client, cluster) == set(cluster.ids)


async def test_one_id_per_call_after_another_accepter_lasts_a_cool_down(
    rainbow_client: RainbowClient, make_cluster: MakeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A PARTIAL answer in batched mode sends accepts one id per call for a while, not
    for the rest of the ledger's life."""
    monkeypatch.setattr("rainbow_aio.poller._sends._PER_ID_COOLDOWN", 0.2)
    cluster = await make_cluster(jobs=2)
    async with rainbow_client.poller(cluster.name, cluster.secret, **FAST) as p:
        first = await p.get()
        await rainbow_client.accept_jobs(cluster.name, cluster.secret, [first.id])
        assert await first.accept() is False  # PARTIAL: another accepter took it
        ledger = live_ledger(rainbow_client, cluster.name)
        assert ledger is not None
        assert ledger.per_id
        await wait_until(lambda: not ledger.per_id, what="the cool-down to pass")
        second = await p.get()
        assert await second.accept() is True
