"""Hostile and odd input through ``RainbowClient``, against one embedded server.

Every call either succeeds, and then the value read back with ``request_jobs`` is
exactly what was sent, or raises a ``RainbowError`` subclass that says what was wrong
(``InvalidArgumentError`` for what the client refuses before sending: lone surrogates
that protobuf cannot encode, empty names, ints outside int32, duplicated or
non-positive job ids, empty id lists). The server keeps serving and a canary cluster's
jobs never change. Malformed hosts and options fail at construction or at connect.
"""

from __future__ import annotations

import math
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rainbow_aio import (
    ClusterExistsError,
    InvalidArgumentError,
    Job,
    KeepAliveConfig,
    MissingCredentialError,
    RainbowClient,
    RainbowError,
    RainbowServer,
    RetryPolicy,
    ServerError,
    TLSConfig,
)
from rainbow_aio import _protocol as P

# the async tests share the module's event loop (and so its server and client)
ON_MODULE_LOOP = pytest.mark.asyncio(loop_scope="module")

PROPERTY = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NASTY = st.sampled_from(
    [
        "'",
        '"',
        "%",
        "_",
        "a%",
        "\\",
        "\x00",
        "' OR '1'='1",
        "'; DROP TABLE jobs; --",
        "&&<>",
        "🌈️",
        "\ud800",  # lone surrogates: protobuf cannot encode them
        "a\udfffb",
        "\u2028",
        " ",
        "",
    ]
)
SURROGATES = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
TEXT = st.one_of(
    NASTY,
    st.text(max_size=40),
    st.lists(st.one_of(NASTY, SURROGATES), max_size=4).map("".join),
)
ANY_INT = st.one_of(
    st.integers(P.INT32_MIN, P.INT32_MAX),
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, 1, -1, P.INT32_MAX, P.INT32_MAX + 1, P.INT32_MIN, P.INT32_MIN - 1]),
)
NOT_INT = st.sampled_from([1.0, 1.5, "1", None, True, False, b"1", math.nan])


def encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@dataclass
class Env:
    server: RainbowServer
    client: RainbowClient
    canary: Any
    canary_jobs: list[Job]
    counter: int = 0

    async def fresh(self) -> Any:
        self.counter += 1
        return await self.client.register(f"prop-{self.counter}", "chocolate-cookies")

    async def healthy(self) -> None:
        await self.client.ping()
        assert await self.client.request_jobs("canary", self.canary.secret) == self.canary_jobs


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env() -> AsyncIterator[Env]:
    async with RainbowServer("127.0.0.1:0") as server, RainbowClient(server.address) as client:
        canary = await client.register("canary", "chocolate-cookies")
        for i in range(3):
            await client.submit_job("canary", canary.token, f"echo {i}", name=f"c{i}")
        jobs = await client.request_jobs("canary", canary.secret)
        yield Env(server, client, canary, jobs)


@ON_MODULE_LOOP
@PROPERTY
@given(name=TEXT)
async def test_register_any_name(env: Env, name: str) -> None:
    try:
        reg = await env.client.register(name, "chocolate-cookies")
    except InvalidArgumentError:
        assert not encodable(name) or not name.strip()
    except ClusterExistsError:
        assert encodable(name)  # a name an earlier example registered
    else:
        assert encodable(name)
        assert reg.cluster == name
        job_id = await env.client.submit_job(name, reg.token, "echo")
        listed = await env.client.request_jobs(name, reg.secret)
        assert [(j.id, j.cluster) for j in listed] == [(job_id, name)]
    await env.healthy()


@ON_MODULE_LOOP
@PROPERTY
@given(name=TEXT, command=TEXT, nodes=ANY_INT, tasks=ANY_INT)
async def test_submit_any_fields(env: Env, name: str, command: str, nodes: int, tasks: int) -> None:
    reg = await env.fresh()
    valid = (
        encodable(name)
        and encodable(command)
        and bool(command.strip())
        and 1 <= nodes <= P.INT32_MAX
        and 0 <= tasks <= P.INT32_MAX
    )
    try:
        job_id = await env.client.submit_job(
            reg.cluster, reg.token, command, nodes=nodes, tasks=tasks, name=name
        )
    except InvalidArgumentError:
        assert not valid
        assert await env.client.request_jobs(reg.cluster, reg.secret) == []
    else:
        assert valid
        assert job_id is not None
        assert await env.client.request_jobs(reg.cluster, reg.secret) == [
            Job(job_id, reg.cluster, name, nodes, tasks, command)
        ]
        result = await env.client.accept_jobs(reg.cluster, reg.secret, [job_id])
        assert result.all_accepted
    await env.healthy()


