"""Who accepts jobs of a cluster in this process: the process-wide record that lets a
poller's inference of ownership stay truthful however many clients the process opens.

The batched accept mode infers ownership in one case: an AcceptJobs sent again after its
answer was lost comes back PARTIAL, so some of its jobs were already gone; if nothing but
the lost attempt can have taken them, they are ours. Whether anything else could have is
a fact about the whole process (another ``RainbowClient`` polling the same cluster, or a
direct ``client.accept_jobs()`` call), not about one client object, so it is kept here,
by cluster name, across every client of the process. Cluster names are compared without
regard to which server they live on, since one server can be reached by several
addresses: two servers with a cluster of the same name make the inference more careful
(uncertain rather than True), never less.

An *accepter* is any hashable identity: a poller's ledger enters once for its whole life;
a direct ``accept_jobs()`` call enters for the length of the call under an identity of
its own, unless it runs inside a ledger's send (:data:`current` names the ledger then).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Hashable
from typing import Final

__all__ = ["current", "enter", "epoch", "leave", "sole", "accepting"]

current: contextvars.ContextVar[Hashable | None] = contextvars.ContextVar(
    "rainbow_aio_accepter", default=None
)
"""The accepter on whose behalf the running task sends AcceptJobs (a poller's ledger sets
it in its send tasks); None for a direct call."""

# cluster -> {accepter: how many times it entered}
_members: dict[str, dict[Hashable, int]] = {}
# cluster -> how many distinct accepters have entered so far (only ever grows while the
# cluster has members; a send compares it before and after)
_epochs: dict[str, int] = {}


def enter(cluster: str, who: Hashable) -> None:
    """``who`` accepts jobs of ``cluster`` from now on (until as many :func:`leave`)."""
    members = _members.setdefault(cluster, {})
    count = members.get(who, 0)
    if count == 0:
        _epochs[cluster] = _epochs.get(cluster, 0) + 1
    members[who] = count + 1


def leave(cluster: str, who: Hashable) -> None:
    members = _members.get(cluster)
    if members is None or who not in members:
        return
    members[who] -= 1
    if members[who] <= 0:
        del members[who]
    if not members:
        del _members[cluster]
        del _epochs[cluster]


def epoch(cluster: str) -> int:
    """A number that changes whenever a new accepter of ``cluster`` enters."""
    return _epochs.get(cluster, 0)


def sole(cluster: str, who: Hashable, since: int) -> bool:
    """Whether ``who`` is the only accepter of ``cluster`` now and has been since
    :func:`epoch` returned ``since`` (nobody else entered in between, even briefly)."""
    members = _members.get(cluster)
    return members is not None and set(members) == {who} and _epochs.get(cluster) == since


def accepting(cluster: str) -> contextlib.AbstractContextManager[None]:
    """Around one AcceptJobs call: counts the call as an accepter of ``cluster`` unless it
    is sent on behalf of one already entered (:data:`current`; then nothing is made: a
    poller's ledger sends thousands of these a second)."""
    if current.get() is not None:
        return _ALREADY
    return _Accepting(cluster)


_ALREADY: Final = contextlib.nullcontext()


class _Accepting:
    """A direct call, counted as an accepter of its own while it runs."""

    __slots__ = ("cluster", "token")

    def __init__(self, cluster: str) -> None:
        self.cluster = cluster
        self.token = object()

    def __enter__(self) -> None:
        enter(self.cluster, self.token)

    def __exit__(self, *exc: object) -> None:
        leave(self.cluster, self.token)
