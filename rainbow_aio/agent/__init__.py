"""The cluster agent: accept the jobs that fit, journal them, run them, survive crashes.

AcceptJobs deletes the server's only copy of a job; from then on the process that
accepted it is the job's only holder. An :class:`Agent` is that holder done properly:

- it accepts a job only when the job's ``nodes`` fit its free nodes, and never one that
  cannot fit at all (reported once, left on the server); a large job's wait is bounded;
- it writes every step to a :class:`Journal` (SQLite, WAL): the intent before
  AcceptJobs, the outcome after it, the start, the end; on start it reconciles the
  journal with the server and re-attaches to the jobs still running;
- it runs jobs through an :class:`Executor` (:class:`LocalExecutor` by default;
  :class:`FluxExecutor` on a Flux instance, whose bindings are imported only when one is
  made), jobs that outlive the agent;
- it stops gracefully on SIGTERM / Ctrl-C (through :class:`~rainbow_aio.Shutdown`).

The command line: ``rainbow-aio agent ...`` and ``rainbow-aio agent status``
(docs/command-line.md); the reference: docs/reference/agent.md.
"""

from __future__ import annotations

from ._agent import Agent, AgentError, AgentOptions, AgentStats
from ._executor import SECRET_VARIABLES, Ended, Executor, Launch, LaunchError
from ._flux import FluxExecutor, FluxUnavailableError
from ._journal import (
    JobRecord,
    JobStateName,
    Journal,
    JournalCorruptError,
    JournalError,
    JournalLockedError,
)
from ._local import LocalExecutor

__all__ = [
    "SECRET_VARIABLES",
    "Agent",
    "AgentError",
    "AgentOptions",
    "AgentStats",
    "Ended",
    "Executor",
    "FluxExecutor",
    "FluxUnavailableError",
    "JobRecord",
    "JobStateName",
    "Journal",
    "JournalCorruptError",
    "JournalError",
    "JournalLockedError",
    "Launch",
    "LaunchError",
    "LocalExecutor",
]
