"""Stopping a worker gracefully: the one mechanism that ``Poller.run``, ``PollerGroup.run``
and the cluster agent share.

A :class:`Shutdown` is a request to stop, in two steps:

1. ``request(reason)``: stop taking new work, finish what was already taken within the
   worker's shutdown time, give back what was not started, and return normally;
2. ``force(reason)``: stop waiting now; what was still running is cut short and reported.

:meth:`Shutdown.on_signals` turns the first SIGINT or SIGTERM into a request and the
second into ``force``, for as long as its ``with`` block runs, and then puts the previous
handlers back. Workers read a :class:`Shutdown`; they never change it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Iterator, Sequence
from typing import Final

__all__ = ["DEFAULT_SIGNALS", "Shutdown"]

log = logging.getLogger("rainbow_aio")

DEFAULT_SIGNALS: Final[tuple[signal.Signals, ...]] = (signal.SIGINT, signal.SIGTERM)
"""The signals that stop a worker: Ctrl-C, and what service managers and CI send."""


class Shutdown:
    """A request to stop gracefully, shared by everything that should stop together.

    ::

        stop = Shutdown()
        with stop.on_signals():           # first Ctrl-C / SIGTERM: stop gracefully
            await group.run(handle, stop=stop)
        print(stop.reason)                # "SIGINT", or None if run() ended by itself

    Made and read inside one event loop thread; ``request`` and ``force`` may be called
    from that thread at any time, as often as wanted (only the first of each counts).
    """

    __slots__ = ("_forced", "_forced_reason", "_reason", "_requested")

    def __init__(self) -> None:
        self._requested = asyncio.Event()
        self._forced = asyncio.Event()
        self._reason: str | None = None
        self._forced_reason: str | None = None

    @property
    def requested(self) -> bool:
        """Whether a stop was requested (forced stops included)."""
        return self._requested.is_set()

    @property
    def forced(self) -> bool:
        """Whether the stop was forced: stop waiting for running work."""
        return self._forced.is_set()

    @property
    def reason(self) -> str | None:
        """Why the stop was requested (a signal's name, or what ``request`` was given)."""
        return self._reason

    @property
    def forced_reason(self) -> str | None:
        """Why the stop was forced, once it was."""
        return self._forced_reason

    def request(self, reason: str = "stop requested") -> None:
        """Ask for a graceful stop (the first reason given is kept)."""
        if not self._requested.is_set():
            self._reason = reason
            self._requested.set()

    def force(self, reason: str = "stop forced") -> None:
        """Stop waiting for running work now (implies :meth:`request`)."""
        self.request(reason)
        if not self._forced.is_set():
            self._forced_reason = reason
            self._forced.set()

    async def wait(self) -> None:
        """Return once a stop was requested."""
        await self._requested.wait()

    async def wait_forced(self) -> None:
        """Return once the stop was forced."""
        await self._forced.wait()

    @contextlib.contextmanager
    def on_signals(self, signals: Sequence[signal.Signals] = DEFAULT_SIGNALS) -> Iterator[Shutdown]:
        """While the block runs, the first of ``signals`` requests a graceful stop and the
        next one forces it; the handlers in place before are restored afterwards.

        Needs a running event loop in the main thread (where Python delivers signals);
        anywhere else it raises ``RuntimeError`` rather than silently not listening.
        """
        loop = asyncio.get_running_loop()
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("Shutdown.on_signals() needs the main thread, where signals arrive")
        previous = {sig: signal.getsignal(sig) for sig in signals}
        installed: list[signal.Signals] = []
        try:
            for sig in signals:
                loop.add_signal_handler(sig, self._on_signal, sig)
                installed.append(sig)
            yield self
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)
                old = previous[sig]
                if old is not None:
                    with contextlib.suppress(ValueError, OSError, TypeError):
                        signal.signal(sig, old)

    def _on_signal(self, sig: signal.Signals) -> None:
        name = signal.Signals(sig).name
        if self.requested:
            log.warning("%s again: stopping now, without waiting for running work", name)
            self.force(name)
        else:
            log.warning(
                "%s: stopping gracefully (no new work; running work may finish); "
                "send it again to stop at once",
                name,
            )
            self.request(name)

    def __repr__(self) -> str:
        state = "forced" if self.forced else "requested" if self.requested else "running"
        return f"Shutdown({state}, reason={self._reason!r})"
