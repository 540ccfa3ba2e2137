"""Every call's success path and every error the server can answer, over the wire."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import grpc
import pytest

from rainbow_aio import (
    AcceptStatus,
    ClusterExistsError,
    DeniedError,
    Job,
    MissingCredentialError,
    RainbowClient,
    RainbowServer,
    Registration,
)


async def submit(client: RainbowClient, reg: Registration, command: str = "echo hi") -> int:
    job_id = await client.submit_job(reg.cluster, reg.token, command)
    assert job_id is not None  # the embedded server returns real ids
    return job_id


async def test_register_returns_credentials(
    rainbow_client: RainbowClient, rainbow_server: RainbowServer
) -> None:
    reg = await rainbow_client.register("keebler", rainbow_server.secret)
    assert reg.cluster == "keebler"
    assert reg.token
    assert reg.secret
    assert reg.token != reg.secret


async def test_register_existing_cluster_says_credentials_are_gone(
    rainbow_client: RainbowClient, rainbow_server: RainbowServer, alpha: Registration
) -> None:
    with pytest.raises(ClusterExistsError) as info:
        await rainbow_client.register("alpha", rainbow_server.secret)
    err = info.value
    assert err.rpc == "Register"
    assert err.cluster == "alpha"
    assert "cannot be shown again" in str(err)


async def test_register_with_wrong_secret_is_denied(rainbow_client: RainbowClient) -> None:
    with pytest.raises(DeniedError) as info:
        await rainbow_client.register("alpha", "not-the-secret")
    err = info.value
    assert (err.rpc, err.cluster, err.code, err.details) == (
        "Register",
        "alpha",
        grpc.StatusCode.UNKNOWN,
        "request denied",
    )


async def test_register_with_empty_secret_is_denied(rainbow_client: RainbowClient) -> None:
    with pytest.raises(DeniedError):
        await rainbow_client.register("alpha", "")


async def test_submit_returns_the_real_job_id(
    rainbow_client: RainbowClient, alpha: Registration
) -> None:
    first = await rainbow_client.submit_job("alpha", alpha.token, "echo one")
    second = await rainbow_client.submit_job(
        "alpha", alpha.token, "echo two", nodes=3, tasks=4, name="two"
    )
    assert isinstance(first, int)
    assert isinstance(second, int)
    assert second > first


async def test_submit_errors(
    rainbow_client: RainbowClient, rainbow_server: RainbowServer, alpha: Registration
) -> None:
    beta = await rainbow_client.register("beta", rainbow_server.secret)
    with pytest.raises(MissingCredentialError) as missing:
        await rainbow_client.submit_job("alpha", "", "echo")
    assert missing.value.details == "a cluster token is required"
    assert missing.value.cluster == "alpha"
    for cluster, token in [("alpha", "wrong"), ("alpha", beta.token), ("nowhere", alpha.token)]:
        with pytest.raises(DeniedError) as denied:
            await rainbow_client.submit_job(cluster, token, "echo")
        assert (denied.value.rpc, denied.value.cluster) == ("SubmitJob", cluster)


async def test_request_jobs_lists_typed_jobs_lowest_id_first(
    rainbow_client: RainbowClient, alpha: Registration
) -> None:
    assert await rainbow_client.request_jobs("alpha", alpha.secret) == []
    ids = [
        await rainbow_client.submit_job(
            "alpha", alpha.token, f"sleep {i} && echo <{i}>", nodes=i + 1, tasks=i, name=f"j{i}"
        )
        for i in range(5)
    ]
    jobs = await rainbow_client.request_jobs("alpha", alpha.secret)
    assert [job.id for job in jobs] == ids == sorted(ids)
    assert jobs[2] == Job(
        id=ids[2], cluster="alpha", name="j2", nodes=3, tasks=2, command="sleep 2 && echo <2>"
    )
    # listing claims nothing
    assert await rainbow_client.request_jobs("alpha", alpha.secret) == jobs
    limited = await rainbow_client.request_jobs("alpha", alpha.secret, 2)
    assert [job.id for job in limited] == ids[:2]


async def test_request_jobs_errors(rainbow_client: RainbowClient, alpha: Registration) -> None:
    with pytest.raises(MissingCredentialError):
        await rainbow_client.request_jobs("alpha", "")
    with pytest.raises(DeniedError):
        await rainbow_client.request_jobs("alpha", alpha.token)  # the token is not the secret
    with pytest.raises(DeniedError):
        await rainbow_client.request_jobs("nowhere", alpha.secret)


async def test_accept_success_then_partial(
    rainbow_client: RainbowClient, alpha: Registration
) -> None:
    ids = [await submit(rainbow_client, alpha, f"echo {i}") for i in range(3)]
    first = await rainbow_client.accept_jobs("alpha", alpha.secret, [ids[0]])
    assert first.status is AcceptStatus.SUCCESS
    assert first.all_accepted
    assert first.job_ids == (ids[0],)
    assert first.attempts == 1
    # ids[0] is gone already; ids[1] is still there and gets taken
    second = await rainbow_client.accept_jobs("alpha", alpha.secret, (ids[0], ids[1]))
    assert second.status is AcceptStatus.PARTIAL
    assert not second.all_accepted
    remaining = await rainbow_client.request_jobs("alpha", alpha.secret)
    assert [job.id for job in remaining] == [ids[2]]


async def test_accept_errors(rainbow_client: RainbowClient, alpha: Registration) -> None:
    with pytest.raises(MissingCredentialError):
        await rainbow_client.accept_jobs("alpha", "", [1])
    with pytest.raises(DeniedError):
        await rainbow_client.accept_jobs("alpha", "wrong", [1])


# What each denial must name (the server says only "request denied"): every possibility
# for that call, and how to tell them apart.
DENIAL_CAUSES = {
    "Register": ["registration secret differs from the server's", "--secret"],
    "SubmitJob": [
        "the token is wrong",
        "not its secret",
        "not registered on this server",
        "ClusterExistsError",
    ],
    "RequestJobs": [
        "the secret is wrong",
        "not its token",
        "not registered on this server",
        "--cleanup",
        "ClusterExistsError",
    ],
}
DENIAL_CAUSES["AcceptJobs"] = DENIAL_CAUSES["RequestJobs"]


async def test_every_denial_names_what_may_be_wrong_and_no_credential(
    rainbow_client: RainbowClient, rainbow_server: RainbowServer, alpha: Registration
) -> None:
    wrong = "not-the-secret-0123456789"
    client = rainbow_client
    calls: list[tuple[str, Callable[[], Awaitable[object]]]] = [
        ("Register", lambda: client.register("beta", wrong)),
        ("SubmitJob", lambda: client.submit_job("alpha", alpha.secret, "echo")),  # not the token
        ("SubmitJob", lambda: client.submit_job("nowhere", alpha.token, "echo")),
        ("RequestJobs", lambda: client.request_jobs("alpha", alpha.token)),  # not the secret
        ("RequestJobs", lambda: client.request_jobs("nowhere", alpha.secret)),
        ("AcceptJobs", lambda: client.accept_jobs("alpha", wrong, [1])),
        ("AcceptJobs", lambda: client.accept_jobs("nowhere", alpha.secret, [1])),
    ]
    credentials = [wrong, alpha.token, alpha.secret, rainbow_server.secret]
    for rpc, call in calls:
        with pytest.raises(DeniedError) as info:
            await call()
        err = info.value
        assert (err.rpc, err.details) == (rpc, "request denied")  # the server's own words
        text = str(err)
        assert "request denied" in text
        for cause in DENIAL_CAUSES[rpc]:
            assert cause in text, (rpc, cause)
        for credential in credentials:
            assert credential not in text
            assert credential not in repr(err)
    # the check the RequestJobs message suggests tells the two cases apart
    with pytest.raises(ClusterExistsError):
        await rainbow_client.register("alpha", rainbow_server.secret)  # so the secret was wrong
    await rainbow_client.register("nowhere", rainbow_server.secret)  # it was not registered


async def test_ping_measures_a_round_trip(
    rainbow_client: RainbowClient, rainbow_server: RainbowServer
) -> None:
    rtt = await rainbow_client.ping()
    assert rtt > 0
    assert rainbow_server.call_counts["Serial"] == 1


async def test_stream_ping_ends_normally_on_the_servers_eof(
    rainbow_client: RainbowClient,
) -> None:
    counts = await rainbow_client.stream_ping(3)
    assert len(counts) == 3
    assert counts == sorted(counts)
    assert len(set(counts)) == 3
    more = await rainbow_client.stream_ping(1)
    assert more[0] > counts[-1]  # one server-wide counter


async def test_poller_and_poll_many_run_on_the_clients_channel(
    rainbow_client: RainbowClient, rainbow_server: RainbowServer, alpha: Registration
) -> None:
    from rainbow_aio import Poller, PollerGroup

    beta = await rainbow_client.register("beta", rainbow_server.secret)
    job_id = await submit(rainbow_client, alpha)
    poller = rainbow_client.poller("alpha", alpha.secret, max_jobs=5)
    assert isinstance(poller, Poller)
    async with poller:
        job = await poller.get()
        assert job.id == job_id
        assert await job.accept()
    group = rainbow_client.poll_many({"alpha": alpha.secret, "beta": beta.secret})
    assert isinstance(group, PollerGroup)
    beta_job = await submit(rainbow_client, beta)
    async with group:
        job = await group.get()
        assert (job.cluster, job.id) == ("beta", beta_job)
        job.release()
