"""The executor protocol: how the agent hands an accepted job to something that runs it.

The agent owns the journal and the node accounting; an executor only starts, waits for,
cancels and re-attaches to jobs. Everything an executor returns that must survive a
restart of the agent is a *handle*: a short string the agent writes to the journal
(the local executor's is its wrapper's pid and start time, Flux's the Flux job id).

The calls, in the order the agent makes them for one job::

    handle = await executor.start(launch)      # LaunchError: recorded as failed, not run
    ended = await executor.wait(launch, handle)
    # or, on --cancel-on-stop / an explicit cancel:
    await executor.cancel(launch, handle)      # then wait() returns Ended(reason="cancelled")

and after a restart, for each job the journal says was being launched or running::

    found = await executor.reattach(launch, handle_or_none)
    # str   -> the job is running: wait(launch, found)
    # Ended -> it ended while no agent watched: record it
    # None  -> it certainly never started: the agent starts it (exactly once)

``reattach`` must never return None for a job that may have started: that would run it
twice. ``start`` must make that possible by leaving a durable trace in ``launch.folder``
(or the executor's own system) before the command can run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol, runtime_checkable

from .._exceptions import RainbowError

__all__ = ["SECRET_VARIABLES", "Ended", "Executor", "Launch", "LaunchError", "job_environment"]

SECRET_VARIABLES: Final = frozenset(
    {"RAINBOW_SECRET", "RAINBOW_TOKEN", "RAINBOW_REGISTRATION_SECRET"}
)
"""Variables of the agent's environment that never reach a job."""


def job_environment() -> dict[str, str]:
    """The agent's environment without its secrets: what every executor gives a job (to
    which it adds the job's own variables, :attr:`Launch.environment`)."""
    return {k: v for k, v in os.environ.items() if k not in SECRET_VARIABLES}


@dataclass(frozen=True, slots=True)
class Launch:
    """One accepted job, as an executor needs it.

    ``argv`` is ``shlex.split(command)``, checked not empty (the agent never adds a shell);
    ``folder`` is the job's own directory under the agent's workdir (``<workdir>/<id>``),
    made by the executor's ``start`` when missing; stdout and stderr go there.
    ``time_limit`` is in seconds (None: no limit).
    """

    job_id: int
    cluster: str
    command: str
    argv: tuple[str, ...]
    nodes: int
    tasks: int
    folder: Path
    time_limit: float | None = None

    @property
    def environment(self) -> dict[str, str]:
        """The variables every executor adds to the job's environment."""
        return {
            "RAINBOW_JOB_ID": str(self.job_id),
            "RAINBOW_CLUSTER": self.cluster,
            "RAINBOW_NODES": str(self.nodes),
            "RAINBOW_TASKS": str(self.tasks),
            "RAINBOW_JOB_DIR": str(self.folder),
        }


@dataclass(frozen=True, slots=True)
class Ended:
    """How a job ended.

    ``exit_code`` is the command's exit status (None when it never ran or was killed by a
    signal); ``reason`` is human text: ``"exit 0"``, ``"exit 3"``, ``"killed by SIGKILL"``,
    ``"timed out after 5 s"``, ``"cancelled"``, ``"command not found: foo"``.
    """

    exit_code: int | None
    reason: str

    @property
    def ok(self) -> bool:
        """True when the job exited 0."""
        return self.exit_code == 0


class LaunchError(RainbowError):
    """The job cannot be started (bad command, folder not writable...): recorded as failed
    with ``reason``, never retried. ``str(error)`` is the reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@runtime_checkable
class Executor(Protocol):
    """What the agent needs from something that runs jobs (local processes, Flux...).

    Every method is called from the agent's event loop; none should block it.
    """

    name: str
    """Short name for logs, the journal and ``--executor`` (``"local"``, ``"flux"``)."""

    async def free_nodes(self) -> int | None:
        """Nodes free for new jobs now, or None to use the agent's configured ``nodes``
        (the agent then does its own accounting). Called before each accept."""
        ...

    async def start(self, launch: Launch) -> str:
        """Make ``launch.folder`` if it is missing, start the job, and return the handle
        to journal. Raise :class:`LaunchError` for a job that cannot be started (a folder
        that cannot be made or written included: it is recorded as failed with the
        reason). Once this returns or raises anything but LaunchError, ``reattach`` must
        find the job."""
        ...

    async def wait(self, launch: Launch, handle: str) -> Ended:
        """Wait until the job ends and say how. Cancelling the caller (the agent stopping)
        must leave the job running, to be re-attached later."""
        ...

    async def cancel(self, launch: Launch, handle: str) -> None:
        """Ask the job to stop (a ``wait`` in progress then returns ``"cancelled"``)."""
        ...

    async def reattach(self, launch: Launch, handle: str | None) -> str | Ended | None:
        """After a restart: the handle to wait on when the job is still running, how it
        ended when it ended unwatched, or None when it certainly never started (and may be
        started now). ``handle`` is what the journal holds (None when ``start`` had not
        returned)."""
        ...

    async def aclose(self) -> None:
        """Release the executor's resources (jobs keep running)."""
        ...
