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

Directions: ``"up"`` is client -> server, ``"down"`` is server -> client. A stalled
direction keeps reading and holds what it read (counted in ``held``) until ``resume()``,
so a test can tell that a request was sent (``"up"`` held) or that the server's answer
is being kept from the client. Bytes alone do not prove an answer (the server also sends
pings, acks and window updates), so the proxy reads the HTTP/2 frame headers coming
down a plaintext connection and counts the calls the server finished (a HEADERS frame
with END_STREAM): ``answers_held`` / :meth:`TcpProxy.wait_answers_held`. Dropping a
connection discards what it held.

Only loopback addresses are allowed: fault tests never leave the machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import struct
from typing import Literal

__all__ = ["Direction", "TcpProxy"]

Direction = Literal["up", "down", "both"]

_CHUNK = 64 * 1024


def _check_loopback(host: str) -> None:
    if host != "localhost" and not ipaddress.ip_address(host.strip("[]")).is_loopback:
        raise ValueError(f"TcpProxy only uses loopback addresses, not {host!r}")


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close a connection with a reset (RST), like a crashed peer or a cut link."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class _Connection:
    """One client connection and its upstream twin."""

    def __init__(self, client: asyncio.StreamWriter, upstream: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream = upstream

    def abort(self) -> None:
        _abort(self.client)
        _abort(self.upstream)


class TcpProxy:
    """Forward TCP from ``address`` (127.0.0.1 or ::1, free port) to the target."""

    def __init__(self, target_host: str, target_port: int, *, listen_host: str = "127.0.0.1"):
        _check_loopback(target_host)
        _check_loopback(listen_host)
        self.target_host = target_host.strip("[]")
        self.target_port = target_port
        self.listen_host = listen_host
        self.port = 0
        self.reset_new = False
        """When True, new connections are accepted and reset at once."""
        self.accepted = 0
        """Connections accepted (including reset ones)."""
        self.held = {"up": 0, "down": 0}
        """Bytes read and held back by a stall, per direction, since the last stall()."""
        self.answers_held = 0
        """gRPC calls the server finished while "down" was stalled, since the last stall()."""
        self._flowing = {"up": asyncio.Event(), "down": asyncio.Event()}
        for event in self._flowing.values():
            event.set()
        self._held_changed = asyncio.Condition()
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def address(self) -> str:
        """``host:port`` for a client to dial."""
        host = f"[{self.listen_host}]" if ":" in self.listen_host else self.listen_host
        return f"{host}:{self.port}"

    @property
    def live(self) -> int:
        """Connections currently forwarded."""
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
        self.resume()
        self.drop_all()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- faults -------------------------------------------------------------------------

    def drop_all(self) -> int:
        """Reset every live connection on both sides; returns how many there were."""
        connections = list(self._connections)
        for conn in connections:
            conn.abort()
        return len(connections)

    def stall(self, direction: Direction = "both") -> None:
        """Stop forwarding in ``direction`` on every connection, live and new."""
        for side in ("up", "down") if direction == "both" else (direction,):
            self.held[side] = 0
            self._flowing[side].clear()
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

    # -- forwarding ---------------------------------------------------------------------

    def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # A plain callback, so the forwarding runs in a task of our own that close() may
        # cancel (asyncio reports a cancelled connection-handler task as an error).
        self.accepted += 1
        if self.reset_new:
            _abort(writer)
            return
        task = asyncio.create_task(self._forward(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            _abort(writer)  # the server is down: the client sees a reset
            return
        conn = _Connection(writer, up_writer)
        self._connections.add(conn)
        pumps = [
            asyncio.create_task(self._pump(reader, up_writer, "up")),
            asyncio.create_task(self._pump(up_reader, writer, "down")),
        ]
        try:
            # when one direction ends the connection is over: cut the other one too
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            self._connections.discard(conn)
            conn.abort()

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, side: str
    ) -> None:
        """Copy one direction. Reading never stops, so a stall can see what it holds."""
        flowing = self._flowing[side]
        frames = _FrameCounter() if side == "down" else None
        chunks: asyncio.Queue[bytes | None] = asyncio.Queue()

        async def read() -> None:
            try:
                while data := await reader.read(_CHUNK):
                    answers = frames.feed(data) if frames is not None else 0
                    if not flowing.is_set():
                        async with self._held_changed:
                            self.held[side] += len(data)
                            self.answers_held += answers
                            self._held_changed.notify_all()
                    chunks.put_nowait(data)
            except (ConnectionError, OSError):
                pass
            finally:
                chunks.put_nowait(None)

        reading = asyncio.create_task(read())
        try:
            while (data := await chunks.get()) is not None:
                await flowing.wait()
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            return
        finally:
            reading.cancel()
            await asyncio.gather(reading, return_exceptions=True)


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
