"""What this process knows about one cluster's queue, shared by all its pollers.

RequestJobs only lists, so every listing returns the jobs at the front again until they
are accepted. The view is what turns repeated listings into "each job handed out once":

- ``inflight``: ids handed out or queued in this process and not yet settled (accepted,
  lost, released). A listing never hands these out again.
- ``tombstones``: ids whose fate was settled (accepted here, or seen taken by someone
  else) while a listing was running. A listing that *started* before the settlement may
  still return such an id, because the server read its rows before the delete; a listing
  that started after cannot. Each tombstone therefore records the listing counter at the
  time it was made, and hides the id only from listings that started no later. Once no
  running listing started that early, the tombstone is dropped, so their number stays
  bounded by what is accepted while listings overlap.
- ``per_id``: set once another accepter is detected in batched mode; from then on every
  accept of this cluster goes out alone.

Views are kept per (client, cluster) in a weak registry and reference-counted by the
pollers that use them, so two pollers of one cluster in one process share one view.
"""

from __future__ import annotations

import weakref
from collections.abc import Collection, Container, Set
from typing import Any

from ._job import JobState, PolledJob

__all__ = ["ClusterView", "acquire_view", "release_view"]


class ClusterView:
    """Shared bookkeeping of one cluster in one process (see the module docstring)."""

    __slots__ = ("cluster", "inflight", "per_id", "refs", "running", "seq", "tombstones")

    def __init__(self, cluster: str) -> None:
        self.cluster = cluster
        self.refs = 0
        # listing counter: the start number of the latest listing
        self.seq = 0
        # start numbers of the listings still running (a few at most: one per poller)
        self.running: list[int] = []
        self.inflight: dict[int, weakref.ref[PolledJob]] = {}
        # id -> listing counter when settled; insertion order is counter order
        self.tombstones: dict[int, int] = {}
        self.per_id = False

    # listings

    def begin_listing(self) -> int:
        self.seq += 1
        self.running.append(self.seq)
        return self.seq

    def end_listing(self, start: int) -> None:
        self.running.remove(start)
        self._prune()

    def _prune(self) -> None:
        floor = min(self.running) if self.running else self.seq + 1
        stones = self.tombstones
        while stones:
            job_id = next(iter(stones))
            if stones[job_id] >= floor:
                break
            del stones[job_id]

    def hidden(self, start: int) -> Container[int]:
        """The ids a listing that started at ``start`` must not hand out: those in flight
        and those settled since it started. Asked right after the listing's answer
        arrives (the client skips their JSON)."""
        return _Hidden(self, start)

    def listed(self, start: int, ids: Collection[int], asked: int) -> None:
        """A listing that started at ``start`` returned ``ids``.

        When the listing was complete (fewer jobs than ``asked``, so it showed every job
        waiting), queued jobs that were known to wait before it started and that it no
        longer shows were taken by someone else: they are dropped from their queues.
        """
        if len(ids) < asked and self.inflight:
            self._drop_vanished(start, ids if isinstance(ids, Set) else set(ids))

    def _drop_vanished(self, start: int, seen: Set[int]) -> None:
        vanished: list[PolledJob] = []
        for job_id, ref in list(self.inflight.items()):
            if job_id in seen:
                continue
            pj = ref()
            if pj is None:
                del self.inflight[job_id]
            elif pj._state is JobState.QUEUED and pj._found < start:
                vanished.append(pj)
        for pj in vanished:
            pj._poller._vanished(pj)
        if vanished:
            vanished[0]._poller._other_accepter("jobs it had queued were accepted elsewhere")

    # in-flight ids

    def track(self, pj: PolledJob) -> None:
        self.inflight[pj.job.id] = weakref.ref(pj)

    def forget(self, pj: PolledJob) -> None:
        """Remove ``pj``'s id from the in-flight set (if the entry is still its own)."""
        ref = self.inflight.get(pj.job.id)
        if ref is not None:
            held = ref()
            if held is None or held is pj:
                del self.inflight[pj.job.id]

    def settle(self, pj: PolledJob) -> None:
        """``pj`` was deleted on the server (or may have been): hide it from listings that
        started before now, and stop tracking it."""
        self.forget(pj)
        if self.running:
            job_id = pj.job.id
            self.tombstones.pop(job_id, None)
            self.tombstones[job_id] = self.seq

    def mine(self, owner: object) -> list[PolledJob]:
        """The tracked jobs that belong to the poller ``owner``."""
        out: list[PolledJob] = []
        for ref in list(self.inflight.values()):
            pj = ref()
            if pj is not None and pj._poller is owner:
                out.append(pj)
        return out


class _Hidden:
    """``job_id in hidden``: whether a listing must skip the id (see ``hidden()``)."""

    __slots__ = ("start", "view")

    def __init__(self, view: ClusterView, start: int) -> None:
        self.view = view
        self.start = start

    def __contains__(self, job_id: object) -> bool:
        if not isinstance(job_id, int):
            return False
        view = self.view
        return job_id in view.inflight or view.tombstones.get(job_id, -1) >= self.start


_registry: weakref.WeakKeyDictionary[Any, dict[str, ClusterView]] = weakref.WeakKeyDictionary()


def acquire_view(client: object, cluster: str) -> ClusterView:
    """The view of ``cluster`` shared by every poller of ``client`` (created on first use)."""
    views = _registry.get(client)
    if views is None:
        views = _registry[client] = {}
    view = views.get(cluster)
    if view is None:
        view = views[cluster] = ClusterView(cluster)
    view.refs += 1
    return view


def release_view(client: object, view: ClusterView) -> None:
    """Drop one reference; the view is forgotten when its last poller is done."""
    view.refs -= 1
    if view.refs > 0:
        return
    views = _registry.get(client)
    if views is not None and views.get(view.cluster) is view:
        del views[view.cluster]
        if not views:
            del _registry[client]
