"""Facts of the rainbow v1 wire protocol shared by the client and the embedded server.

The Go server reports every error as gRPC status UNKNOWN and tells errors apart only by
the details string, so these strings are part of the contract: the embedded server sends
exactly these, and the client maps exactly these (in ``_exceptions.error_from_status``).
"""

from __future__ import annotations

from typing import Final

SERVICE: Final = "convergedcomputing.org.grpc.v1.RainbowScheduler"

DEFAULT_HOST: Final = "localhost:50051"
DEFAULT_REGISTRATION_SECRET: Final = "chocolate-cookies"
DEFAULT_CLUSTER: Final = "keebler"

INT32_MIN: Final = -(2**31)
INT32_MAX: Final = 2**31 - 1

# UNKNOWN details strings sent by the Go server (and reproduced by the embedded one).
DETAILS_DENIED: Final = "request denied"
DETAILS_TOKEN_REQUIRED: Final = "a cluster token is required"
DETAILS_SECRET_REQUIRED: Final = "a cluster secret is required"
DETAILS_NO_JOBS: Final = "one or more jobs must be accepted"
DETAILS_DB_LOCKED: Final = "database is locked"
DETAILS_STREAM_EOF: Final = "failed to receive: EOF"
SERIAL_PROCESSED: Final = "processed successfully"

# Sent only by the embedded server, which refuses what the Go server wrongly accepts.
DETAILS_CLUSTER_REQUIRED: Final = "a cluster name is required"
# How the embedded server's RESOURCE_EXHAUSTED for a listing over its size limit begins.
DETAILS_ANSWER_TOO_LARGE: Final = "the answer would be larger than the server's limit"
