"""Polling: turn a cluster's RequestJobs listings into jobs handed out once, to accept.

- :class:`Poller` (``client.poller(cluster, secret, ...)``): one cluster, one bounded
  queue; its docstring states the delivery guarantees.
- :class:`PollerGroup` (``client.poll_many({cluster: secret}, ...)``): many clusters,
  one merged queue, clusters added and removed while running, and ``run(handler)``.
- :class:`PolledJob`: a handed-out job, with ``accept()`` and ``release()``;
  :class:`JobBatch`: several of one cluster, handed out and accepted together.
- :class:`PollerStats`, :class:`AcceptMode`, :class:`PollerOptions` (and
  :class:`PollerKwargs`, the same options as typed keywords).
- :class:`AcceptUncertainError`, :class:`PollerStoppedError`, :class:`JobReleasedError`,
  :class:`UnhandledJobsError`; :class:`RunReport` (what ``run()`` returns).

Internals, as layers (each imports only the ones before it):

1. ``_options``, ``_errors``, ``_job`` (job states and the ``PolledJob`` handle);
2. ``_queue``: the bounded queue between pollers and consumers; ``_failures``: failed
   deliveries of jobs not accepted; ``_listings``: listings in flight and tombstones;
3. ``_sends``: sending a ledger's accepts (windows, batches, resends) and deciding from
   each AcceptJobs call's outcome how its jobs ended, which it reports to the ledger
   (it changes no job's state);
4. ``_ledger``: one accept ledger per (client, cluster), the only owner of a job's state
   and of everything about accepting, built on the two record keepers of layer 2, on
   the sender of layer 3 (which it owns), and on the process-wide record of accepters
   (``rainbow_aio/_accepters.py``; the sender asks it too);
5. ``_run``: the consumer side (iteration, ``run(handler)`` and how it stops);
6. ``_poller``: one cluster's poll loop, and ``Poller``;
7. ``_group``: ``PollerGroup``.
"""

from __future__ import annotations

from ._errors import (
    AcceptUncertainError,
    JobReleasedError,
    PollerStoppedError,
    UnhandledJobsError,
)
from ._group import PollerGroup
from ._job import JobBatch, JobState, PolledJob
from ._options import (
    AcceptMode,
    GiveUpHook,
    PollerKwargs,
    PollerOptions,
    PollerStats,
    UnhandledHook,
)
from ._poller import Poller
from ._run import AcceptWhen, BatchHandler, Handler, RunReport

__all__ = [
    "AcceptMode",
    "AcceptUncertainError",
    "AcceptWhen",
    "BatchHandler",
    "GiveUpHook",
    "Handler",
    "JobBatch",
    "JobReleasedError",
    "JobState",
    "PolledJob",
    "Poller",
    "PollerGroup",
    "PollerKwargs",
    "PollerOptions",
    "PollerStats",
    "PollerStoppedError",
    "RunReport",
    "UnhandledHook",
    "UnhandledJobsError",
]
