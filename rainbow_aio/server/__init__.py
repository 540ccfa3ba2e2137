"""The embedded rainbow scheduler server: asyncio gRPC (``grpc.aio``) on SQLite.

Two ways to run it:

- in-process: ``async with RainbowServer("127.0.0.1:0", db=":memory:") as server:``,
  then connect to ``server.address`` (the real port);
- as a process: ``rainbow-aio serve --address HOST:PORT --db FILE --secret S
  [--cleanup] [--tls-cert F --tls-key F [--tls-client-ca F]] [--max-calls-in-flight N]
  [--max-queued-writes N] [--max-response-bytes N]``.

What it guarantees (see PROTOCOL.md for the Go server it reproduces):

- the Go server's wire behaviour: every error is gRPC UNKNOWN with the Go details string
  (except a listing over ``max_response_bytes``, below, which the Go server would send),
  NORESULTS and PARTIAL answers, ``maxJobs`` (<= 0 means all, N means the N lowest ids),
  Serial and the Stream counter, job JSON byte for byte as Go's ``encoding/json`` (Go
  1.20 flavour: ``\\u0008``/``\\u000c`` for backspace and form feed);
- without the Go server's defects: bound SQL parameters only, exact case-sensitive names
  (``%`` and ``_`` are plain characters), the real job id from SubmitJob, an empty
  cluster name refused at registration (UNKNOWN ``a cluster name is required``),
  credentials stored as SHA-256 digests and compared in constant time;
- SUBMIT_SUCCESS only after the row is committed and fsynced: one thread owns the
  database and commits in batches (``_store`` explains the design and the WAL +
  ``synchronous=FULL`` choice);
- a large backlog costs disk, not memory: waiting jobs live only in SQLite, start-up
  reads no job, RequestJobs(maxJobs k) reads k rows through the ``(cluster, id)`` index
  whatever the cluster's history, and a long listing is built in pieces off the event
  loop, so it never holds up other calls (``_listing``);
- bounded load (:class:`ServerLimits`), in calls, bytes and time: every call (Serial
  and Stream included) counts until its answer has been sent; past
  ``max_calls_in_flight`` calls, ``max_held_bytes`` bytes of requests and unsent
  answers, or ``max_queued_writes`` queued writes a call is answered UNKNOWN
  ``database is locked`` at once, with nothing written (the Go server's retryable
  answer, which rainbow-aio's client repeats); a listing larger than
  ``max_response_bytes`` fails with RESOURCE_EXHAUSTED and a hint to lower
  ``maxJobs``, never a shortened answer; an AcceptJobs of more than
  ``max_accept_ids`` ids fails with INVALID_ARGUMENT (nothing deleted); one connection
  gets at most ``max_streams_per_connection`` calls at once;
- no call holds the database thread for long: accepts are deleted in transactions of
  1,000 ids and listings built in pieces of at most 500 jobs or 1 MiB of JSON, with
  other clusters' calls in between;
- the database file is locked (``FILE.lock``) before anything touches it, so
  ``cleanup`` of a file in use fails; a file deleted or replaced under the running
  server is noticed before any write is acknowledged, and from then on every write
  fails (UNKNOWN, details saying so) rather than be acknowledged into a file a
  restart would not see; a full disk is answered ``database is locked`` (rolled back,
  retryable);
- ids stay within the wire's int32: a submit that would get a larger id fails with
  UNKNOWN ``job ids are exhausted...`` before anything is stored, and listings leave
  out any stored row past it;
- ids keep increasing across restarts and are never reused; ``cleanup`` starts empty;
- with the built-in default secret it listens only on loopback addresses, unless
  ``allow_public_default_secret=True`` (``--allow-default-secret``).

Start-up failures (bad address, port in use, corrupt or locked database, unsafe
configuration) raise :class:`ServerStartError` with a one-line message that never
contains a secret.
"""

from __future__ import annotations

from ._limits import ServerLimits
from ._server import RainbowServer, ServerStartError, ServerTLSConfig

__all__ = ["RainbowServer", "ServerLimits", "ServerStartError", "ServerTLSConfig"]
