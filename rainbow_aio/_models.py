"""Typed results returned by the client."""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from orjson import loads as _loads

from ._exceptions import ProtocolError
from ._gojson import encode_job
from ._outcome import CallOutcome

__all__ = [
    "AcceptResult",
    "AcceptStatus",
    "Job",
    "JobListing",
    "Registration",
    "jobs_from_listing",
]


@dataclass(frozen=True, slots=True)
class Job:
    """One job waiting for a cluster, as RequestJobs lists it."""

    id: int
    cluster: str
    name: str
    nodes: int
    tasks: int
    command: str

    def to_json(self) -> str:
        """The job as the Go server writes it: compact, keys in the order ``id, cluster,
        name, nodes, tasks, command``, and Go's escaping (``&`` as ``\\u0026``, ...).
        For a job parsed from a conforming server this is the very text it sent."""
        return encode_job(self.id, self.cluster, self.name, self.nodes, self.tasks, self.command)

    @classmethod
    def from_json(cls, job_id: int, text: str, *, cluster: str | None = None) -> Job:
        """Parse the JSON string the server sends for one job.

        ``job_id`` is the map key the server sent it under; it wins over the JSON's
        ``id`` if the two disagree (they never do on a conforming server). Raises
        :class:`ProtocolError` when the text is not a job object.
        """
        try:
            # orjson: a listing parses every new job, and this is most of a poll's cost
            raw: Any = _loads(text)
            if not isinstance(raw, dict):
                raise TypeError("not an object")
            get = raw.get
            # what servers send: every field, of its own type; nothing to convert or check
            c, n, nodes, tasks, cmd = (
                get("cluster"), get("name"), get("nodes"), get("tasks"), get("command")
            )  # fmt: skip
            if (
                cls is Job
                and type(job_id) is int
                and type(c) is str
                and type(n) is str
                and type(nodes) is int
                and type(tasks) is int
                and type(cmd) is str
            ):
                return _new_job(job_id, c, n, nodes, tasks, cmd)
            return cls(
                id=int(job_id),
                cluster=str(get("cluster", cluster or "")),
                name=str(get("name", "")),
                nodes=int(get("nodes", 0)),
                tasks=int(get("tasks", 0)),
                command=str(get("command", "")),
            )
        except (ValueError, TypeError) as exc:
            raise ProtocolError(
                f"job {job_id} is not valid job JSON: {exc}",
                rpc="RequestJobs",
                cluster=cluster,
            ) from None


def _job_maker() -> Callable[[int, str, str, int, int, str], Job]:
    """A constructor of :class:`Job` for values already of their types: it sets the slots
    directly, without the frozen dataclass's ``__init__`` (which sets each field through
    ``object.__setattr__``, a third of the cost of parsing a job)."""
    new = object.__new__
    slots: dict[str, Any] = Job.__dict__  # type: ignore[assignment]
    set_id, set_cluster, set_name, set_nodes, set_tasks, set_command = (
        slots[f].__set__ for f in ("id", "cluster", "name", "nodes", "tasks", "command")
    )

    def make(job_id: int, cluster: str, name: str, nodes: int, tasks: int, command: str) -> Job:
        job: Job = new(Job)
        set_id(job, job_id)
        set_cluster(job, cluster)
        set_name(job, name)
        set_nodes(job, nodes)
        set_tasks(job, tasks)
        set_command(job, command)
        return job

    return make


_new_job = _job_maker()


def jobs_from_listing(
    listing: Mapping[int, str], ids: Iterable[int], *, cluster: str | None = None
) -> list[Job]:
    """The jobs ``ids`` of one RequestJobs answer (``listing``: id -> job JSON), parsed
    in one loop: what :meth:`Job.from_json` does for each, without a call per job for
    the jobs a conforming server sends (every field, of its own type). Anything else
    goes through ``Job.from_json``, which converts or raises :class:`ProtocolError`."""
    jobs: list[Job] = []
    append = jobs.append
    for job_id in ids:
        text = listing[job_id]
        try:
            raw: Any = _loads(text)
            c, n, nodes, tasks, cmd = (
                raw["cluster"], raw["name"], raw["nodes"], raw["tasks"], raw["command"]
            )  # fmt: skip
        except (ValueError, TypeError, KeyError):
            append(Job.from_json(job_id, text, cluster=cluster))  # raises, or converts
            continue
        if (
            type(job_id) is int
            and type(c) is str
            and type(n) is str
            and type(nodes) is int
            and type(tasks) is int
            and type(cmd) is str
        ):
            append(_new_job(job_id, c, n, nodes, tasks, cmd))
        else:
            append(Job.from_json(job_id, text, cluster=cluster))
    return jobs


@dataclass(frozen=True, slots=True)
class Registration:
    """The credentials of a newly registered cluster.

    ``token`` is what submitters need; ``secret`` is what the cluster itself needs to
    request and accept its jobs. Neither appears in ``repr()``; keep them somewhere safe,
    the server never shows them again.
    """

    cluster: str
    token: str = field(repr=False)
    secret: str = field(repr=False)


class AcceptStatus(enum.Enum):
    """How an AcceptJobs call ended."""

    SUCCESS = "success"
    """Every id was deleted on the server by this call: the cluster owns them all."""
    PARTIAL = "partial"
    """At least one id was not deleted by this call (someone else took it, or it never
    existed); the others were. The server does not say which."""
    UNCERTAIN = "uncertain"
    """The call was retried after a lost answer and then came back PARTIAL: an earlier
    attempt may have taken some or all of the ids. Nobody else took those, unless another
    process accepts for the same cluster."""


@dataclass(frozen=True, slots=True)
class AcceptResult:
    """The answer of ``RainbowClient.accept_jobs``.

    ``status`` says what the answer means for the ids; ``outcome`` is
    :attr:`CallOutcome.APPLIED <rainbow_aio.CallOutcome.APPLIED>` (the server acted and
    answered), the same fact a failed call carries as ``error.outcome``; ``attempts``
    counts the attempts sent, retries included.
    """

    job_ids: tuple[int, ...]
    status: AcceptStatus
    attempts: int = 1
    outcome: CallOutcome = CallOutcome.APPLIED

    @property
    def all_accepted(self) -> bool:
        """True when the server confirmed that every id was taken by this call."""
        return self.status is AcceptStatus.SUCCESS


@dataclass(frozen=True, slots=True)
class JobListing:
    """One RequestJobs answer, from ``RainbowClient.request_listing``.

    ``ids`` holds every id the server listed, ascending; ``jobs`` the parsed jobs whose ids
    were not in the call's ``skip``, ascending. ``len(ids) < max_jobs`` means the listing
    showed every job waiting for the cluster.
    """

    ids: tuple[int, ...]
    jobs: list[Job]
