"""Polling: turn a cluster's RequestJobs listings into jobs handed out once, to accept.

- :class:`Poller` (``client.poller(cluster, secret, ...)``): one cluster, one bounded
  queue; its docstring states the delivery guarantees.
- :class:`PollerGroup` (``client.poll_many({cluster: secret}, ...)``): many clusters,
  one merged queue, clusters added and removed while running, and ``run(handler)``.
- :class:`PolledJob`: a handed-out job, with ``accept()`` and ``release()``.
- :class:`PollerStats`, :class:`AcceptMode`, :class:`PollerOptions`.
- :class:`AcceptUncertainError`, :class:`PollerStoppedError`.

Internals: ``_view`` (what is in flight, shared by the pollers of one cluster),
``_queue`` (the bounded queue), ``_poller`` (polling loop and accept batching),
``_group``, ``_run`` (the handler loop).
"""

from __future__ import annotations

from ._errors import AcceptUncertainError, PollerStoppedError
from ._group import PollerGroup
from ._job import JobState, PolledJob
from ._options import AcceptMode, PollerOptions, PollerStats
from ._poller import Poller
from ._run import AcceptWhen, Handler

__all__ = [
    "AcceptMode",
    "AcceptUncertainError",
    "AcceptWhen",
    "Handler",
    "JobState",
    "PolledJob",
    "Poller",
    "PollerGroup",
    "PollerOptions",
    "PollerStats",
    "PollerStoppedError",
]
