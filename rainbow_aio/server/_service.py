"""The RainbowScheduler servicer: the Go server's wire behaviour, without its defects.

Every refusal is gRPC status UNKNOWN with one of the details strings of
``rainbow_aio._protocol``, exactly as the Go server answers, so clients see the real wire
shapes. The checks run in the Go server's order (for example AcceptJobs checks for an
empty secret before an empty id list, and both before the credentials).

Past the server's bounds (``_limits.py``) a call is answered UNKNOWN ``database is
locked`` before any check, as the Go server answers under heavy load. Every call, of
every RPC, holds its place in those bounds until gRPC has sent its answer (a done
callback of the call), not merely until its handler returns.
RequestJobs answers are serialized by the store's thread (``_listing.py``), so its
handler returns bytes; ``_server.py`` passes them to gRPC as they are.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Final, NoReturn, TypeVar

import grpc

from .. import _protocol as P
from .._proto import rainbow_pb2 as pb
from ._limits import CallGate, Ticket
from ._store import AnswerTooLarge, ClusterCredentials, Store, StoreBusy, StoreError

__all__ = ["DETAILS_TOO_MANY_IDS", "Servicer", "digest"]

DETAILS_TOO_MANY_IDS: Final = "too many job ids"
"""How the INVALID_ARGUMENT answer to an AcceptJobs past ``max_accept_ids`` begins."""

_Context = grpc.aio.ServicerContext
_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")
_Handler = Callable[["Servicer", _Req, "_Context[object, object]"], Awaitable[_Resp]]


async def _fail(context: _Context[object, object], details: str) -> NoReturn:
    """End the call as the Go server ends every failed call: UNKNOWN with ``details``."""
    await context.abort(grpc.StatusCode.UNKNOWN, details)


_SMALL: Final = 4096
"""Answers up to this size are not counted (most are a few bytes)."""


def _admit(servicer: Servicer, context: _Context[object, object], size: int) -> Ticket | None:
    """A place in the gate for this call until gRPC is done with it (answer sent, or
    the call failed or was cancelled); None when past a bound."""
    gate = servicer.gate
    ticket = gate.enter(size)
    if ticket is not None:
        # (grpc-stubs declare the callback as a class of their own, not a callable type)
        context.add_done_callback(lambda _: gate.leave(ticket))  # type: ignore[arg-type]
    return ticket


def _gated_call(handler: _Handler[_Req, _Resp]) -> _Handler[_Req, _Resp]:
    """Count the call, admit it through the gate (the request's size counts) or answer
    ``database is locked``, and answer ``database is locked`` too when the store's
    write queue is full."""
    name = handler.__name__

    @functools.wraps(handler)
    async def wrapper(self: Servicer, request: _Req, context: _Context[object, object]) -> _Resp:
        self.counts[name] += 1
        # a request is held twice while it is served: gRPC's bytes and the parsed message
        size = 2 * request.ByteSize()  # type: ignore[attr-defined]
        ticket = _admit(self, context, size)
        if ticket is None:
            await _fail(context, P.DETAILS_DB_LOCKED)
        try:
            answer = await handler(self, request, context)
        except StoreBusy:
            self.gate.refuse("queued writes")
            await _fail(context, P.DETAILS_DB_LOCKED)
        # the answer holds its bytes until it has been sent (a listing's, or Serial's echo)
        answered = len(answer) if isinstance(answer, bytes) else answer.ByteSize()  # type: ignore[attr-defined]
        if answered > _SMALL and not self.gate.hold(ticket, answered):
            await _fail(context, P.DETAILS_DB_LOCKED)
        return answer

    return wrapper


def digest(value: str) -> bytes:
    """SHA-256 of a credential; only digests are stored and compared."""
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).digest()


class Servicer:
    """Implements the six RPCs on top of a :class:`Store`.

    Cluster credentials never change once registered, so their digests are kept in
    memory (loaded at start, added on registration) and authorisation costs no query.
    ``gate`` bounds the calls in flight and the bytes they hold; ``max_accept_ids`` the
    ids of one AcceptJobs.
    """

    def __init__(
        self,
        store: Store,
        secret: str,
        clusters: dict[str, ClusterCredentials],
        gate: CallGate,
        max_accept_ids: int,
    ) -> None:
        self._store = store
        self._max_accept_ids = max_accept_ids
        self._secret_hash = digest(secret)
        self._clusters = clusters
        self.gate = gate
        self.counts: Counter[str] = Counter()
        self.stream_counter = 0

    # -- helpers -----------------------------------------------------------------------

    def _authorised(self, cluster: str, value: str, *, token: bool) -> bool:
        creds = self._clusters.get(cluster)
        given = digest(value)
        if creds is None:
            # compare anyway so an unknown cluster costs the same as a wrong credential
            hmac.compare_digest(given, self._secret_hash)
            return False
        return hmac.compare_digest(given, creds.token_hash if token else creds.secret_hash)

    # -- RPCs --------------------------------------------------------------------------

    @_gated_call
    async def Register(
        self, request: pb.RegisterRequest, context: _Context[object, object]
    ) -> pb.RegisterResponse:
        if not hmac.compare_digest(digest(request.secret), self._secret_hash):
            await _fail(context, P.DETAILS_DENIED)
        name = request.name
        if not name:
            await _fail(context, P.DETAILS_CLUSTER_REQUIRED)
        if name in self._clusters:
            return pb.RegisterResponse(status=pb.RegisterResponse.REGISTER_EXISTS)
        token, secret = str(uuid.uuid4()), str(uuid.uuid4())
        creds = ClusterCredentials(digest(token), digest(secret))
        try:
            created = await self._store.register(name, creds)
        except StoreError as exc:
            await _fail(context, str(exc))
        if not created:
            return pb.RegisterResponse(status=pb.RegisterResponse.REGISTER_EXISTS)
        self._clusters[name] = creds
        return pb.RegisterResponse(
            token=token, secret=secret, status=pb.RegisterResponse.REGISTER_SUCCESS
        )

    @_gated_call
    async def SubmitJob(
        self, request: pb.SubmitJobRequest, context: _Context[object, object]
    ) -> pb.SubmitJobResponse:
        if not request.token:
            await _fail(context, P.DETAILS_TOKEN_REQUIRED)
        if not self._authorised(request.cluster, request.token, token=True):
            await _fail(context, P.DETAILS_DENIED)
        try:
            job_id = await self._store.submit(
                request.cluster, request.name, request.nodes, request.tasks, request.command
            )
        except StoreError as exc:
            await _fail(context, str(exc))
        return pb.SubmitJobResponse(jobid=job_id, status=pb.SubmitJobResponse.SUBMIT_SUCCESS)

    @_gated_call
    async def RequestJobs(
        self, request: pb.RequestJobsRequest, context: _Context[object, object]
    ) -> bytes:
        """The answer comes back serialized: NORESULTS (an empty message) or SUCCESS."""
        if not request.secret:
            await _fail(context, P.DETAILS_SECRET_REQUIRED)
        if not self._authorised(request.cluster, request.secret, token=False):
            await _fail(context, P.DETAILS_DENIED)
        try:
            answer = await self._store.list_jobs(request.cluster, request.maxJobs)
        except AnswerTooLarge as exc:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        except StoreError as exc:
            await _fail(context, str(exc))
        return answer

    @_gated_call
    async def AcceptJobs(
        self, request: pb.AcceptJobsRequest, context: _Context[object, object]
    ) -> pb.AcceptJobsResponse:
        if not request.secret:
            await _fail(context, P.DETAILS_SECRET_REQUIRED)
        ids = request.jobids
        if not ids:
            await _fail(context, P.DETAILS_NO_JOBS)
        if not self._authorised(request.cluster, request.secret, token=False):
            await _fail(context, P.DETAILS_DENIED)
        if len(ids) > self._max_accept_ids:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"{DETAILS_TOO_MANY_IDS}: {len(ids):,} job ids in one call, at most "
                f"{self._max_accept_ids:,}; accept them in several calls (nothing was deleted)",
            )
        try:
            deleted = await self._store.accept(request.cluster, ids)
        except StoreError as exc:
            await _fail(context, str(exc))
        status = (
            pb.AcceptJobsResponse.RESULT_TYPE_SUCCESS
            if deleted == len(ids)
            else pb.AcceptJobsResponse.RESULT_TYPE_PARTIAL
        )
        return pb.AcceptJobsResponse(status=status)

    @_gated_call
    async def Serial(self, request: pb.Request, context: _Context[object, object]) -> pb.Response:
        return pb.Response(
            request_id=request.content.id,
            message_count=self.stream_counter,
            messages_processed=self.stream_counter,
            processing_details=P.SERIAL_PROCESSED,
        )

    async def Stream(
        self, requests: AsyncIterator[pb.Request], context: _Context[object, object]
    ) -> AsyncIterator[pb.Response]:
        self.counts["Stream"] += 1
        if _admit(self, context, 0) is None:  # one place for the whole stream
            await _fail(context, P.DETAILS_DB_LOCKED)
        async for request in requests:
            self.stream_counter += 1
            yield pb.Response(
                request_id=request.content.id,
                message_count=self.stream_counter,
                messages_processed=self.stream_counter,
                processing_details=P.SERIAL_PROCESSED,
            )
        # The Go server treats the client's half-close as a receive error.
        await _fail(context, P.DETAILS_STREAM_EOF)
