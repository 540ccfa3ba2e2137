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

Both run in the event loop of the test that uses them, whatever its loop scope
(``@pytest.mark.asyncio(loop_scope="module")``, ``asyncio_default_test_loop_scope``):
a gRPC channel or server belongs to the loop it was made in, so a fixture in another
loop than its test's would fail with "attached to a different loop". The hook
:func:`pytest_fixture_setup` sets their loop scope to the test's just before
pytest-asyncio sets them up.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import pytest

from ..server import RainbowServer

if TYPE_CHECKING:
    from .._client import RainbowClient  # type: ignore[import-not-found,unused-ignore]

__all__ = ["pytest_fixture_setup", "rainbow_client", "rainbow_server"]

_FIXTURES = frozenset({"rainbow_server", "rainbow_client"})
_SCOPES = ("function", "class", "module", "package", "session")

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


def _test_loop_scope(request: pytest.FixtureRequest) -> str:
    """The loop scope of the test being set up: its ``asyncio`` mark's (on the test, its
    class or module), else the configured default for tests, else ``function``."""
    marker = request.node.get_closest_marker("asyncio")
    if marker is not None:
        scope = marker.kwargs.get("loop_scope") or marker.kwargs.get("scope")
        if scope:
            return str(scope)
    try:
        default = request.config.getini("asyncio_default_test_loop_scope")
    except ValueError:  # a pytest-asyncio without that option
        default = None
    return str(default or "function")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_fixture_setup(fixturedef: Any, request: pytest.FixtureRequest) -> Any:
    """Give this plugin's fixtures the loop scope of the test that asks for them.

    pytest-asyncio reads a fixture's loop scope from the ``_loop_scope`` attribute that
    ``pytest_asyncio.fixture(loop_scope=...)`` sets on its function, at each set-up, in
    its own wrapper of this hook; this wrapper runs first and sets it.
    """
    if fixturedef.argname in _FIXTURES and _pytest_asyncio is not None:
        scope = _test_loop_scope(request)
        if scope not in _SCOPES:
            pytest.fail(f"{fixturedef.argname}: unknown loop scope {scope!r}", pytrace=False)
        fixturedef.func._loop_scope = scope
    return (yield)


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
