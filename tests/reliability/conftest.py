"""Session-wide secret watch for the whole test run (not only this folder).

This conftest is loaded while pytest collects, before any test runs, so from then on:

* the root logger is at DEBUG and every record of every logger goes to ``WATCH``;
* every ``RainbowError`` created has its message and repr recorded;
* every credential issued is recorded: the results of ``RainbowClient.register`` and
  the answers of the in-process server's Register (both wrapped so they pass their
  values through untouched), and the registration secrets sent with them.

At the end of the session every recorded text is searched for every recorded
credential; a hit fails the run (exit status 1) and names the log source, never the
credential itself.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any

import pytest

from ._secretscan import WATCH

_PATCHED: list[tuple[Any, str, Any]] = []


def _patch(owner: Any, name: str, wrapper: Any) -> None:
    _PATCHED.append((owner, name, owner.__dict__[name]))
    setattr(owner, name, wrapper)


def _watch_errors() -> None:
    from rainbow_aio._exceptions import RainbowError

    original = RainbowError.__init__

    @functools.wraps(original)
    def __init__(self: RainbowError, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        # a subclass that is not fully built yet cannot be shown; its own tests cover it
        with contextlib.suppress(Exception):
            WATCH.add_text("exception", f"{self}\n{self!r}")

    _patch(RainbowError, "__init__", __init__)


def _watch_client_register() -> None:
    try:
        from rainbow_aio._client import RainbowClient
    except ImportError:  # the client is not there yet
        return
    original = RainbowClient.register

    @functools.wraps(original)
    async def register(self: Any, cluster: str, secret: str, *args: Any, **kw: Any) -> Any:
        WATCH.add(secret)
        result = await original(self, cluster, secret, *args, **kw)
        WATCH.add(getattr(result, "token", None), getattr(result, "secret", None))
        return result

    _patch(RainbowClient, "register", register)


def _watch_server_register() -> None:
    try:
        from rainbow_aio.server._service import Servicer
    except ImportError:
        return
    original = Servicer.Register

    @functools.wraps(original)
    async def Register(self: Any, request: Any, context: Any) -> Any:
        WATCH.add(request.secret)
        response = await original(self, request, context)
        WATCH.add(response.token, response.secret)
        return response

    _patch(Servicer, "Register", Register)


def pytest_configure(config: pytest.Config) -> None:
    WATCH.install()
    _watch_errors()
    _watch_client_register()
    _watch_server_register()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    leaks = WATCH.leaks()
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(
            f"secret watch: {len(WATCH.secrets)} credentials checked against "
            f"{WATCH.record_count} log records and {WATCH.text_count} distinct texts: "
            f"{len(leaks)} leaks"
        )
        for source, masked in leaks:
            reporter.write_line(f"  LEAK: credential {masked} appears in {source}", red=True)
    if leaks:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_unconfigure(config: pytest.Config) -> None:
    for owner, name, value in reversed(_PATCHED):
        setattr(owner, name, value)
    _PATCHED.clear()
    WATCH.uninstall()
