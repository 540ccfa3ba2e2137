"""Shared test configuration.

Tests marked ``slow`` (soak and chaos runs) are deselected unless ``--run-slow`` is
given; ``tox -e soak`` runs them. The compatibility suite's fixtures (a Go server
process and its clusters) come from ``support/gofixtures.py``.
"""

from __future__ import annotations

import pytest

pytest_plugins = ["support.gofixtures"]


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
