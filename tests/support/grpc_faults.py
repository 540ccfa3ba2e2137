"""A real gRPC server between a client and a rainbow server, with faults on demand.

The TCP proxy (``support.proxy``) cuts and stalls connections; some faults live one level
up, in gRPC itself, and the embedded server cannot produce them when a test needs them:
the Go server's ``database is locked``, a false ``request denied``, an answer lost after
the server acted. This injector is a grpc.aio server on loopback that forwards every
unary call, as bytes, to the real server over a real channel, unless a fault is armed
for that method::

    async with FaultInjector(server.address) as faults:
        client = RainbowClient(faults.address)
        faults.busy("AcceptJobs", times=3)      # answer UNKNOWN "database is locked" 3 times
        faults.busy("AcceptJobs")               # ... until cleared
        faults.deny("RequestJobs", times=2)     # a false "request denied"
        faults.lose_before("AcceptJobs")        # fail with UNAVAILABLE, not forwarded
        faults.lose_after("AcceptJobs")         # forward (the server acts), then UNAVAILABLE
        faults.hold("AcceptJobs")               # forward, keep the answer until release()
        faults.stall("AcceptJobs")              # keep the call from the server until release()
        faults.truncate("RequestJobs")          # a listing that misses rows (answers none)
        await faults.wait_held("AcceptJobs")    # ... until that many answers are held
        faults.release("AcceptJobs")            # deliver the held answers
        faults.clear("AcceptJobs")              # disarm everything for the method
        faults.calls["AcceptJobs"]              # calls that reached the injector
        faults.forwarded["AcceptJobs"]          # calls the real server received
        faults.metadata["AcceptJobs"]           # each call's invocation metadata

Faults are taken in the order armed, one per call; ``times=None`` keeps one armed until
it is cleared. The Stream method is forwarded too (without faults). Only loopback
addresses are used.
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

import grpc
import grpc.aio

from rainbow_aio import _protocol as P
from rainbow_aio._proto import rainbow_pb2 as pb

__all__ = ["FaultInjector"]

Kind = Literal["busy", "deny", "lose_before", "lose_after", "hold", "stall", "truncate"]

_LOST = "Connection reset by peer (fault injector)"


@dataclass
class _Fault:
    kind: Kind
    times: int | None  # None: until cleared


def _identity(data: bytes) -> bytes:
    return data


def _check_loopback(address: str) -> None:
    host = address.rsplit(":", 1)[0].strip("[]")
    if host != "localhost" and not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"fault tests only use loopback addresses, not {host!r}")


class FaultInjector(grpc.GenericRpcHandler):
    def __init__(self, target: str) -> None:
        _check_loopback(target)
        self._target = target
        self._faults: dict[str, collections.deque[_Fault]] = collections.defaultdict(
            collections.deque
        )
        self._release: dict[str, asyncio.Event] = collections.defaultdict(asyncio.Event)
        self._held: collections.Counter[str] = collections.Counter()
        self._changed = asyncio.Condition()
        self.calls: collections.Counter[str] = collections.Counter()
        self.forwarded: collections.Counter[str] = collections.Counter()
        self.metadata: dict[str, list[dict[str, str]]] = collections.defaultdict(list)
        self._server: grpc.aio.Server | None = None
        self._channel: grpc.aio.Channel | None = None
        self.port = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def __aenter__(self) -> FaultInjector:
        self._channel = grpc.aio.insecure_channel(self._target)
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((self,))
        self.port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        self._server = server
        return self

    async def __aexit__(self, *exc: object) -> None:
        for event in self._release.values():
            event.set()
        if self._server is not None:
            await self._server.stop(grace=None)
        if self._channel is not None:
            await self._channel.close(None)

    # arming faults

    def _arm(self, method: str, kind: Kind, times: int | None) -> None:
        self._faults[method].append(_Fault(kind, times))

    def busy(self, method: str, *, times: int | None = None) -> None:
        """Answer UNKNOWN ``database is locked`` without forwarding (nothing written)."""
        self._arm(method, "busy", times)

    def deny(self, method: str, *, times: int | None = None) -> None:
        """Answer UNKNOWN ``request denied`` without forwarding (the Go server's false
        denial under load)."""
        self._arm(method, "deny", times)

    def lose_before(self, method: str, *, times: int | None = None) -> None:
        """Fail the call with UNAVAILABLE as if its connection broke, without forwarding:
        the client cannot tell that the server never saw it."""
        self._arm(method, "lose_before", times)

    def lose_after(self, method: str, *, times: int | None = None) -> None:
        """Forward the call (the server acts), then fail it with UNAVAILABLE: a lost answer."""
        self._arm(method, "lose_after", times)

    def hold(self, method: str, *, times: int | None = None) -> None:
        """Forward the call (the server acts) and keep its answer until ``release()``."""
        self._release[method].clear()
        self._arm(method, "hold", times)

    def stall(self, method: str, *, times: int | None = None) -> None:
        """Keep the call from the server until ``release()``, then forward it: the server
        acts later than the client sent it (others may act first)."""
        self._release[method].clear()
        self._arm(method, "stall", times)

    def truncate(self, method: str = "RequestJobs", *, times: int | None = None) -> None:
        """Forward a RequestJobs and answer as if the server had listed no job (what the Go
        server does under load when reading rows fails: it sends what it read so far)."""
        self._arm(method, "truncate", times)

    def release(self, method: str) -> None:
        """Deliver the answers held and the calls stalled for ``method`` (and stop holding
        or stalling new ones)."""
        self._faults[method] = collections.deque(
            f for f in self._faults[method] if f.kind not in ("hold", "stall")
        )
        self._release[method].set()

    def clear(self, method: str) -> None:
        """Disarm every fault of ``method``; held answers are delivered."""
        self._faults[method].clear()
        self._release[method].set()

    @property
    def held(self) -> dict[str, int]:
        """Calls waiting for ``release()``, by method (held answers and stalled calls)."""
        return dict(self._held)

    async def wait_held(self, method: str, at_least: int = 1) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self._held[method] >= at_least)

    async def wait_calls(self, method: str, at_least: int) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self.calls[method] >= at_least)

    # the gRPC side

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Any:
        path = handler_call_details.method  # type: ignore[attr-defined]
        method = path.rsplit("/", 1)[-1]
        if method == "Stream":

            async def stream(
                requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
            ) -> AsyncIterator[bytes]:
                async for answer in self._stream(path, requests, context):
                    yield answer

            return grpc.stream_stream_rpc_method_handler(
                stream, request_deserializer=_identity, response_serializer=_identity
            )

        async def unary(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            return await self._unary(method, path, request, context)

        return grpc.unary_unary_rpc_method_handler(
            unary, request_deserializer=_identity, response_serializer=_identity
        )

    def _take(self, method: str) -> _Fault | None:
        queue = self._faults[method]
        if not queue:
            return None
        fault = queue[0]
        if fault.times is not None:
            fault.times -= 1
            if fault.times <= 0:
                queue.popleft()
        return fault

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _unary(
        self, method: str, path: str, request: bytes, context: grpc.aio.ServicerContext
    ) -> bytes:
        self.calls[method] += 1
        self.metadata[method].append(
            {
                key: value
                for key, value in context.invocation_metadata() or ()
                if isinstance(value, str)
            }
        )
        await self._notify()
        fault = self._take(method)
        kind = fault.kind if fault is not None else None
        if kind == "busy":
            await context.abort(grpc.StatusCode.UNKNOWN, P.DETAILS_DB_LOCKED)
        if kind == "deny":
            await context.abort(grpc.StatusCode.UNKNOWN, P.DETAILS_DENIED)
        if kind == "lose_before":
            await context.abort(grpc.StatusCode.UNAVAILABLE, _LOST)
        if kind == "stall":
            await self._wait_release(method)
        assert self._channel is not None
        remaining = context.time_remaining()
        try:
            answer: bytes = await self._channel.unary_unary(path)(
                request, timeout=remaining if remaining is not None else 30
            )
        except grpc.aio.AioRpcError as exc:
            await context.abort(exc.code(), exc.details() or "")
        self.forwarded[method] += 1
        if kind == "lose_after":
            await context.abort(grpc.StatusCode.UNAVAILABLE, _LOST)
        if kind == "hold":
            await self._wait_release(method)
        if kind == "truncate":
            return pb.RequestJobsResponse(
                status=pb.RequestJobsResponse.ResultType.REQUEST_JOBS_NORESULTS
            ).SerializeToString()
        return answer

    async def _wait_release(self, method: str) -> None:
        self._held[method] += 1
        await self._notify()
        try:
            await self._release[method].wait()
        finally:
            self._held[method] -= 1

    async def _stream(
        self, path: str, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        assert self._channel is not None
        call = self._channel.stream_stream(path)(requests)
        try:
            async for answer in call:
                yield answer
        except grpc.aio.AioRpcError as exc:
            await context.abort(exc.code(), exc.details() or "")
