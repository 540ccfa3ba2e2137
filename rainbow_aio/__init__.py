"""rainbow-aio: an asyncio client for the rainbow multi-cluster scheduler.

    async with RainbowClient("localhost:50051") as client:
        reg = await client.register("keebler", "chocolate-cookies")
        await client.submit_job("keebler", reg.token, "echo hello")
        async with client.poller("keebler", reg.secret) as poller:
            async for job in poller:
                if await job.accept():
                    ...  # this process owns the job: run it

See README.md for the delivery guarantees and the retry table.
"""

from __future__ import annotations

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
from .poller import (
    AcceptMode,
    AcceptUncertainError,
    PolledJob,
    Poller,
    PollerGroup,
    PollerOptions,
    PollerStats,
    PollerStoppedError,
)
from .server import RainbowServer, ServerTLSConfig

__version__ = "0.1.0"

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
    "MissingCredentialError",
    "PollerStoppedError",
    "ProtocolError",
    "RPCError",
    "RainbowError",
    "ServerBusyError",
    "ServerError",
    "TLSError",
    "UnavailableError",
    # polling
    "AcceptMode",
    "PolledJob",
    "Poller",
    "PollerGroup",
    "PollerOptions",
    "PollerStats",
    # server
    "RainbowServer",
    "ServerTLSConfig",
    "__version__",
]
