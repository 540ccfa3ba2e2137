"""Fault injection on loopback: a chaos TCP proxy and a server that never answers.

``ChaosProxy`` sits between a client and a server (both on 127.0.0.1 or ::1) and, while
its chaos is switched on, injects three kinds of fault chosen by a seeded
``random.Random`` so a run can be repeated with the same sequence of decisions:

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
import ipaddress
import random
import socket
import struct
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["BlackHoleServer", "ChaosProxy", "FaultCounts"]

_CHUNK = 64 * 1024


def _check_loopback(host: str) -> None:
    """Refuse anything but a loopback address: fault tests never leave the machine."""
    if host == "localhost":
        return
    if not ipaddress.ip_address(host.strip("[]")).is_loopback:
        raise ValueError(f"chaos tools only talk to loopback addresses, not {host!r}")


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close a connection abruptly (RST), as a crashed peer or a broken link would."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
    writer.close()


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


class _Link:
    """One client connection and its upstream twin, with a switch that stalls both ways."""

    def __init__(self, number: int, client: asyncio.StreamWriter) -> None:
        self.number = number
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.closed = False

    def abort(self) -> None:
        self.closed = True
        self.flowing.set()
        _reset(self.client)
        if self.upstream is not None:
            _reset(self.upstream)

    async def stall(self, seconds: float) -> None:
        self.flowing.clear()
        try:
            await asyncio.sleep(seconds)
        finally:
            self.flowing.set()


class ChaosProxy:
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
        _check_loopback(host)
        self.target = target
        self.host = host
        self.rng = random.Random(seed)
        self.seed = seed
        self.interval = interval
        self.weights = {"drop": drop_weight, "stall": stall_weight, "refuse": refuse_weight}
        self.stall_time = stall_time
        self.refuse_time = refuse_time
        self.latency = latency
        self.faults = FaultCounts()
        self.history: list[tuple[str, int | None, float]] = []
        self._chaos = asyncio.Event()
        if chaos:
            self._chaos.set()
        self._refusing_until = 0.0
        # cleared while every connection is stalled: client->server, server->client
        self._up = asyncio.Event()
        self._down = asyncio.Event()
        self._up.set()
        self._down.set()
        self._timers: list[asyncio.TimerHandle] = []
        self._links: dict[int, _Link] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._server: asyncio.Server | None = None
        self._chaos_task: asyncio.Task[None] | None = None
        self.port = 0

    # -- addresses ---------------------------------------------------------------------

    @property
    def target(self) -> str:
        return f"{self._target[0]}:{self._target[1]}"

    @target.setter
    def target(self, address: str) -> None:
        host, port = _split(address)
        _check_loopback(host)
        self._target = (host, port)

    @property
    def address(self) -> str:
        """``host:port`` for the client to dial."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        self._chaos_task = asyncio.create_task(self._run_chaos(), name="chaos-proxy-faults")

    async def stop(self) -> None:
        if self._chaos_task is not None:
            self._chaos_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._chaos_task
            self._chaos_task = None
        if self._server is not None:
            self._server.close()
            self._server = None
        for timer in self._timers:
            timer.cancel()
        self.resume()
        for link in list(self._links.values()):
            link.abort()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def __aenter__(self) -> ChaosProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

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
        self.faults.refusals += 1

    def stop_refusing(self) -> None:
        self._refusing_until = 0.0

    def drop_all(self) -> int:
        """Abort every live connection now; returns how many were dropped."""
        links = list(self._links.values())
        for link in links:
            link.abort()
        self.faults.drops += len(links)
        return len(links)

    def stall_all(self, seconds: float, *, direction: str = "both") -> None:
        """Stall every connection, live or new, for ``seconds`` (or until ``resume``).

        ``direction`` "up" holds only what the client sends, "down" only what the server
        answers: a request then reaches the server but its answer is late (a lost answer,
        from the client's point of view, once its deadline passes).
        """
        events = {"up": [self._up], "down": [self._down], "both": [self._up, self._down]}
        self.faults.stalls += 1
        loop = asyncio.get_running_loop()
        for event in events[direction]:
            event.clear()
            self._timers.append(loop.call_later(seconds, event.set))

    def resume(self) -> None:
        """End every ``stall_all`` now; the held bytes are delivered."""
        self._up.set()
        self._down.set()

    @property
    def live_connections(self) -> int:
        return len(self._links)

    # -- internals ---------------------------------------------------------------------

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

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
            kind, number, duration = self.decide(list(self._links))
            self.history.append((kind, number, round(duration, 3)))
            if kind == "refuse":
                self.refuse_for(duration)
                continue
            link = self._links.get(number) if number is not None else None
            if link is None:
                continue
            if kind == "drop":
                self.faults.drops += 1
                link.abort()
            else:
                self.faults.stalls += 1
                self._spawn(link.stall(duration))

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._serve(reader, writer)
        except asyncio.CancelledError:
            pass  # stop() cancels connections; asyncio's stream callback must not see it
        finally:
            self._tasks.discard(task)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.faults.connections += 1
        number = self.faults.connections
        if asyncio.get_running_loop().time() < self._refusing_until:
            self.faults.refused_connections += 1
            _reset(writer)
            return
        link = _Link(number, writer)
        self._links[number] = link
        try:
            try:
                up_reader, up_writer = await asyncio.open_connection(*self._target)
            except OSError:
                self.faults.upstream_failures += 1
                _reset(writer)
                return
            link.upstream = up_writer
            if link.closed:
                _reset(up_writer)
                return
            pumps = [
                asyncio.create_task(self._pump(self._up, link, reader, up_writer, 0.0)),
                asyncio.create_task(self._pump(self._down, link, up_reader, writer, self.latency)),
            ]
            try:
                # when either direction ends, the connection is over
                await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for pump in pumps:
                    pump.cancel()
                await asyncio.gather(*pumps, return_exceptions=True)
        finally:
            self._links.pop(number, None)
            link.closed = True
            writer.close()
            if link.upstream is not None:
                link.upstream.close()

    @staticmethod
    async def _pump(
        flowing: asyncio.Event,
        link: _Link,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        latency: float,
    ) -> None:
        try:
            while not link.closed:
                data = await reader.read(_CHUNK)
                if not data:
                    return
                if latency:
                    await asyncio.sleep(latency)
                await link.flowing.wait()
                await flowing.wait()
                if link.closed:
                    return
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            return


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
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._swallow, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def __aenter__(self) -> BlackHoleServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _swallow(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        self.connections += 1
        try:
            while data := await reader.read(_CHUNK):
                self.bytes_received += len(data)
        except (ConnectionError, OSError, asyncio.CancelledError):
            pass
        finally:
            self._writers.discard(writer)
            self._tasks.discard(task)
            writer.close()
