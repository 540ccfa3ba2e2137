"""The errors rainbow-aio raises.

Every error derives from :class:`RainbowError` and carries what a caller needs to act on
it: the RPC, the cluster (where there is one), the gRPC status code, the details string,
and ``outcome`` (a :class:`~rainbow_aio.CallOutcome`): whether the call certainly did not
act on the server, may have acted, or acted. ``retryable`` says whether repeating the same
call can succeed; the client's retry policy (``_retry.py``) reads it, and so can an
application.

    RainbowError
    ├── InvalidArgumentError      bad input, refused before any RPC (also a ValueError)
    ├── ClientClosedError         the client was closed, or never connected
    ├── ClusterExistsError        register(): the name is taken; credentials are not shown again
    ├── ProtocolError             the server answered something the contract does not allow
    ├── AcceptUncertainError      poller: nobody can tell whether accept() took the job [*]
    ├── PollerStoppedError        poller: stopped, nothing more to hand out or accept [*]
    └── RPCError                  the server (or the transport) answered with an error status
        ├── DeniedError           wrong token or secret, unknown cluster, wrong registration secret
        ├── MissingCredentialError  an empty token or secret reached the server
        ├── ServerBusyError       "database is locked" (retryable)
        ├── UnavailableError      no connection to the server, after retries (retryable)
        ├── TLSError              the TLS handshake failed (plaintext against TLS, wrong CA...)
        ├── DeadlineExceededError the call's deadline passed (also a TimeoutError)
        └── ServerError           any other error status or details string

[*] defined with the poller, in ``rainbow_aio/poller/_errors.py``.

Secrets and tokens never appear in these messages: the client never puts them there,
and the server never sends them in details.
"""

from __future__ import annotations

from typing import Final

import grpc

from . import _protocol as P
from ._outcome import CallOutcome

__all__ = [
    "ClientClosedError",
    "ClusterExistsError",
    "DeadlineExceededError",
    "DeniedError",
    "InvalidArgumentError",
    "MissingCredentialError",
    "ProtocolError",
    "RPCError",
    "RainbowError",
    "ServerBusyError",
    "ServerError",
    "TLSError",
    "UnavailableError",
    "error_from_status",
    "never_sent",
]


