"""Fault injection on loopback: a chaos TCP proxy and a server that never answers.

``ChaosProxy`` is a :class:`~support.proxy.TcpProxy` (same forwarding, same connection
handling) with a fault driver on top that, while its chaos is switched on, injects
three kinds of fault chosen by a seeded ``random.Random`` so a run can be repeated with
the same sequence of decisions:

* **drop**: abort one live connection (both sides), killing every RPC multiplexed on it;
* **stall**: stop forwarding bytes on one live connection for a while (nothing is lost,
  the bytes are delivered when the stall ends), so calls on it hit their deadlines;
* **refuse**: for a while, every new connection is accepted and reset at once, so the
  client cannot connect at all.

Every injected fault is counted in ``proxy.faults``. The same proxy with ``chaos=False``
and a ``latency`` is a plain slow link (every chunk from the server is held back), and
``refuse_for`` / ``stall_all`` / ``drop_all`` inject one fault on demand.

``BlackHoleServer`` accepts TCP connections, reads whatever arrives and never writes a
byte: a server that is up but never answers.

Timing decides which RPCs a fault hits, so a run is reproducible in its decisions (what
fault, on which connection, for how long, when), not byte for byte.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from dataclasses import asdict, dataclass

from support.proxy import _CHUNK, Direction, TcpProxy, _check_loopback

__all__ = ["BlackHoleServer", "ChaosProxy", "FaultCounts"]


@dataclass
class FaultCounts:
    """What a ``ChaosProxy`` did: faults injected and connections seen."""

    connections: int = 0
    """Connections accepted from clients (including refused ones)."""
    drops: int = 0
    """Live connections aborted by chaos (or ``drop_all``)."""
    stalls: int = 0
    """Stalls injected on live connections."""
    refusals: int = 0
    """Refusal windows opened."""
    refused_connections: int = 0
    """Connections reset at once because a refusal window was open."""
    upstream_failures: int = 0
    """Connections closed because the server itself could not be reached (not a fault
    the proxy injected: the server was down)."""

    @property
    def injected(self) -> int:
        """Faults injected by the proxy: drops, stalls and refused connections."""
        return self.drops + self.stalls + self.refused_connections

    def as_dict(self) -> dict[str, int]:
        return {**asdict(self), "injected": self.injected}


class ChaosProxy(TcpProxy):
    """A TCP proxy on loopback that drops, stalls and refuses connections at random.

    ``target`` is the server's ``host:port`` (it may be changed while running, e.g. after
    the server restarted on another port). With ``chaos=True`` a background task waits a
    random time drawn from ``interval`` and then injects one fault, chosen with the given
    weights; stalls last a time drawn from ``stall_time`` and refusal windows one from
    ``refuse_time``. ``latency`` delays every chunk sent from the server to the client.
    """

    def __init__(
        self,
        target: str,
        *,
        seed: int = 0,
        host: str = "127.0.0.1",
        chaos: bool = True,
        interval: tuple[float, float] = (0.2, 1.5),
        drop_weight: float = 1.0,
        stall_weight: float = 1.0,
        refuse_weight: float = 0.5,
        stall_time: tuple[float, float] = (0.05, 1.0),
        refuse_time: tuple[float, float] = (0.1, 1.0),
        latency: float = 0.0,
    ) -> None:
        host_part, _, port = target.rpartition(":")
        super().__init__(host_part, int(port), listen_host=host)
        self.rng = random.Random(seed)
        self.seed = seed
        self.interval = interval
        self.weights = {"drop": drop_weight, "stall": stall_weight, "refuse": refuse_weight}
        self.stall_time = stall_time
        self.refuse_time = refuse_time
        self.latency = latency
        self.history: list[tuple[str, int | None, float]] = []
        self._stalls = 0
        self._refusals = 0
        self._refusing_until = 0.0
        self._chaos = asyncio.Event()
        if chaos:
            self._chaos.set()
        self._driver: asyncio.Task[None] | None = None

    @property
    def faults(self) -> FaultCounts:
        """What the proxy did so far (a snapshot)."""
        return FaultCounts(
            connections=self.accepted,
            drops=self.dropped,
            stalls=self._stalls,
            refusals=self._refusals,
            refused_connections=self.reset_at_accept,
            upstream_failures=self.upstream_failures,
        )

    @property
    def live_connections(self) -> int:
        return self.live

    # -- lifecycle: the proxy's, plus the fault driver ---------------------------------

    async def accept(self) -> None:
        await super().accept()
        if self._driver is None:
            self._driver = asyncio.create_task(self._run_chaos(), name="chaos-proxy-faults")

    async def close(self) -> None:
        if self._driver is not None:
            self._driver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._driver
            self._driver = None
        await super().close()

    start = accept
    stop = close

    # -- switches and one-off faults ---------------------------------------------------

    @property
    def chaos(self) -> bool:
        return self._chaos.is_set()

    @chaos.setter
    def chaos(self, on: bool) -> None:
        if on:
            self._chaos.set()
        else:
            self._chaos.clear()

    def refuse_for(self, seconds: float) -> None:
        """Reset every new connection for ``seconds`` from now."""
        loop = asyncio.get_running_loop()
        self._refusing_until = max(self._refusing_until, loop.time() + seconds)
        self._refusals += 1

    def stop_refusing(self) -> None:
        self._refusing_until = 0.0

    def _resets_new(self) -> bool:
        return super()._resets_new() or asyncio.get_running_loop().time() < self._refusing_until

    def stall_all(self, seconds: float, *, direction: Direction = "both") -> None:
        """Stall every connection, live or new, for ``seconds`` (or until ``resume``).

        ``direction`` "up" holds only what the client sends, "down" only what the server
        answers: a request then reaches the server but its answer is late (a lost answer,
        from the client's point of view, once its deadline passes).
        """
        self._stalls += 1
        self.stall(direction, for_seconds=seconds)

    # -- the fault driver --------------------------------------------------------------

    def decide(self, links: list[int]) -> tuple[str, int | None, float]:
        """Draw the next fault: (kind, connection number or None, duration).

        Depends only on the seed, the decisions drawn before and the sorted numbers of
        the live connections, so the same seed replays the same decisions.
        """
        kinds = list(self.weights)
        (kind,) = self.rng.choices(kinds, [self.weights[k] for k in kinds])
        if kind == "refuse":
            return kind, None, self.rng.uniform(*self.refuse_time)
        if not links:
            return "none", None, 0.0
        target = self.rng.choice(sorted(links))
        duration = self.rng.uniform(*self.stall_time) if kind == "stall" else 0.0
        return kind, target, duration

    async def _run_chaos(self) -> None:
        while True:
            await self._chaos.wait()
            await asyncio.sleep(self.rng.uniform(*self.interval))
            if not self._chaos.is_set():
                continue
            live = [n for n, conn in self._connections.items() if not conn.closed]
            kind, number, duration = self.decide(live)
            self.history.append((kind, number, round(duration, 3)))
            if kind == "refuse":
                self.refuse_for(duration)
                continue
            conn = self._connections.get(number) if number is not None else None
            if conn is None:
                continue
            if kind == "drop":
                self._drop(conn)
            else:
                self._stalls += 1
                conn.flowing.clear()
                self._later(duration, conn.flowing.set)


class BlackHoleServer:
    """A TCP listener on loopback that accepts, reads and discards, and never answers."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        _check_loopback(host)
        self.host = host
        self.port = 0
        self.connections = 0
        self.bytes_received = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def __aenter__(self) -> BlackHoleServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # as in TcpProxy: a task of our own, which stop() may cancel
        self.connections += 1
        task = asyncio.create_task(self._swallow(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _swallow(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while data := await reader.read(_CHUNK):
                self.bytes_received += len(data)
        except (ConnectionError, OSError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()
