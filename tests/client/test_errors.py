"""The one status-to-error mapping and the retry decision table.

The wire tests (test_calls.py, test_retries.py) reach most of these through the server;
the embedded server cannot be made to answer ``database is locked`` or the Go server's
odd statuses on demand, so the mapping and the decisions are also checked here, as the
pure functions they are.
"""

from __future__ import annotations

import grpc
import pytest

from rainbow_aio import (
    CallOutcome,
    DeadlineExceededError,
    DeniedError,
    InvalidArgumentError,
    MissingCredentialError,
    RainbowError,
    ServerBusyError,
    ServerError,
    TLSError,
    UnavailableError,
)
from rainbow_aio._exceptions import error_from_status
from rainbow_aio._retry import RETRY_TABLE, Fault, attempt_outcome, classify, should_retry

UNKNOWN = grpc.StatusCode.UNKNOWN
REFUSED = (
    "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: "
    "Failed to connect to remote host: Connection refused"
)
RESET = "Stream removed (recvmsg:Connection reset by peer (104))"
HANDSHAKE = (
    "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: Tls handshake "
    "failed (TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: CERTIFICATE_VERIFY_FAILED"
)


@pytest.mark.parametrize(
    ("code", "details", "expected"),
    [
        (UNKNOWN, "request denied", DeniedError),
        (UNKNOWN, "a cluster token is required", MissingCredentialError),
        (UNKNOWN, "a cluster secret is required", MissingCredentialError),
        (UNKNOWN, "one or more jobs must be accepted", InvalidArgumentError),
        (UNKNOWN, "a cluster name is required", InvalidArgumentError),
        (UNKNOWN, "database is locked", ServerBusyError),
        (UNKNOWN, 'near "x": syntax error', ServerError),
        (UNKNOWN, "", ServerError),
        (grpc.StatusCode.UNAVAILABLE, REFUSED, UnavailableError),
        (grpc.StatusCode.UNAVAILABLE, RESET, UnavailableError),
        (grpc.StatusCode.UNAVAILABLE, HANDSHAKE, TLSError),
        (grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded", DeadlineExceededError),
        (grpc.StatusCode.INVALID_ARGUMENT, "bad", InvalidArgumentError),
        (grpc.StatusCode.PERMISSION_DENIED, "no", DeniedError),
        (grpc.StatusCode.UNAUTHENTICATED, "no", DeniedError),
        (grpc.StatusCode.INTERNAL, "boom", ServerError),
        (grpc.StatusCode.UNIMPLEMENTED, "Method not found!", ServerError),
    ],
)
def test_error_from_status(
    code: grpc.StatusCode, details: str, expected: type[RainbowError]
) -> None:
    err = error_from_status(code, details, rpc="RequestJobs", cluster="alpha", host="h:1")
    assert type(err) is expected
    assert (err.rpc, err.cluster, err.code, err.details) == ("RequestJobs", "alpha", code, details)
    assert str(err).startswith("[RequestJobs cluster='alpha'] ")


@pytest.mark.parametrize("rpc", ["Register", "SubmitJob", "RequestJobs", "AcceptJobs", "Serial"])
@pytest.mark.parametrize(
    ("code", "details"),
    [
        (UNKNOWN, "request denied"),
        (grpc.StatusCode.PERMISSION_DENIED, "no"),
        (grpc.StatusCode.UNAUTHENTICATED, "no"),
    ],
)
def test_every_denial_says_what_may_be_wrong(rpc: str, code: grpc.StatusCode, details: str) -> None:
    err = error_from_status(code, details, rpc=rpc, cluster="alpha", attempts=2)
    assert isinstance(err, DeniedError)
    assert err.details == details  # the server's own string, unchanged
    # the possibilities follow the server's words (after "gave up", if it did)
    head, causes = str(err).split(" — ", 1)
    assert head.endswith(details if code != UNKNOWN else f"{details} (gave up after 2 attempts)")
    assert ("registration secret" in causes) == (rpc in ("Register", "Serial"))
    assert ("token" in causes) == (rpc != "Register")
    assert ("not registered on this server" in causes) == (rpc != "Register")


def test_unavailable_names_host_and_attempts() -> None:
    err = error_from_status(
        grpc.StatusCode.UNAVAILABLE, REFUSED, rpc="Serial", host="rainbow:50051", attempts=4
    )
    assert "rainbow:50051 after 4 attempts" in str(err)
    assert err.attempts == 4
    once = error_from_status(grpc.StatusCode.UNAVAILABLE, RESET, rpc="Serial", attempts=1)
    assert "after 1 attempt:" in str(once)


def test_busy_after_retries_says_it_gave_up() -> None:
    err = error_from_status(UNKNOWN, "database is locked", rpc="SubmitJob", attempts=3)
    assert "gave up after 3 attempts" in str(err)
    assert err.retryable


def busy(rpc: str) -> RainbowError:
    return error_from_status(UNKNOWN, "database is locked", rpc=rpc)


def lost(rpc: str) -> RainbowError:
    return error_from_status(grpc.StatusCode.UNAVAILABLE, RESET, rpc=rpc)


def refused(rpc: str) -> RainbowError:
    return error_from_status(grpc.StatusCode.UNAVAILABLE, REFUSED, rpc=rpc)


def deadline(rpc: str) -> RainbowError:
    return error_from_status(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded", rpc=rpc)


def test_classify() -> None:
    assert classify(refused("X")) is Fault.NOT_CONNECTED
    assert classify(lost("X")) is Fault.CONNECTION_LOST
    assert classify(deadline("X")) is Fault.DEADLINE
    assert classify(busy("X")) is Fault.BUSY
    tls = error_from_status(grpc.StatusCode.UNAVAILABLE, HANDSHAKE, rpc="X")
    assert classify(tls) is None
    assert classify(error_from_status(UNKNOWN, "request denied", rpc="X")) is None
    assert classify(ValueError("not ours")) is None


def test_each_attempt_knows_whether_the_server_may_have_acted() -> None:
    not_applied, unknown = CallOutcome.NOT_APPLIED, CallOutcome.UNKNOWN
    tls = error_from_status(grpc.StatusCode.UNAVAILABLE, HANDSHAKE, rpc="X")
    expected = {
        "refused (never sent)": (refused("X"), not_applied),
        "connection lost": (lost("X"), unknown),
        "deadline": (deadline("X"), unknown),
        "database is locked": (busy("X"), not_applied),
        "denied": (error_from_status(UNKNOWN, "request denied", rpc="X"), not_applied),
        "secret required": (
            error_from_status(UNKNOWN, "a cluster secret is required", rpc="X"),
            not_applied,
        ),
        "TLS handshake": (tls, not_applied),
        "unknown server error": (error_from_status(UNKNOWN, "?", rpc="X"), unknown),
        "not a rainbow error": (ValueError("a bug"), unknown),
    }
    got = {case: attempt_outcome(error) for case, (error, _) in expected.items()}
    assert got == {case: outcome for case, (_, outcome) in expected.items()}


# (rpc, submit_retry) -> retried after: not connected, connection lost, deadline, busy
EXPECTED = {
    ("Register", "safe"): (True, False, False, True),
    ("SubmitJob", "safe"): (True, False, False, True),
    ("SubmitJob", "at_least_once"): (True, True, True, True),
    ("RequestJobs", "safe"): (True, True, True, True),
    ("AcceptJobs", "safe"): (True, True, False, True),
    ("Serial", "safe"): (True, True, True, True),
    ("Stream", "safe"): (False, False, False, False),
}


@pytest.mark.parametrize(("rpc", "mode"), sorted(EXPECTED))
def test_retry_table(rpc: str, mode: str) -> None:
    got = tuple(
        should_retry(rpc, make(rpc), submit_retry=mode)  # type: ignore[arg-type]
        for make in (refused, lost, deadline, busy)
    )
    assert got == EXPECTED[rpc, mode]


@pytest.mark.parametrize("rpc", sorted(RETRY_TABLE))
@pytest.mark.parametrize(
    "details",
    ["request denied", "a cluster token is required", "a cluster secret is required", "?"],
)
def test_other_unknown_details_are_never_retried(rpc: str, details: str) -> None:
    err = error_from_status(UNKNOWN, details, rpc=rpc)
    assert not should_retry(rpc.split("/")[0], err, submit_retry="at_least_once")


def test_tls_failures_are_never_retried_nor_caught_as_unavailable() -> None:
    err = error_from_status(grpc.StatusCode.UNAVAILABLE, HANDSHAKE, rpc="RequestJobs")
    assert isinstance(err, TLSError)
    assert not isinstance(err, UnavailableError)
    assert not err.retryable
    assert not should_retry("RequestJobs", err)