class RainbowError(Exception):
    """Root of every rainbow-aio error.

    ``outcome`` says whether the call that failed acted on the server. Each class has a
    default that holds when nothing else is known (for example :class:`DeniedError`:
    not applied); the client sets it from what happened to every attempt, so an error
    raised after a retry whose first answer was lost says ``UNKNOWN`` whatever its class.
    """

    retryable: bool = False
    default_outcome: CallOutcome = CallOutcome.NOT_APPLIED

    def __init__(
        self,
        message: str,
        *,
        rpc: str | None = None,
        cluster: str | None = None,
        code: grpc.StatusCode | None = None,
        details: str | None = None,
        attempts: int | None = None,
        outcome: CallOutcome | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.rpc = rpc
        self.cluster = cluster
        self.code = code
        self.details = details
        #: how many times the client sent the call before giving up (None: not a call)
        self.attempts = attempts
        #: whether the call acted on the server (see :class:`~rainbow_aio.CallOutcome`)
        self.outcome: CallOutcome = self.default_outcome if outcome is None else outcome

    def __str__(self) -> str:
        where = []
        if self.rpc:
            where.append(self.rpc)
        if self.cluster is not None:
            where.append(f"cluster={self.cluster!r}")
        prefix = f"[{' '.join(where)}] " if where else ""
        return f"{prefix}{self.message}"

    def __repr__(self) -> str:
        code = self.code.name if self.code is not None else None
        return (
            f"{type(self).__name__}({self.message!r}, rpc={self.rpc!r}, "
            f"cluster={self.cluster!r}, code={code}, details={self.details!r}, "
            f"outcome={self.outcome.name})"
        )


class InvalidArgumentError(RainbowError, ValueError):
    """An argument cannot be sent: empty name, empty command, no job ids, int32 overflow."""


class ClientClosedError(RainbowError):
    """The client is closed (or was never connected).

    Raised before sending (``outcome`` NOT_APPLIED), or for a call that was on the wire
    when the client was closed (``outcome`` UNKNOWN: the server may have acted)."""


class ClusterExistsError(RainbowError):
    """The cluster is already registered. Its token and secret cannot be shown again."""


class ProtocolError(RainbowError):
    """The server's answer breaks the wire contract (bad job JSON, unknown status)."""

    default_outcome = CallOutcome.UNKNOWN


class RPCError(RainbowError):
    """The server or the transport answered the call with an error status."""


class DeniedError(RPCError):
    """Wrong token or secret, unknown cluster, or wrong registration secret.

    The server answers the same ``request denied`` (kept in ``details``) for all of
    them, so the message names the possibilities for the call that was denied and how
    to tell them apart."""


class MissingCredentialError(RPCError):
    """The server says a token or secret is required (an empty one was sent)."""


class ServerBusyError(RPCError):
    """The server's database was locked; nothing was written, so the call can be repeated."""

    retryable = True


class UnavailableError(RPCError):
    """The server could not be reached (refused, reset, not listening), after retries.

    ``outcome`` is NOT_APPLIED when no connection existed for the call (it never left the
    client) and UNKNOWN when a connection was lost with the call on it."""

    retryable = True
    default_outcome = CallOutcome.UNKNOWN


class TLSError(RPCError):
    """The TLS handshake failed: plaintext against TLS, an untrusted certificate, no client
    cert. A configuration problem, so never retried (and not an :class:`UnavailableError`)."""


class DeadlineExceededError(RPCError, TimeoutError):
    """The call did not finish within its deadline."""

    retryable = True
    default_outcome = CallOutcome.UNKNOWN


class ServerError(RPCError):
    """Any other error status or details string (the server may have acted)."""

    default_outcome = CallOutcome.UNKNOWN


_UNKNOWN_DETAILS: dict[str, type[RPCError]] = {
    P.DETAILS_DENIED: DeniedError,
    P.DETAILS_TOKEN_REQUIRED: MissingCredentialError,
    P.DETAILS_SECRET_REQUIRED: MissingCredentialError,
    P.DETAILS_DB_LOCKED: ServerBusyError,
}

_TLS_HINTS = ("ssl", "tls", "handshake", "certificate")

NO_SERVER_HINT: Final = (
    "is a rainbow server running there? start one with: rainbow-aio serve "
    "(see docs/getting-started.md)"
)
"""What to do when nothing answers at the host: shared by ``connect()``'s error and the
command line's."""

# What a denial can mean, by call: the server cannot tell a wrong credential from a
# cluster it does not know (it answers "request denied" to both), so the message names
# each possibility and how to tell them apart. Never the credential itself.
_TELL_WHICH = (
    "register() with this name tells which: ClusterExistsError means the cluster exists "
    "and the {credential} is wrong (otherwise it registers the cluster, with new credentials)"
)
_WRONG_SECRET = (
    "the secret is wrong (use the cluster's secret from register(), not its token), or the "
    "cluster is not registered on this server (another host, a misspelt name, or a server "
    "restarted with --cleanup or on a fresh database); " + _TELL_WHICH.format(credential="secret")
)
_DENIED_CAUSES: dict[str, str] = {
    "Register": (
        "the registration secret differs from the server's: use the one the server was "
        "started with (its --secret option; the Go server's -secret flag)"
    ),
    "SubmitJob": (
        "the token is wrong (use the token register() returned for this cluster, not its "
        "secret), or the cluster is not registered on this server (another host, a misspelt "
        "name); " + _TELL_WHICH.format(credential="token")
    ),
    "RequestJobs": _WRONG_SECRET,
    "AcceptJobs": _WRONG_SECRET,
}
_DENIED_ANY = (
    "a wrong token or secret, a cluster not registered on this server, or a registration "
    "secret that differs from the server's"
)


def _denied_causes(rpc: str) -> str:
    """What may be wrong when the server denies ``rpc``, and how to check each."""
    return _DENIED_CAUSES.get(rpc, _DENIED_ANY)


# Wordings that mean the call was never written to any connection: grpc core's when no
# connection could be made for it (pick_first found no ready address, or the name did not
# resolve), and the client's own when it gave up waiting for a connection. _retry.py
# relies on them for the RPCs that must not be repeated once the server may have acted.
_NOT_CONNECTED_MARKS = (
    "failed to connect to all addresses",
    "dns resolution failed",
    "no connection within",
)


def never_sent(details: str | None) -> bool:
    """Whether an UNAVAILABLE status with these details means the call never left the
    client (no connection existed for it)."""
    lowered = (details or "").lower()
    return any(mark in lowered for mark in _NOT_CONNECTED_MARKS)


def _attempts_text(attempts: int | None) -> str:
    if attempts is None:
        return ""
    return f" after {attempts} attempt{'s' if attempts != 1 else ''}"


def error_from_status(
    code: grpc.StatusCode,
    details: str | None,
    *,
    rpc: str,
    cluster: str | None = None,
    host: str | None = None,
    attempts: int | None = None,
    tls: bool | None = None,
    budget: float | None = None,
) -> RainbowError:
    """Map one gRPC status (code and details) to the rainbow-aio error that describes it.

    This is the only place where wire statuses become exceptions. ``attempts`` (how many
    times the call was sent), ``tls`` (whether the client uses TLS) and ``budget`` (the
    call's time budget, when that is what ran out) only shape the message, so that an
    :class:`UnavailableError` names the host, the attempts, and a hint when a server
    closed the connection before gRPC could start (or, for ``connect``, how to start a
    server), a :class:`DeniedError` names what may be wrong for its RPC and how to check
    each, and an error that ended the call because its whole budget was spent (a
    deadline, a server out of reach) says so. ``details`` stays the server's own string.
    """
    details = details or ""
    tried = _attempts_text(attempts)

    def make(cls: type[RainbowError], message: str) -> RainbowError:
        return cls(message, rpc=rpc, cluster=cluster, code=code, details=details, attempts=attempts)

    if code == grpc.StatusCode.UNKNOWN:
        if details in (P.DETAILS_NO_JOBS, P.DETAILS_CLUSTER_REQUIRED):
            return make(InvalidArgumentError, f"the server refused the call: {details}")
        cls = _UNKNOWN_DETAILS.get(details, ServerError)
        gave_up = f" (gave up{tried})" if attempts and attempts > 1 else ""
        causes = f" — {_denied_causes(rpc)}" if cls is DeniedError else ""
        return make(cls, f"the server answered: {details or 'unknown error'}{gave_up}{causes}")
    if code == grpc.StatusCode.UNAVAILABLE:
        where = f" at {host}" if host else ""
        lowered = details.lower()
        if any(h in lowered for h in _TLS_HINTS):
            return make(
                TLSError,
                f"TLS handshake with the server{where} failed ({details}); check that "
                "client and server agree on TLS and that the CA and certificates match",
            )
        hint = f"; {NO_SERVER_HINT}" if rpc == "connect" else ""
        unsent = never_sent(details)
        if _NOT_CONNECTED_MARKS[0] in lowered and "refused" not in lowered and tls is not None:
            # something accepted the connection and closed it before gRPC could start
            hint = (
                "; the server closed the connection during setup: if it requires a client "
                "certificate, give TLSConfig a certificate_chain and private_key"
                if tls
                else "; something accepted the connection but closed it before gRPC "
                "started: if the server uses TLS, pass tls=TLSConfig(...)"
            )
        spent = f"; the call's {budget:g} s budget ran out" if budget is not None else ""
        error = make(
            UnavailableError,
            f"cannot reach the rainbow server{where}{tried}: {details}{hint}{spent}",
        )
        error.outcome = CallOutcome.NOT_APPLIED if unsent else CallOutcome.UNKNOWN
        return error
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        if budget is not None:
            return make(
                DeadlineExceededError, f"the call's {budget:g} s budget ran out{tried}: {details}"
            )
        return make(DeadlineExceededError, f"deadline exceeded{tried}: {details}")
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return make(InvalidArgumentError, f"the server refused the call: {details}")
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        return make(DeniedError, f"the server denied the call: {details} — {_denied_causes(rpc)}")
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        if details.startswith(P.DETAILS_ANSWER_TOO_LARGE):
            # the server's own limit: a larger receive limit here would not help
            return make(
                ServerError,
                f"the server's answer would be too large ({details}); ask for fewer jobs "
                "at a time (max_jobs)",
            )
        return make(
            ServerError,
            f"a message was larger than allowed ({details}); ask for fewer jobs at a time "
            "(max_jobs), or raise RainbowClient(max_response_bytes=...)",
        )
    return make(ServerError, f"the server answered {code.name}: {details}")
