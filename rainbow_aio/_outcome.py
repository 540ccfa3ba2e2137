"""Whether a call acted on the server: the one fact a caller needs after a failure.

Every error the client raises for a call, and every :class:`~rainbow_aio.AcceptResult`,
carries a :class:`CallOutcome`. The client knows it from how each attempt ended (see
``_retry.py``); callers never rebuild it from exception classes.
"""

from __future__ import annotations

import enum

__all__ = ["CallOutcome"]


class CallOutcome(enum.Enum):
    """What a call did on the server, as far as the client can know."""

    NOT_APPLIED = "not applied"
    """The server certainly did not act: the request was never sent, or the server refused
    it before acting (wrong credentials, bad arguments, ``database is locked``, a failed
    TLS handshake). Repeating the call cannot do anything twice."""
    UNKNOWN = "unknown"
    """The server may or may not have acted: an answer was lost (connection dropped,
    deadline passed, the client closed with the call on the wire) or the server answered
    an error the client cannot interpret."""
    APPLIED = "applied"
    """The server acted and answered."""

    @property
    def may_have_acted(self) -> bool:
        """True unless the server certainly did not act."""
        return self is not CallOutcome.NOT_APPLIED
