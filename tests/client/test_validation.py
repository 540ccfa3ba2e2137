"""Bad arguments are refused on the client, before any RPC, with a clear message."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from rainbow_aio import (
    InvalidArgumentError,
    KeepAliveConfig,
    RainbowClient,
    RainbowServer,
    Registration,
    RetryPolicy,
    TLSConfig,
)
from rainbow_aio._config import parse_host

INT32_MAX = 2**31 - 1

Call = Callable[[RainbowClient, Registration], Awaitable[Any]]

BAD_CALLS: dict[str, tuple[Call, str]] = {
    "register empty name": (lambda c, r: c.register("", "s"), "cluster must not be empty"),
    "register blank name": (lambda c, r: c.register("  ", "s"), "cluster must not be empty"),
    "register int name": (lambda c, r: c.register(7, "s"), "cluster must be a str"),  # type: ignore[arg-type]
    "register bytes secret": (lambda c, r: c.register("a", b"s"), "secret must be a str"),  # type: ignore[arg-type]
    "submit empty command": (lambda c, r: c.submit_job("alpha", r.token, ""), "command"),
    "submit empty cluster": (lambda c, r: c.submit_job("", r.token, "x"), "cluster"),
    "submit None token": (lambda c, r: c.submit_job("alpha", None, "x"), "token must be a str"),  # type: ignore[arg-type]
    "submit nodes 0": (lambda c, r: c.submit_job("alpha", r.token, "x", nodes=0), "nodes=0"),
    "submit nodes > int32": (
        lambda c, r: c.submit_job("alpha", r.token, "x", nodes=INT32_MAX + 1),
        "out of range",
    ),
    "submit tasks < 0": (lambda c, r: c.submit_job("alpha", r.token, "x", tasks=-1), "tasks"),
    "submit tasks float": (
        lambda c, r: c.submit_job("alpha", r.token, "x", tasks=1.5),  # type: ignore[arg-type]
        "tasks must be an int",
    ),
    "submit nodes bool": (
        lambda c, r: c.submit_job("alpha", r.token, "x", nodes=True),
        "nodes must be an int",
    ),
    "submit name int": (lambda c, r: c.submit_job("alpha", r.token, "x", name=3), "name"),  # type: ignore[arg-type]
    "submit surrogate": (lambda c, r: c.submit_job("alpha", r.token, "\udc80"), "unicode"),
    "request empty cluster": (lambda c, r: c.request_jobs("", r.secret), "cluster"),
    "request max_jobs -1": (lambda c, r: c.request_jobs("alpha", r.secret, -1), "max_jobs"),
    "request max_jobs > int32": (
        lambda c, r: c.request_jobs("alpha", r.secret, INT32_MAX + 1),
        "max_jobs",
    ),
    "request bad timeout": (lambda c, r: c.request_jobs("alpha", r.secret, timeout=0), "timeout"),
    "register timeout beyond a year": (
        lambda c, r: c.register("beta", "s", timeout=1e10),
        "at most a year",
    ),
    "accept no ids": (lambda c, r: c.accept_jobs("alpha", r.secret, []), "job_ids is empty"),
    "accept str ids": (lambda c, r: c.accept_jobs("alpha", r.secret, "12"), "iterable of ints"),  # type: ignore[arg-type]
    "accept id 0": (lambda c, r: c.accept_jobs("alpha", r.secret, [0]), "job id=0"),
    "accept id > int32": (
        lambda c, r: c.accept_jobs("alpha", r.secret, [1, INT32_MAX + 1]),
        "out of range",
    ),
    "accept duplicates": (lambda c, r: c.accept_jobs("alpha", r.secret, [3, 1, 3]), "[3]"),
    "accept str id": (lambda c, r: c.accept_jobs("alpha", r.secret, ["1"]), "int"),  # type: ignore[list-item]
    "stream count 0": (lambda c, r: c.stream_ping(0), "count"),
}


@pytest.mark.parametrize("case", sorted(BAD_CALLS))
async def test_bad_arguments_never_reach_the_server(
    case: str, rainbow_client: RainbowClient, rainbow_server: RainbowServer, alpha: Registration
) -> None:
    call, expected = BAD_CALLS[case]
    before = dict(rainbow_server.call_counts)
    with pytest.raises(InvalidArgumentError) as info:
        await call(rainbow_client, alpha)
    assert expected in str(info.value)
    assert isinstance(info.value, ValueError)
    assert dict(rainbow_server.call_counts) == before


async def test_generators_of_ids_are_accepted(
    rainbow_client: RainbowClient, alpha: Registration
) -> None:
    job_id = await rainbow_client.submit_job("alpha", alpha.token, "echo")
    assert job_id is not None
    result = await rainbow_client.accept_jobs("alpha", alpha.secret, (i for i in [job_id]))
    assert result.job_ids == (job_id,)


@pytest.mark.parametrize(
    "host",
    ["localhost:50051", "127.0.0.1:1", "[::1]:65535", "rainbow.example.org:443", "unix:/tmp/s"],
)
def test_good_hosts(host: str) -> None:
    assert parse_host(host) == host
    assert RainbowClient(host).host == host


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        ("", "expected 'host:port'"),
        ("localhost", "the port is missing"),
        (":50051", "the port is missing"),
        ("localhost:", "port must be 1-65535"),
        ("localhost:0", "port must be 1-65535"),
        ("localhost:65536", "port must be 1-65535"),
        ("localhost:http", "port must be 1-65535"),
        ("http://localhost:50051", "without a URL scheme"),
        ("::1:50051", "in brackets"),
        ("[::1:50051", "unclosed '['"),
        ("[nope]:50051", "not an IPv6 address"),
        ("local host:1", "expected 'host:port'"),
        (" localhost:1", "expected 'host:port'"),
        ("bad/name:1", "not a host name"),
        ("unix:", "unix socket path is empty"),
    ],
)
def test_bad_hosts_are_refused_at_construction(host: str, reason: str) -> None:
    with pytest.raises(InvalidArgumentError, match="invalid host") as info:
        RainbowClient(host)
    assert reason in str(info.value)


def test_host_must_be_a_str() -> None:
    with pytest.raises(InvalidArgumentError, match="host must be a str"):
        RainbowClient(("localhost", 50051))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"timeout": 0},
        {"timeout": -1.0},
        {"connect_timeout": 0},
        {"submit_retry": "always"},
        {"retry": {"max_attempts": 3}},
        {"tls": b"pem"},
        {"keepalive": 330},
    ],
)
def test_bad_client_options(kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgumentError):
        RainbowClient("localhost:50051", **kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_attempts": 0},
        {"max_attempts": 2.5},
        {"initial_backoff": 0},
        {"max_backoff": -1},
        {"initial_backoff": 2.0, "max_backoff": 1.0},
    ],
)
def test_bad_retry_policies(kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgumentError):
        RetryPolicy(**kwargs)


def test_disabled_retry_policy_sends_once() -> None:
    assert RetryPolicy.disabled().max_attempts == 1


def test_bad_tls_and_keepalive_configs() -> None:
    with pytest.raises(InvalidArgumentError, match="both certificate_chain and private_key"):
        TLSConfig(certificate_chain=b"cert")
    with pytest.raises(InvalidArgumentError, match="PEM bytes"):
        TLSConfig(root_certificates="ca")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError):
        KeepAliveConfig(time=0)
    with pytest.raises(InvalidArgumentError):
        KeepAliveConfig(max_pings_without_data=-1)
