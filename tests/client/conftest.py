"""Fixtures for the client tests: the embedded server, a registered cluster, a log watch.

Every test talks to a real ``RainbowServer`` over loopback (the ``rainbow_server`` and
``rainbow_client`` fixtures come from the ``rainbow_aio.testing`` plugin); fault tests
put a real ``TcpProxy`` (tests/support/proxy.py) between client and server.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator

import pytest
import trustme

from rainbow_aio import RainbowClient, RainbowServer, Registration, RetryPolicy

# Short backoff so fault tests recover quickly; the total budget stays generous so a slow
# CI machine cannot turn a recovery into a give-up.
WAIT = 10.0  # the longest a test waits for an event before it fails

FAST_RETRY = RetryPolicy(max_attempts=8, initial_backoff=0.02, max_backoff=0.2)


@pytest.fixture
async def alpha(rainbow_client: RainbowClient, rainbow_server: RainbowServer) -> Registration:
    """The cluster "alpha", registered on ``rainbow_server``."""
    return await rainbow_client.register("alpha", rainbow_server.secret)


class LogWatch(logging.Handler):
    """Collects records of the ``rainbow_aio`` loggers and lets a test wait for one."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self._changed = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self._changed.set()

    def retries(self) -> list[logging.LogRecord]:
        return [r for r in self.records if r.name == "rainbow_aio._retry"]

    async def wait_for_retries(self, count: int = 1) -> None:
        """Wait (at most WAIT seconds) until the client logged ``count`` retries."""
        async with asyncio.timeout(WAIT):
            while len(self.retries()) < count:
                self._changed.clear()
                await self._changed.wait()


@pytest.fixture
def log_watch() -> Iterator[LogWatch]:
    logger = logging.getLogger("rainbow_aio")
    watch = LogWatch()
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(watch)
    try:
        yield watch
    finally:
        logger.removeHandler(watch)
        logger.setLevel(old_level)


@pytest.fixture
async def fast_client(rainbow_server: RainbowServer) -> AsyncIterator[RainbowClient]:
    async with RainbowClient(rainbow_server.address, retry=FAST_RETRY) as client:
        yield client


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()