@ON_MODULE_LOOP
@PROPERTY
@given(value=NOT_INT, field=st.sampled_from(["nodes", "tasks"]))
async def test_submit_refuses_non_int_counts(env: Env, value: Any, field: str) -> None:
    with pytest.raises(InvalidArgumentError):
        await env.client.submit_job("canary", env.canary.token, "echo", **{field: value})
    await env.healthy()


@ON_MODULE_LOOP
@PROPERTY
@given(max_jobs=st.one_of(ANY_INT, st.none()))
async def test_request_jobs_any_max(env: Env, max_jobs: int | None) -> None:
    try:
        listed = await env.client.request_jobs("canary", env.canary.secret, max_jobs)
    except InvalidArgumentError:
        assert max_jobs is not None
        assert not 0 <= max_jobs <= P.INT32_MAX
    else:
        # None and 0 both mean "all", as 0 does on the wire
        expected = env.canary_jobs if not max_jobs else env.canary_jobs[:max_jobs]
        assert listed == expected
    await env.healthy()


@ON_MODULE_LOOP
@PROPERTY
@given(
    data=st.data(),
    picks=st.lists(st.integers(0, 2), max_size=5),
    others=st.lists(ANY_INT, max_size=8),
)
async def test_accept_any_ids(
    env: Env, data: st.DataObject, picks: list[int], others: list[int]
) -> None:
    reg = await env.fresh()
    mine = [await env.client.submit_job(reg.cluster, reg.token, f"job {i}") for i in range(3)]
    canary_ids = data.draw(st.lists(st.sampled_from([j.id for j in env.canary_jobs]), max_size=3))
    ids = data.draw(st.permutations([mine[i] for i in picks] + others + canary_ids))
    valid = (
        bool(ids) and len(set(ids)) == len(ids) and all(1 <= i <= P.INT32_MAX for i in ids)  # type: ignore[operator]
    )
    try:
        result = await env.client.accept_jobs(reg.cluster, reg.secret, ids)  # type: ignore[arg-type]
    except InvalidArgumentError:
        assert not valid
        taken: set[int | None] = set()
    else:
        assert valid
        taken = set(mine) & set(ids)
        assert result.all_accepted == (set(ids) == taken)
    left = [j.id for j in await env.client.request_jobs(reg.cluster, reg.secret)]
    assert left == [i for i in mine if i not in taken]
    await env.healthy()


@ON_MODULE_LOOP
@PROPERTY
@given(credential=TEXT, cluster=st.one_of(st.just("canary"), TEXT))
async def test_wrong_credentials_give_typed_errors(env: Env, credential: str, cluster: str) -> None:
    calls = [
        lambda: env.client.submit_job(cluster, credential, "evil"),
        lambda: env.client.request_jobs(cluster, credential),
        lambda: env.client.accept_jobs(cluster, credential, [j.id for j in env.canary_jobs]),
    ]
    for call in calls:
        with pytest.raises(RainbowError) as info:
            await call()
        assert isinstance(info.value, InvalidArgumentError | MissingCredentialError) or (
            type(info.value).__name__ == "DeniedError"
        ), repr(info.value)
    await env.healthy()


@ON_MODULE_LOOP
async def test_one_megabyte_command_round_trips(env: Env) -> None:
    reg = await env.fresh()
    big = "x'%_\"" * (1 << 18)  # 1 MB with quotes and wildcards
    job_id = await env.client.submit_job(reg.cluster, reg.token, big, name="big")
    (job,) = await env.client.request_jobs(reg.cluster, reg.secret)
    assert (job.id, job.command) == (job_id, big)
    await env.healthy()


@ON_MODULE_LOOP
async def test_a_listing_larger_than_grpcs_default_limit_is_received(env: Env) -> None:
    """1 MB of '&' is 6 MB of job JSON (each becomes \\u0026), over gRPC's default 4 MB
    receive limit: the client's larger default limit lists it whole."""
    reg = await env.fresh()
    big = "&" * (1 << 20)
    job_id = await env.client.submit_job(reg.cluster, reg.token, big)
    (job,) = await env.client.request_jobs(reg.cluster, reg.secret)
    assert (job.id, job.command) == (job_id, big)
    assert (await env.client.accept_jobs(reg.cluster, reg.secret, [job_id])).all_accepted
    await env.healthy()


