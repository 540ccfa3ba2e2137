"""pytest fixtures for testing code against a real embedded rainbow server.

They are registered automatically (entry point ``pytest11: rainbow_aio``) and need
pytest-asyncio (without it, using them fails the test with a message saying so):

``rainbow_server``
    A started :class:`~rainbow_aio.server.RainbowServer` on ``127.0.0.1`` with a free
    port and an in-memory database, fresh for each test. Its registration secret is
    the Go server's default, ``server.secret == "chocolate-cookies"`` (safe: it only
    listens on loopback). Stopped (calls in flight cancelled) after the test.
``rainbow_client``
    A connected :class:`~rainbow_aio.RainbowClient` to ``rainbow_server``; closed
    after the test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import pytest

from ..server import RainbowServer

if TYPE_CHECKING:
    from .._client import RainbowClient  # type: ignore[import-not-found,unused-ignore]

__all__ = ["rainbow_client", "rainbow_server"]

try:
    import pytest_asyncio as _pytest_asyncio
except ImportError:  # pragma: no cover - only without pytest-asyncio
    _pytest_asyncio = None  # type: ignore[assignment]


def _async_fixture(fn: Callable[..., AsyncIterator[Any]]) -> Any:
    if _pytest_asyncio is not None:
        return _pytest_asyncio.fixture(fn)

    @pytest.fixture(name=fn.__name__)  # pragma: no cover
    def missing() -> None:
        pytest.fail(f"the {fn.__name__} fixture needs pytest-asyncio (pip install pytest-asyncio)")

    return missing  # pragma: no cover


@_async_fixture
async def rainbow_server() -> AsyncIterator[RainbowServer]:
    """A running in-process rainbow server (memory database, loopback, free port)."""
    server = RainbowServer("127.0.0.1:0", db=":memory:")
    await server.start()
    try:
        yield server
    finally:
        await server.stop(grace=None)


@_async_fixture
async def rainbow_client(rainbow_server: RainbowServer) -> AsyncIterator[RainbowClient]:
    """A ``RainbowClient`` connected to ``rainbow_server``."""
    from .._client import RainbowClient

    client = RainbowClient(rainbow_server.address)
    await client.connect()
    try:
        yield client
    finally:
        await client.close()
