"""Waiting in tests for a condition that no event announces (counters, files, processes)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest


async def wait_until(
    condition: Callable[[], bool],
    *,
    within: float = 30.0,
    what: str = "condition",
    every: float = 0.01,
) -> None:
    """Wait until ``condition()`` holds, checking every ``every`` seconds; fail the test
    after ``within`` seconds, naming ``what`` it waited for."""
    try:
        async with asyncio.timeout(within):
            while not condition():  # noqa: ASYNC110 - counters have no event to wait on
                await asyncio.sleep(every)
    except TimeoutError:
        pytest.fail(f"timed out waiting for {what}")