@ON_MODULE_LOOP
async def test_a_listing_over_the_clients_limit_gives_a_typed_error_with_a_hint(
    env: Env,
) -> None:
    reg = await env.fresh()
    job_id = await env.client.submit_job(reg.cluster, reg.token, "&" * (1 << 20))
    async with RainbowClient(env.server.address, max_response_bytes=1 << 20) as small:
        with pytest.raises(ServerError) as info:
            await small.request_jobs(reg.cluster, reg.secret)
    assert info.value.rpc == "RequestJobs"
    assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "max_response_bytes" in str(info.value)
    # the job is untouched: it can still be accepted by id (and is gone afterwards)
    assert (await env.client.accept_jobs(reg.cluster, reg.secret, [job_id])).all_accepted
    assert await env.client.request_jobs(reg.cluster, reg.secret) == []
    await env.healthy()


@ON_MODULE_LOOP
async def test_a_command_over_the_message_limit_gives_a_typed_error(env: Env) -> None:
    reg = await env.fresh()
    with pytest.raises(RainbowError) as info:
        await env.client.submit_job(reg.cluster, reg.token, "x" * (5 << 20))
    assert info.value.rpc == "SubmitJob"
    assert await env.client.request_jobs(reg.cluster, reg.secret) == []
    await env.healthy()


# -- malformed hosts and options ---------------------------------------------------------

BAD_HOSTS: list[Any] = [
    "",
    " ",
    "localhost",
    "localhost:",
    ":50051",
    "localhost:0",
    "localhost:65536",
    "localhost:-1",
    "localhost:port",
    "http://localhost:50051",
    "[::1:50051",
    "[not-an-ip]:50051",
    "::1:50051",
    "local host:50051",
    " localhost:50051",
    "localhost:50051\n",
    "a\x00b:50051",
    "localhost:50051/path",
    None,
    50051,
    b"localhost:50051",
    ("localhost", 50051),
]


@pytest.mark.parametrize("host", BAD_HOSTS, ids=repr)
def test_malformed_host_is_refused_at_construction(host: Any) -> None:
    with pytest.raises(InvalidArgumentError, match="host"):
        RainbowClient(host)


BAD_CLIENT_OPTIONS: list[dict[str, Any]] = [
    {"timeout": 0},
    {"timeout": -1},
    {"timeout": math.nan},
    {"timeout": "10"},
    {"timeout": None},
    {"timeout": math.inf},
    {"timeout": 1e10},
    {"attempt_timeout": 1e10},
    {"attempt_timeout": 0},
    {"attempt_timeout": math.nan},
    {"attempt_timeout": math.inf},
    {"connect_timeout": 0},
    {"connect_timeout": math.nan},
    {"submit_retry": "sometimes"},
    {"submit_retry": None},
    {"retry": {"max_attempts": 3}},
    {"tls": b"pem"},
    {"keepalive": 30},
    {"interceptors": ["not an interceptor"]},
]


@pytest.mark.parametrize("options", BAD_CLIENT_OPTIONS, ids=repr)
def test_malformed_client_options_are_refused_at_construction(options: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgumentError):
        RainbowClient("127.0.0.1:50051", **options)


BAD_POLICIES: list[tuple[Any, dict[str, Any]]] = [
    (RetryPolicy, {"max_attempts": 0}),
    (RetryPolicy, {"max_attempts": 1.5}),
    (RetryPolicy, {"initial_backoff": -1}),
    (RetryPolicy, {"initial_backoff": math.nan}),
    (RetryPolicy, {"max_backoff": math.nan}),
    (RetryPolicy, {"initial_backoff": 2, "max_backoff": 1}),
    (KeepAliveConfig, {"time": 0}),
    (KeepAliveConfig, {"time": math.nan}),
    (KeepAliveConfig, {"time": math.inf}),
    (KeepAliveConfig, {"timeout": math.nan}),
    (KeepAliveConfig, {"timeout": math.inf}),
    (KeepAliveConfig, {"max_pings_without_data": -1}),
    (TLSConfig, {"root_certificates": "not bytes"}),
    (TLSConfig, {"certificate_chain": b"cert"}),  # a key is needed too
    (TLSConfig, {"server_name": ""}),
]


@pytest.mark.parametrize(("cls", "options"), BAD_POLICIES, ids=repr)
def test_malformed_option_objects_are_refused(cls: Any, options: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgumentError):
        cls(**options)


def test_a_closed_port_or_unknown_name_fails_at_connect_not_before() -> None:
    # well formed, so construction succeeds; the failure belongs to connect()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    RainbowClient(f"127.0.0.1:{port}")
    RainbowClient("no-such-host.invalid:50051")
    RainbowClient("[::1]:50051")
