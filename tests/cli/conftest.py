from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from rainbow_aio.server import RainbowServer

SECRET = "cli-test-registration-secret"


@pytest.fixture
async def server() -> AsyncIterator[RainbowServer]:
    async with RainbowServer("127.0.0.1:0", secret=SECRET) as srv:
        yield srv
