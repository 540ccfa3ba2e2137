"""rainbow-aio: an asyncio client for the rainbow multi-cluster scheduler.

    async with RainbowClient("localhost:50051") as client:
        reg = await client.register("keebler", "chocolate-cookies")
        await client.submit_job("keebler", reg.token, "echo hello")
        async with client.poller("keebler", reg.secret) as poller:
            async for job in poller:
                if await job.accept():
                    ...  # this process owns the job: run it

See docs/delivery.md for the delivery guarantees and docs/retries.md for the retry table.

The embedded server (``RainbowServer``, ``ServerLimits``, ``ServerTLSConfig``) is imported
on first use, so a
program that only talks to a server does not load it, nor SQLite.
"""

from __future__ import annotations

import importlib as _importlib
import typing as _typing

from ._client import RainbowClient
from ._config import KeepAliveConfig, RetryPolicy, SubmitRetry, TLSConfig
from ._exceptions import (
    ClientClosedError,
    ClusterExistsError,
    DeadlineExceededError,
    DeniedError,
    InvalidArgumentError,
    MissingCredentialError,
    ProtocolError,
    RainbowError,
    RPCError,
    ServerBusyError,
    ServerError,
    TLSError,
    UnavailableError,
)
from ._models import AcceptResult, AcceptStatus, Job, JobListing, Registration
from ._outcome import CallOutcome
from ._stopping import Shutdown
from ._version import __version__
from .poller import (
    AcceptMode,
    AcceptUncertainError,
    JobBatch,
    JobReleasedError,
    PolledJob,
    Poller,
    PollerGroup,
    PollerOptions,
    PollerStats,
    PollerStoppedError,
    RunReport,
    UnhandledJobsError,
)

# names imported from a submodule on first use -> that submodule
_LAZY = {"RainbowServer": ".server", "ServerLimits": ".server", "ServerTLSConfig": ".server"}

if _typing.TYPE_CHECKING:
    # what type checkers see; at run time __getattr__ below imports these on first use
    from .server import RainbowServer, ServerLimits, ServerTLSConfig
else:

    def __getattr__(name: str) -> object:
        if name in _LAZY:
            value = getattr(_importlib.import_module(_LAZY[name], __name__), name)
            globals()[name] = value  # later look-ups find it without coming here
            return value
        if name == "server":  # the subpackage, as ``rainbow_aio.server`` always worked
            return _importlib.import_module(".server", __name__)
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    # client
    "RainbowClient",
    # client options
    "KeepAliveConfig",
    "RetryPolicy",
    "SubmitRetry",
    "TLSConfig",
    # results
    "AcceptResult",
    "AcceptStatus",
    "CallOutcome",
    "Job",
    "JobListing",
    "Registration",
    # errors
    "AcceptUncertainError",
    "ClientClosedError",
    "ClusterExistsError",
    "DeadlineExceededError",
    "DeniedError",
    "InvalidArgumentError",
    "JobReleasedError",
    "MissingCredentialError",
    "PollerStoppedError",
    "ProtocolError",
    "RPCError",
    "RainbowError",
    "ServerBusyError",
    "ServerError",
    "TLSError",
    "UnavailableError",
    "UnhandledJobsError",
    # polling
    "AcceptMode",
    "JobBatch",
    "PolledJob",
    "Poller",
    "PollerGroup",
    "PollerOptions",
    "PollerStats",
    "RunReport",
    # stopping workers
    "Shutdown",
    # server
    "RainbowServer",
    "ServerLimits",
    "ServerTLSConfig",
    "__version__",
]


def __dir__() -> list[str]:
    # the lazy names and the server subpackage are listed before their first use too
    return sorted({*globals(), *_LAZY, "server"})
