"""Fixtures for the compatibility suite (tests/compat), loaded by tests/conftest.py.

They live here rather than in a conftest of tests/compat because that package skips
itself when no Go server is configured, and a conftest inside it would be imported (and
so skip, which pytest cannot do at that moment) as soon as a command line names the
folder.

- ``go_server``: one Go server process per test module (:class:`GoServer`), stopped
  by its PID afterwards.
- ``go_client``: a ``RainbowClient`` connected to it.
- ``make_go_cluster``: ``await make_go_cluster(jobs=N)`` registers a cluster of a name
  no other test uses and submits N jobs to it.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field

import pytest

from rainbow_aio import RainbowClient

from .goserver import GoServer
from .peers import go_server_binary

__all__ = [
    "REGISTRATION_SECRET",
    "GoCluster",
    "MakeGoCluster",
    "go_client",
    "go_server",
    "make_go_cluster",
    "unique_name",
]

REGISTRATION_SECRET = "chocolate-cookies"
"""The Go server's default registration secret (it listens on loopback only here)."""


@dataclass
class GoCluster:
    """A cluster registered on the Go server, with the commands submitted to it."""

    name: str
    token: str = field(repr=False)
    secret: str = field(repr=False)
    commands: list[str] = field(default_factory=list)


_names = itertools.count(1)


def unique_name(prefix: str = "cluster") -> str:
    """A cluster name that no other test of the session uses."""
    return f"{prefix}-{next(_names)}"


MakeGoCluster = Callable[..., Awaitable[GoCluster]]


@pytest.fixture(scope="module")
def go_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GoServer]:
    """A Go server process for the module, on a fresh database."""
    with GoServer(go_server_binary(), tmp_path_factory.mktemp("go-server")) as server:
        yield server


@pytest.fixture
async def go_client(go_server: GoServer) -> AsyncIterator[RainbowClient]:
    async with RainbowClient(go_server.address) as client:
        yield client


@pytest.fixture
def make_go_cluster(go_client: RainbowClient) -> MakeGoCluster:
    """``await make_go_cluster(jobs=N)``: a new cluster with N jobs, submitted one at a
    time (so the Go server is not put under load)."""

    async def make(jobs: int = 0, *, prefix: str = "cluster") -> GoCluster:
        name = unique_name(prefix)
        reg = await go_client.register(name, REGISTRATION_SECRET)
        cluster = GoCluster(name, reg.token, reg.secret)
        for i in range(jobs):
            command = f"echo {name} {i}"
            assert await go_client.submit_job(name, reg.token, command, name=f"j{i}") is None
            cluster.commands.append(command)
        return cluster

    return make
