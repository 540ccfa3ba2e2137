"""A TCP proxy on loopback for fault tests, driven by hand.

    async with TcpProxy("127.0.0.1", server.port) as proxy:
        client = RainbowClient(proxy.address)
        ...
        proxy.drop_all()                 # abort every live connection (RST both sides)
        await proxy.refuse()             # close the listener: connects are refused
        await proxy.accept()             # listen again, on the same port
        proxy.reset_new = True           # accept new connections and reset them at once
        proxy.stall("both")              # stop forwarding ("up", "down" or "both")
        await proxy.wait_held("up")      # ...until client bytes are held by the stall
        await proxy.wait_answers_held()  # ...until a whole gRPC answer is held
        proxy.resume()
        proxy.stall("down", for_seconds=2.0)  # a stall that ends by itself
        proxy.latency = 0.5              # a slow link, for connections made from now on
        proxy.target = "127.0.0.1:4321"  # new connections go to another server

Directions: ``"up"`` is client -> server, ``"down"`` is server -> client. A stalled
direction keeps reading and holds what it read (counted in ``held``) until ``resume()``,
so a test can tell that a request was sent (``"up"`` held) or that the server's answer
is being kept from the client. Bytes alone do not prove an answer (the server also sends
pings, acks and window updates), so the proxy reads the HTTP/2 frame headers coming
down a plaintext connection and counts the calls the server finished (a HEADERS frame
with END_STREAM): ``answers_held`` / :meth:`TcpProxy.wait_answers_held`. Dropping a
connection discards what it held.

A connection that ends by itself is passed on the way it ended: when one side closes,
the other is closed after what was already read has been delivered; when one side is
reset, the other is reset too.

Only loopback addresses are allowed: fault tests never leave the machine. The chaos
proxy (``support.chaos``) is this proxy with a seeded fault driver on top.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import struct
from collections.abc import Callable
from typing import Literal

__all__ = ["Direction", "TcpProxy"]

Direction = Literal["up", "down", "both"]

_CHUNK = 64 * 1024


def _check_loopback(host: str) -> None:
    """Refuse anything but a loopback address: fault tests never leave the machine."""
    host = host.strip("[]")
    if host != "localhost" and not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"fault tests only use loopback addresses, not {host!r}")


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close a connection with a reset (RST), like a crashed peer or a cut link."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class _Connection:
    """One client connection, its upstream twin and a switch that stalls it both ways."""

    def __init__(self, number: int, client: asyncio.StreamWriter) -> None:
        self.number = number
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None
        self.pumps: list[asyncio.Task[bool]] = []
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.closed = False

    def abort(self) -> None:
        """Reset both sides and discard whatever is held."""
        self.closed = True
        _abort(self.client)
        if self.upstream is not None:
            _abort(self.upstream)
        for pump in self.pumps:
            pump.cancel()

    def close(self) -> None:
        """Close both sides cleanly, once what they were sent has gone out."""
        self.closed = True
        self.client.close()
        if self.upstream is not None:
            self.upstream.close()


class TcpProxy:
    """Forward TCP from ``address`` (127.0.0.1 or ::1, free port) to the target."""

    def __init__(self, target_host: str, target_port: int, *, listen_host: str = "127.0.0.1"):
        _check_loopback(listen_host)
        self._retarget(target_host, target_port)
        self.listen_host = listen_host
        self.port = 0
        self.reset_new = False
        """When True, new connections are accepted and reset at once."""
        self.latency = 0.0
        """Seconds each chunk from the server is held back (connections made from now on)."""
        self.accepted = 0
        """Connections accepted (including reset ones); each one's number."""
        self.reset_at_accept = 0
        """Connections reset as soon as they were accepted."""
        self.dropped = 0
        """Live connections aborted as a fault (by drop_all or one by one)."""
        self.upstream_failures = 0
        """Connections reset because the target could not be reached (the server is down)."""
        self.held = {"up": 0, "down": 0}
        """Bytes read and held back by a stall, per direction, since the last stall()."""
        self.answers_held = 0
        """gRPC calls the server finished while "down" was stalled, since the last stall()."""
        self._flowing = {"up": asyncio.Event(), "down": asyncio.Event()}
        for event in self._flowing.values():
            event.set()
        self._held_changed = asyncio.Condition()
        self._server: asyncio.Server | None = None
        self._connections: dict[int, _Connection] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._timers: list[asyncio.TimerHandle] = []

    @property
    def target(self) -> str:
        """The server's ``host:port``; changing it affects new connections only."""
        host = f"[{self.target_host}]" if ":" in self.target_host else self.target_host
        return f"{host}:{self.target_port}"

    @target.setter
    def target(self, address: str) -> None:
        host, _, port = address.rpartition(":")
        self._retarget(host, int(port))

    def _retarget(self, host: str, port: int) -> None:
        _check_loopback(host)
        self.target_host = host.strip("[]")
        self.target_port = port

    @property
    def address(self) -> str:
        """``host:port`` for a client to dial."""
        host = f"[{self.listen_host}]" if ":" in self.listen_host else self.listen_host
        return f"{host}:{self.port}"

    @property
    def live(self) -> int:
        """Connections currently forwarded (or being connected upstream)."""
        return len(self._connections)

    @property
    def listening(self) -> bool:
        return self._server is not None

    # -- lifecycle ----------------------------------------------------------------------

    async def __aenter__(self) -> TcpProxy:
        await self.accept()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def accept(self) -> None:
        """Listen (again): on a free port the first time, then on the same port."""
        if self._server is None:
            self._server = await asyncio.start_server(
                self._handle, self.listen_host, self.port, reuse_address=True
            )
            self.port = self._server.sockets[0].getsockname()[1]

    async def refuse(self) -> None:
        """Close the listening socket: new connections are refused by the kernel.

        Live connections are left alone; call :meth:`drop_all` to cut them too.
        """
        server, self._server = self._server, None
        if server is not None:
            server.close()

    async def close(self) -> None:
        """Stop listening, reset every connection, and wait for the forwarding tasks."""
        await self.refuse()
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        self.resume()
        for conn in list(self._connections.values()):
            conn.abort()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- faults -------------------------------------------------------------------------

    def drop_all(self) -> int:
        """Reset every live connection on both sides; returns how many there were."""
        connections = [conn for conn in self._connections.values() if not conn.closed]
        for conn in connections:
            self._drop(conn)
        return len(connections)

    def _drop(self, conn: _Connection) -> None:
        self.dropped += 1
        conn.abort()

    def stall(self, direction: Direction = "both", *, for_seconds: float | None = None) -> None:
        """Stop forwarding in ``direction`` on every connection, live and new.

        The stall lasts until :meth:`resume`, or ``for_seconds`` if given (whichever
        comes first).
        """
        sides = ("up", "down") if direction == "both" else (direction,)
        for side in sides:
            self.held[side] = 0
            self._flowing[side].clear()
            if for_seconds is not None:
                self._later(for_seconds, self._flowing[side].set)
        if direction != "up":
            self.answers_held = 0

    def resume(self) -> None:
        """Forward again in both directions, starting with whatever was held."""
        for event in self._flowing.values():
            event.set()

    async def wait_held(self, direction: Literal["up", "down"], at_least: int = 1) -> None:
        """Wait until a stall holds ``at_least`` bytes going ``direction``."""
        async with self._held_changed:
            await self._held_changed.wait_for(lambda: self.held[direction] >= at_least)

    async def wait_answers_held(self, at_least: int = 1) -> None:
        """Wait until a "down" stall holds ``at_least`` complete answers (plaintext only).

        The server has then finished those calls (acted on them), and the client has not
        seen the answers: dropping the connections now loses them.
        """
        async with self._held_changed:
            await self._held_changed.wait_for(lambda: self.answers_held >= at_least)

    def _later(self, seconds: float, callback: Callable[[], object]) -> None:
        """Run ``callback`` in ``seconds`` unless the proxy is closed first."""
        self._timers.append(asyncio.get_running_loop().call_later(seconds, callback))

    def _resets_new(self) -> bool:
        """Whether a connection accepted now is reset at once."""
        return self.reset_new

    # -- forwarding ---------------------------------------------------------------------

    def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # A plain callback, so the forwarding runs in a task of our own that close() may
        # cancel (asyncio reports a cancelled connection-handler task as an error).
        self.accepted += 1
        if self._resets_new():
            self.reset_at_accept += 1
            _abort(writer)
            return
        conn = _Connection(self.accepted, writer)
        self._connections[conn.number] = conn
        task = asyncio.create_task(self._forward(conn, reader))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _forward(self, conn: _Connection, reader: asyncio.StreamReader) -> None:
        clean = False
        try:
            try:
                up_reader, conn.upstream = await asyncio.open_connection(
                    self.target_host, self.target_port
                )
            except OSError:
                self.upstream_failures += 1  # the server is down: the client sees a reset
                return
            if conn.closed:  # dropped while connecting
                _abort(conn.upstream)
                return
            conn.pumps = [
                asyncio.create_task(self._pump(conn, reader, conn.upstream, "up", 0.0)),
                asyncio.create_task(self._pump(conn, up_reader, conn.client, "down", self.latency)),
            ]
            # when one direction ends the connection is over: end the other one the same way
            done, _ = await asyncio.wait(conn.pumps, return_when=asyncio.FIRST_COMPLETED)
            clean = all(
                not pump.cancelled() and pump.exception() is None and pump.result() for pump in done
            )
        finally:
            for pump in conn.pumps:
                pump.cancel()
            await asyncio.gather(*conn.pumps, return_exceptions=True)
            del self._connections[conn.number]
            if conn.closed:
                pass  # dropped (or the proxy closed): both sides were reset already
            elif clean:
                conn.close()
            else:
                conn.abort()

    async def _pump(
        self,
        conn: _Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        side: Literal["up", "down"],
        latency: float,
    ) -> bool:
        """Copy one direction; True if it ended cleanly (end of stream), False on a reset.

        Reading never stops, so a stall can see what it holds; each chunk goes out no
        sooner than ``latency`` after it arrived.
        """
        flowing = self._flowing[side]
        frames = _FrameCounter() if side == "down" else None
        chunks: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        clean = False

        async def read() -> None:
            nonlocal clean
            try:
                while data := await reader.read(_CHUNK):
                    answers = frames.feed(data) if frames is not None else 0
                    if not flowing.is_set():
                        async with self._held_changed:
                            self.held[side] += len(data)
                            self.answers_held += answers
                            self._held_changed.notify_all()
                    chunks.put_nowait((loop.time() + latency, data))
                clean = True
            except (ConnectionError, OSError):
                pass
            finally:
                chunks.put_nowait(None)

        reading = asyncio.create_task(read())
        try:
            while (item := await chunks.get()) is not None:
                due, data = item
                if latency:
                    await asyncio.sleep(due - loop.time())
                # a proxy-wide stall (this direction) or a stall of this connection
                while not (flowing.is_set() and conn.flowing.is_set()):
                    await flowing.wait()
                    await conn.flowing.wait()
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            return False
        finally:
            reading.cancel()
            await asyncio.gather(reading, return_exceptions=True)
        return clean


class _FrameCounter:
    """Splits a server-to-client HTTP/2 byte stream into frames and counts ended calls.

    A frame is a 9-byte header (24-bit length, type, flags, stream id) and its payload;
    a gRPC call ends with a HEADERS frame (type 1) carrying END_STREAM (flag 1).
    """

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> int:
        self._buffer += data
        ended = 0
        while len(self._buffer) >= 9:
            size = int.from_bytes(self._buffer[:3], "big")
            if len(self._buffer) < 9 + size:
                break
            frame_type, flags = self._buffer[3], self._buffer[4]
            if frame_type == 1 and flags & 1:
                ended += 1
            del self._buffer[: 9 + size]
        return ended
