"""Every error a call raises says whether the server may have acted (``error.outcome``),
and the two timeouts mean one thing each.

Faults come from real servers: the gRPC fault injector (``support.grpc_faults``) in front
of the embedded server, and a black-hole TCP server that never answers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import grpc.aio
import pytest
from support.chaos import BlackHoleServer
from support.grpc_faults import FaultInjector
from support.proxy import TcpProxy

from rainbow_aio import (
    AcceptStatus,
    CallOutcome,
    ClientClosedError,
    ClusterExistsError,
    DeadlineExceededError,
    DeniedError,
    InvalidArgumentError,
    RainbowClient,
    RainbowError,
    RainbowServer,
    Registration,
    RetryPolicy,
    ServerBusyError,
    UnavailableError,
)

from .conftest import FAST_RETRY

NOT_APPLIED, UNKNOWN, APPLIED = CallOutcome.NOT_APPLIED, CallOutcome.UNKNOWN, CallOutcome.APPLIED


@pytest.fixture
async def client(faults: FaultInjector) -> AsyncIterator[RainbowClient]:
    async with RainbowClient(faults.address, retry=FAST_RETRY) as client:
        yield client


async def raised(call: Awaitable[Any]) -> RainbowError:
    with pytest.raises(RainbowError) as info:
        await call
    return info.value


async def test_refusals_did_not_act(
    client: RainbowClient, alpha: Registration, rainbow_server: RainbowServer
) -> None:
    cases: dict[str, tuple[Awaitable[Any], type[RainbowError]]] = {
        "wrong secret": (client.request_jobs("alpha", "wrong"), DeniedError),
        "registered twice": (client.register("alpha", rainbow_server.secret), ClusterExistsError),
        "wrong token": (client.submit_job("alpha", "wrong", "true"), DeniedError),
        "bad argument": (client.accept_jobs("alpha", alpha.secret, []), InvalidArgumentError),
    }
    for case, (call, cls) in cases.items():
        error = await raised(call)
        assert (type(error), error.outcome) == (cls, NOT_APPLIED), case


async def test_database_locked_on_every_attempt_did_not_act(
    client: RainbowClient, faults: FaultInjector, alpha: Registration
) -> None:
    faults.busy("SubmitJob")
    error = await raised(client.submit_job("alpha", alpha.token, "true"))
    assert isinstance(error, ServerBusyError)
    assert error.attempts == FAST_RETRY.max_attempts
    assert error.outcome is NOT_APPLIED
    assert faults.forwarded["SubmitJob"] == 0


async def test_a_lost_answer_makes_the_whole_call_unknown_whatever_came_after(
    client: RainbowClient, faults: FaultInjector, alpha: Registration
) -> None:
    # a submit whose answer is lost is not repeated (it could store the job twice)
    faults.lose_after("SubmitJob", times=1)
    error = await raised(client.submit_job("alpha", alpha.token, "true"))
    assert isinstance(error, UnavailableError)
    assert (error.attempts, error.outcome) == (1, UNKNOWN)
    assert faults.forwarded["SubmitJob"] == 1  # and indeed the server stored it

    # a listing is repeated; when every repeat then fails with a refusal that by itself
    # would say "not applied", the first attempt may still have acted
    faults.lose_before("AcceptJobs", times=1)
    faults.deny("AcceptJobs")
    error = await raised(client.accept_jobs("alpha", alpha.secret, [1]))
    assert isinstance(error, DeniedError)
    assert error.attempts == 2
    assert error.outcome is UNKNOWN


async def test_an_answered_accept_applied_and_a_repeat_after_a_lost_answer_is_uncertain(
    client: RainbowClient, faults: FaultInjector, alpha: Registration
) -> None:
    ids = [await client.submit_job("alpha", alpha.token, f"job {i}") for i in range(2)]
    faults.lose_after("AcceptJobs", times=1)  # took the first job, answer lost
    result = await client.accept_jobs("alpha", alpha.secret, [ids[0]])
    assert (result.status, result.outcome, result.attempts) == (
        AcceptStatus.UNCERTAIN,
        APPLIED,
        2,
    )
    result = await client.accept_jobs("alpha", alpha.secret, [ids[1]])
    assert (result.status, result.outcome, result.attempts) == (AcceptStatus.SUCCESS, APPLIED, 1)


async def test_a_call_on_the_wire_when_the_client_closes_may_have_acted(
    faults: FaultInjector, alpha: Registration
) -> None:
    client = RainbowClient(faults.address, retry=FAST_RETRY)
    await client.connect()
    faults.hold("SubmitJob")
    submitting = asyncio.create_task(client.submit_job("alpha", alpha.token, "true"))
    await faults.wait_held("SubmitJob")
    await client.close(grace=None)
    error = await raised(submitting)
    assert isinstance(error, ClientClosedError)
    assert error.outcome is UNKNOWN
    # a call made after close() was never sent
    error = await raised(client.submit_job("alpha", alpha.token, "true"))
    assert isinstance(error, ClientClosedError)
    assert error.outcome is NOT_APPLIED


async def test_a_server_that_never_answers_gives_a_deadline_that_may_have_acted(
    alpha: Registration, faults: FaultInjector
) -> None:
    faults.hold("RequestJobs")
    async with RainbowClient(
        faults.address, retry=RetryPolicy.disabled(), attempt_timeout=0.2
    ) as client:
        error = await raised(client.request_jobs("alpha", alpha.secret))
    assert isinstance(error, DeadlineExceededError)
    assert error.outcome is UNKNOWN


async def test_the_client_timeout_is_each_calls_whole_budget(
    rainbow_server: RainbowServer, alpha: Registration
) -> None:
    async with (
        BlackHoleServer() as hole,
        TcpProxy("127.0.0.1", rainbow_server.port) as proxy,
        RainbowClient(proxy.address, timeout=0.5, connect_timeout=30) as client,
    ):
        assert (client.timeout, client.attempt_timeout) == (0.5, 10.0)
        # the server "goes down": from now on connections reach something that never
        # speaks HTTP/2, so every attempt waits for a connection that never comes
        proxy.target = hole.address
        proxy.drop_all()
        error = await raised(client.request_jobs("alpha", alpha.secret))
        # the budget (0.5 s) ended the call, not connect_timeout (30 s) nor the
        # attempt's deadline (10 s)
        assert isinstance(error, DeadlineExceededError | UnavailableError)
        assert "the call's 0.5 s budget ran out" in error.message
        # a call's own timeout= replaces the client's, register() included
        error = await raised(client.register("beta", rainbow_server.secret, timeout=0.3))
        assert "the call's 0.3 s budget ran out" in error.message


def test_the_default_timeouts() -> None:
    client = RainbowClient("127.0.0.1:50051")
    assert (client.timeout, client.attempt_timeout) == (30.0, 10.0)


class Tagging(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """A user's interceptor: adds a header to every call and counts them."""

    def __init__(self) -> None:
        self.methods: list[str] = []

    async def intercept_unary_unary(
        self,
        continuation: Callable[..., Any],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        method = client_call_details.method
        self.methods.append(method.decode() if isinstance(method, bytes) else method)
        metadata = [*(client_call_details.metadata or ()), ("x-team", "rainbow")]
        details = client_call_details._replace(metadata=metadata)
        return await continuation(details, request)


async def test_interceptors_see_every_attempt(faults: FaultInjector, alpha: Registration) -> None:
    tagging = Tagging()
    faults.busy("RequestJobs", times=1)
    async with RainbowClient(faults.address, retry=FAST_RETRY, interceptors=[tagging]) as client:
        assert await client.request_jobs("alpha", alpha.secret) == []
    assert [m.rsplit("/", 1)[-1] for m in tagging.methods] == ["RequestJobs", "RequestJobs"]
    assert faults.metadata["RequestJobs"][-1].get("x-team") == "rainbow"
