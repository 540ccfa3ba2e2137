"""Shared test configuration.

Tests marked ``slow`` (soak and chaos runs) are deselected unless ``--run-slow`` is
given; ``tox -e soak`` runs them. The compatibility suite's fixtures (a Go server
process and its clusters) come from ``support/gofixtures.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from support.grpc_faults import FaultInjector

from rainbow_aio import RainbowServer

pytest_plugins = ["support.gofixtures"]


@pytest.fixture
async def faults(rainbow_server: RainbowServer) -> AsyncIterator[FaultInjector]:
    """A gRPC-level fault injector (``support/grpc_faults.py``) in front of the test's
    embedded server: clients that connect to ``faults.address`` get the faults set."""
    async with FaultInjector(rainbow_server.address) as injector:
        yield injector


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", help="also run tests marked slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-slow"):
        return
    keep, drop = [], []
    for item in items:
        (drop if item.get_closest_marker("slow") else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
