"""Plumbing shared by every benchmark: servers, worker processes, set-up, results.

The process layout is always three processes:

- this one, the *orchestrator*: starts the server, registers clusters, pre-loads jobs,
  checks correctness afterwards and writes the result file; it does no measured work;
- the *server*: ``python -m rainbow_aio serve`` via :class:`rainbow_aio.testing.ServerProcess`;
- one or more *workers* (``python -m benchmarks._worker``): the measured load generator
  or client, whose own CPU time is read with ``getrusage``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import json
import os
import platform
import re
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from rainbow_aio._proto import rainbow_pb2 as pb
from rainbow_aio._proto import rainbow_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from rainbow_aio.testing import ServerProcess

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"
SECRET = "bench-registration-secret"
RESULT_MARK = "@@BENCH-RESULT@@ "

# grpc's default 4 MiB receive limit is too small to list 100,000 jobs in one answer.
UNLIMITED = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]

Creds = dict[str, tuple[str, str]]  # cluster -> (token, secret)


# -- measurement helpers --------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) by linear interpolation; None for no values."""
    if not values:
        return None
    data = sorted(values)
    if len(data) == 1:
        return data[0]
    pos = (len(data) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def latency_summary(seconds: Sequence[float]) -> dict[str, Any]:
    """n, p50, p90, p99, max and mean of a list of durations, in milliseconds."""

    def ms(v: float | None) -> float | None:
        return None if v is None else round(v * 1000.0, 3)

    return {
        "n": len(seconds),
        "p50_ms": ms(percentile(seconds, 50)),
        "p90_ms": ms(percentile(seconds, 90)),
        "p99_ms": ms(percentile(seconds, 99)),
        "max_ms": ms(max(seconds) if seconds else None),
        "mean_ms": ms(sum(seconds) / len(seconds) if seconds else None),
    }


def cpu_seconds() -> float:
    """User + system CPU seconds used so far by this process (all its threads)."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


class GcTime:
    """Seconds the cyclic garbage collector ran (in any thread) while this is entered:
    its collections hold the GIL, so this is CPU the process spent on nothing else."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._began: float | None = None

    def __enter__(self) -> GcTime:
        gc.callbacks.append(self._collecting)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._collecting)

    def _collecting(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
        elif self._began is not None:
            self.seconds += time.perf_counter() - self._began
            self._began = None


def rss_bytes() -> int:
    """Resident set size of this process now (from /proc, no psutil needed)."""
    rss = process_rss(os.getpid())
    assert rss is not None
    return rss


def process_rss(pid: int | None) -> int | None:
    """Resident set size of another process (the server) in bytes, or None."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def process_cpu(pid: int | None) -> float | None:
    """CPU seconds used so far by another process (the server), or None."""
    if pid is None:
        return None
    try:
        import psutil

        t = psutil.Process(pid).cpu_times()
        return float(t.user + t.system)
    except Exception:
        return None


def target(
    name: str, measured: float | None, goal: float, *, higher_is_better: bool = True, unit: str = ""
) -> dict[str, Any]:
    """One target line: measured value, goal, measured/goal ratio and PASS/MISS."""
    if measured is None:
        ok = False
        ratio = None
    else:
        ok = measured >= goal if higher_is_better else measured <= goal
        ratio = round(measured / goal, 3) if goal else None
    return {
        "name": name,
        "measured": None if measured is None else round(measured, 4),
        "goal": goal,
        "direction": ">=" if higher_is_better else "<=",
        "unit": unit,
        "ratio_vs_goal": ratio,
        "verdict": "PASS" if ok else "MISS",
    }


# -- machine description ------------------------------------------------------------------


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=True
        )
    except Exception:
        return None
    return out.stdout.strip()


def tree_info(tree: Path) -> dict[str, Any]:
    """Where another server tree is, and its commit when it is a git checkout."""
    commit = None
    with contextlib.suppress(Exception):
        commit = subprocess.run(
            ["git", "-C", str(tree), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
    return {"path": str(tree), "git_commit": commit}


def machine_info() -> dict[str, Any]:
    """Cores, CPU model, Python, grpcio/protobuf versions, load average, git commit."""
    import google.protobuf

    import rainbow_aio

    model = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_total = None
    with contextlib.suppress(Exception):
        import psutil

        mem_total = psutil.virtual_memory().total
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    commit = _git("rev-parse", "--short", "HEAD")
    if commit is None:  # an exported tree (git archive) has no .git: told by the runner
        commit = os.environ.get("RAINBOW_BENCH_COMMIT")
    return {
        "cores_logical": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "memory_bytes": mem_total,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "python_impl": platform.python_implementation(),
        "grpcio": grpc.__version__,
        "protobuf": google.protobuf.__version__,
        "rainbow_aio": rainbow_aio.__version__,
        "rainbow_aio_path": str(Path(rainbow_aio.__file__).parent),
        "git_commit": commit,
        "git_dirty": bool(dirty) if dirty is not None else None,
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }


# -- results --------------------------------------------------------------------------------


@dataclass
class RunContext:
    """What one ``python -m benchmarks run`` invocation shares between benchmarks."""

    size: str  # "toy" | "quick" | "full"
    results_dir: Path
    stamp: str
    command: str
    charts: bool = True
    profile: bool = False
    # run the server processes from this source tree instead (a before/after comparison)
    server_tree: Path | None = None
    # a source tree whose server the server benchmark compares side by side with this one
    compare_tree: Path | None = None
    # a source tree whose client the original benchmark compares side by side with this one
    client_tree: Path | None = None
    tmp: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="rainbow-bench-")))

    def result_path(self, name: str, suffix: str = ".json") -> Path:
        """A fresh file name ``<stamp>-<name>[-other-server][-size]<suffix>``; never an
        existing one."""
        tag = "" if self.size == "full" else f"-{self.size}"
        if self.server_tree is not None:
            tag = f"-other-server{tag}"
        base = f"{self.stamp}-{name}{tag}"
        path = self.results_dir / f"{base}{suffix}"
        n = 2
        while path.exists():
            path = self.results_dir / f"{base}-{n}{suffix}"
            n += 1
        return path

    def cleanup(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


class Checks:
    """Correctness checks a benchmark makes while it runs; any failure fails the run."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        self.items.append({"check": name, "ok": bool(ok), "detail": detail})
        mark = "ok  " if ok else "FAIL"
        print(f"    [{mark}] {name}{': ' + detail if detail else ''}", flush=True)
        return bool(ok)

    @property
    def ok(self) -> bool:
        return all(item["ok"] for item in self.items)

    def as_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "items": self.items}


def write_result(ctx: RunContext, name: str, payload: dict[str, Any]) -> Path:
    ctx.results_dir.mkdir(parents=True, exist_ok=True)
    path = ctx.result_path(name)
    path.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    return path


def shown_path(path: Path) -> str:
    """``path`` relative to the repository when it is inside it."""
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def say(msg: str) -> None:
    print(msg, flush=True)


# -- the server process ---------------------------------------------------------------------


@contextlib.asynccontextmanager
async def server_process(
    ctx: RunContext, name: str, *, args: Sequence[str] = (), tree: Path | None = None
) -> AsyncIterator[ServerProcess]:
    """A ``rainbow-aio serve`` child on 127.0.0.1 with a fresh database; always stopped.

    ``args`` are extra ``rainbow-aio serve`` options (``--max-calls-in-flight 100``).
    The server runs the ``rainbow_aio`` of ``tree``, else of ``ctx.server_tree``, else
    this one.
    """
    tree = tree if tree is not None else ctx.server_tree
    from rainbow_aio.testing import ServerProcess  # here: workers need not import pytest

    db = ctx.tmp / f"{name}-{uuid.uuid4().hex[:8]}.db"
    env = dict(os.environ)
    env.pop("PYTHONDEVMODE", None)  # dev mode slows asyncio; benchmarks measure release mode
    if tree is not None:
        # that tree's rainbow_aio first, and not the one in the current directory
        env["PYTHONSAFEPATH"] = "1"
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tree), env.get("PYTHONPATH")]))
    server = ServerProcess(db, host="127.0.0.1", secret=SECRET, cleanup=True, args=args, env=env)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
        _remove_db(db)


def _remove_db(db: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)


# -- worker processes -----------------------------------------------------------------------


class WorkerError(RuntimeError):
    pass


@dataclass
class Worker:
    """A running ``python -m benchmarks._worker`` child; ``result()`` waits for its answer."""

    proc: asyncio.subprocess.Process
    role: str
    timeout: float
    _out: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def result(self) -> dict[str, Any]:
        try:
            stdout, _ = await asyncio.wait_for(self.proc.communicate(), self.timeout)
        except TimeoutError:
            await self.kill()
            raise WorkerError(
                f"worker {self.role} did not finish within {self.timeout:.0f} s"
            ) from None
        text = stdout.decode("utf-8", "replace")
        for line in reversed(text.splitlines()):
            if line.startswith(RESULT_MARK):
                result: dict[str, Any] = json.loads(line[len(RESULT_MARK) :])
                if self.proc.returncode != 0 or "error" in result:
                    raise WorkerError(
                        f"worker {self.role} failed (exit {self.proc.returncode}): "
                        f"{result.get('error', '')}"
                    )
                return result
        raise WorkerError(f"worker {self.role} exited {self.proc.returncode} without a result")

    async def kill(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.proc.wait(), 10)


def _package_of(tree: Path) -> Path:
    """A directory holding only ``tree``'s ``rainbow_aio`` (a link to it): on a worker's
    path before this checkout, it gives that tree's library with this tree's benchmarks."""
    link_dir = Path(tempfile.gettempdir()) / f"rainbow-bench-client-{slug(str(tree))}"
    link = link_dir / "rainbow_aio"
    if not link.exists():
        link_dir.mkdir(exist_ok=True)
        link.symlink_to(tree / "rainbow_aio", target_is_directory=True)
    return link_dir


async def start_worker(
    role: str,
    params: Mapping[str, Any],
    *,
    limit: float,
    profile: str | None = None,
    tree: Path | None = None,
) -> Worker:
    """Start ``role`` (``module:function``) in a new Python process with ``params``.

    The worker's stderr (progress lines) goes to ours; its result comes back on stdout.
    With ``profile`` (a path) the worker runs under ``py-spy record`` (collapsed stacks
    written there; summarise them with ``python -m benchmarks profile FILE``), or under
    pyinstrument when the path ends in ``.html``. With ``tree`` it imports the
    ``rainbow_aio`` of that source tree (an older checkout) instead of this one's.
    """
    env = dict(os.environ)
    env.pop("PYTHONDEVMODE", None)
    path = [str(ROOT), env.get("PYTHONPATH")]
    if tree is not None:
        env["PYTHONSAFEPATH"] = "1"  # not the current directory (this checkout) first
        path.insert(0, str(_package_of(tree)))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, path))
    argv = [sys.executable, "-m", "benchmarks._worker", role]
    if profile and profile.endswith(".html"):
        argv += ["--profile", profile]
    elif profile:
        py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        argv = [py_spy, "record", "--nonblocking", "-r", "200", "-f", "raw", "-o", profile,
                "--", *argv]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=None,
        cwd=ROOT,
        env=env,
    )
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(dict(params)).encode())
    await proc.stdin.drain()
    proc.stdin.close()
    return Worker(proc, role, limit)


async def run_worker(
    role: str,
    params: Mapping[str, Any],
    *,
    limit: float,
    profile: str | None = None,
    tree: Path | None = None,
) -> dict[str, Any]:
    """Run one worker to completion and return its result (kill it on any failure)."""
    worker = await start_worker(role, params, limit=limit, profile=profile, tree=tree)
    try:
        return await worker.result()
    finally:
        await worker.kill()


async def wait_for_file(path: Path, limit: float, workers: Iterable[Worker] = ()) -> None:
    """Wait until ``path`` exists (a worker's "ready" signal), or fail after ``limit`` s."""
    deadline = time.monotonic() + limit
    while not os.path.exists(path):  # noqa: ASYNC240 - a stat every 50 ms is harmless
        for w in workers:
            if w.proc.returncode is not None:
                raise WorkerError(f"worker {w.role} exited before it was ready")
        if time.monotonic() > deadline:
            raise WorkerError(f"no ready signal {path.name} within {limit:.0f} s")
        await asyncio.sleep(0.05)


# -- set-up through the raw stub (independent of the code under test) ---------------------


class Admin:
    """Set-up and verification calls on a raw ``grpc.aio`` channel (not the client)."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.channel = grpc.aio.insecure_channel(address, options=UNLIMITED)
        self.stub = pb_grpc.RainbowSchedulerStub(self.channel)

    async def close(self) -> None:
        await self.channel.close()

    async def __aenter__(self) -> Admin:
        await asyncio.wait_for(self.channel.channel_ready(), 30)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def register_many(self, names: Sequence[str], *, in_flight: int = 64) -> Creds:
        """Register every name (concurrently); return their tokens and secrets."""
        creds: Creds = {}

        async def one(name: str) -> None:
            for attempt in range(20):
                try:
                    r = await self.stub.Register(
                        pb.RegisterRequest(name=name, secret=SECRET), timeout=60
                    )
                except grpc.aio.AioRpcError as exc:
                    if "locked" in (exc.details() or "") and attempt < 19:
                        await asyncio.sleep(0.05 * (attempt + 1))
                        continue
                    raise
                if r.status != pb.RegisterResponse.REGISTER_SUCCESS:
                    raise RuntimeError(f"registering {name}: status {r.status}")
                creds[name] = (r.token, r.secret)
                return

        await gather_limited([one(n) for n in names], in_flight)
        return creds

    async def submit_many(
        self, jobs: Sequence[tuple[str, str, str, str]], *, in_flight: int = 64
    ) -> list[int]:
        """Submit (cluster, token, name, command) jobs concurrently; return their ids."""
        ids: list[int] = [0] * len(jobs)

        async def one(i: int) -> None:
            cluster, token, name, command = jobs[i]
            r = await self.stub.SubmitJob(
                pb.SubmitJobRequest(
                    cluster=cluster, token=token, name=name, command=command, nodes=1
                ),
                timeout=60,
            )
            if r.status != pb.SubmitJobResponse.SUBMIT_SUCCESS or r.jobid <= 0:
                raise RuntimeError(f"submit to {cluster}: status {r.status} id {r.jobid}")
            ids[i] = r.jobid

        await gather_limited([one(i) for i in range(len(jobs))], in_flight)
        return ids

    async def waiting(self, cluster: str, secret: str) -> set[int]:
        """Every job id still waiting for a cluster."""
        r = await self.stub.RequestJobs(
            pb.RequestJobsRequest(cluster=cluster, secret=secret, maxJobs=0), timeout=120
        )
        return set(r.jobs)

    async def accept_all(self, cluster: str, secret: str, ids: Sequence[int]) -> bool:
        """Accept (delete) these jobs in chunks; True when every chunk answered SUCCESS."""
        ok = True
        for i in range(0, len(ids), 5000):
            r = await self.stub.AcceptJobs(
                pb.AcceptJobsRequest(cluster=cluster, secret=secret, jobids=ids[i : i + 5000]),
                timeout=120,
            )
            ok &= r.status == pb.AcceptJobsResponse.RESULT_TYPE_SUCCESS
        return ok

    async def waiting_many(self, creds: Creds, *, in_flight: int = 16) -> dict[str, set[int]]:
        out: dict[str, set[int]] = {}

        async def one(name: str) -> None:
            out[name] = await self.waiting(name, creds[name][1])

        await gather_limited([one(n) for n in creds], in_flight)
        return out


async def gather_limited(coros: Sequence[Any], limit: int) -> None:
    """Await every coroutine with at most ``limit`` running at once; first error wins."""
    it = iter(coros)

    async def lane() -> None:
        for coro in it:
            await coro

    lanes = [asyncio.create_task(lane()) for _ in range(max(1, min(limit, len(coros))))]
    try:
        await asyncio.gather(*lanes)
    finally:
        for t in lanes:
            t.cancel()
        for coro in it:  # close the ones never started so no "never awaited" warning
            coro.close()


# -- pre-loading jobs -----------------------------------------------------------------------

_JOB_COLUMNS = {"id", "cluster", "name", "nodes", "tasks", "command"}


def _sqlite_loadable(db: Path) -> bool:
    """True when the server's database has the jobs table this loader knows how to fill."""
    try:
        conn = sqlite3.connect(db)
    except sqlite3.Error:
        return False
    try:
        cols = {row[1] for row in conn.execute("PRAGMA table_info(jobs)")}
    except sqlite3.Error:
        return False
    finally:
        conn.close()
    return cols >= _JOB_COLUMNS


def _sqlite_insert(db: Path, rows: Sequence[tuple[str, str, str]]) -> list[int]:
    """Insert (cluster, name, command) rows in one transaction; return their ids in order."""
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        ids: list[int] = []
        for cluster, name, command in rows:
            cur = conn.execute(
                "INSERT INTO jobs (cluster, name, nodes, tasks, command) VALUES (?, ?, 1, 0, ?)",
                (cluster, name, command),
            )
            assert cur.lastrowid is not None
            ids.append(cur.lastrowid)
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return ids
    finally:
        conn.close()


def _sqlite_bulk_insert(
    db: Path, cluster: str, count: int, command: Callable[[str, int], str]
) -> tuple[int, int]:
    """Insert ``count`` jobs for one cluster in one transaction, streaming the rows (no
    list of them is built); return the first and last id given."""
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        before = conn.execute("SELECT COALESCE(MAX(id), 0) FROM jobs").fetchone()[0]
        conn.executemany(
            "INSERT INTO jobs (cluster, name, nodes, tasks, command) VALUES (?, ?, 1, 0, ?)",
            ((cluster, f"pre-{i}", command(cluster, i)) for i in range(count)),
        )
        first, last, n = conn.execute(
            "SELECT MIN(id), MAX(id), COUNT(*) FROM jobs WHERE id > ?", (before,)
        ).fetchone()
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    if n != count or last - first + 1 != count:
        raise RuntimeError(f"bulk load gave {n} rows with ids {first}..{last}, not {count}")
    return first, last


async def bulk_load(
    server: ServerProcess,
    cluster: str,
    count: int,
    *,
    command: Callable[[str, int], str] = lambda cluster, i: f"echo {cluster} {i}",
) -> tuple[range, dict[str, Any]]:
    """Add ``count`` waiting jobs to one cluster, for backlogs of millions of jobs.

    Like :func:`preload` with ``method="sqlite"``, but streams the rows in one
    ``executemany`` and returns the ids as a range (they are consecutive: the server is
    stopped, so nothing else inserts meanwhile). The server is restarted on the file.
    """
    t0 = time.perf_counter()
    await server.stop()
    try:
        if not _sqlite_loadable(server.db):
            raise RuntimeError("the server's database schema is not the one the loader knows")
        first, last = await asyncio.to_thread(
            _sqlite_bulk_insert, server.db, cluster, count, command
        )
    finally:
        await server.start()
    note = {"method": "sqlite-bulk", "jobs": count, "seconds": round(time.perf_counter() - t0, 3)}
    return range(first, last + 1), note


async def preload(
    server: ServerProcess,
    creds: Creds,
    per_cluster: Mapping[str, int],
    *,
    command: Callable[[str, int], str] = lambda cluster, i: f"echo {cluster} {i}",
    method: str = "auto",
) -> tuple[dict[str, list[int]], dict[str, Any]]:
    """Put ``per_cluster[name]`` jobs in each cluster's queue, as fast as honestly possible.

    ``auto`` writes the rows straight into the server's SQLite file while the server is
    stopped (then restarts it on the same file), when the file has the jobs table this
    loader understands; otherwise, and with ``method="rpc"``, it submits them through
    SubmitJob with 64 calls in flight. Returns the job ids per cluster and a note of how
    they were loaded and how long it took.
    """
    rows = [(c, f"pre-{i}", command(c, i)) for c, n in per_cluster.items() for i in range(n)]
    t0 = time.perf_counter()
    ids: list[int]
    used = "rpc"
    if method in ("auto", "sqlite") and rows:
        await server.stop()
        if _sqlite_loadable(server.db):
            ids = await asyncio.to_thread(_sqlite_insert, server.db, rows)
            used = "sqlite"
        elif method == "sqlite":
            await server.start()
            raise RuntimeError("the server's database schema is not the one the loader knows")
        await server.start()
    if used == "rpc":
        async with Admin(server.address) as admin:
            ids = await admin.submit_many([(c, creds[c][0], n, cmd) for c, n, cmd in rows])
    out: dict[str, list[int]] = {c: [] for c in per_cluster}
    for (cluster, _, _), job_id in zip(rows, ids, strict=True):
        out[cluster].append(job_id)
    note = {"method": used, "jobs": len(rows), "seconds": round(time.perf_counter() - t0, 3)}
    return out, note


async def accept_each(
    jobs: Any, *, total: int, consumers: int, limit: float, t0: float, cpu0: float
) -> dict[str, Any]:
    """Run ``consumers`` tasks that take jobs from ``jobs`` (a Poller or PollerGroup) and
    accept each one on its own, until ``total`` are accepted or ``limit`` seconds pass.

    Returns the wall and CPU seconds since ``t0`` / ``cpu0`` (taken by the caller, so
    that start-up can be counted), the accepted ids, failed accepts and their errors.
    """

    async def step(errors: list[str]) -> tuple[list[int], int]:
        job = await jobs.get()
        try:
            if await job.accept():
                return [job.id], 0
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
        return [], 1

    return await _consume(step, total=total, consumers=consumers, limit=limit, t0=t0, cpu0=cpu0)


async def accept_batches(
    jobs: Any,
    *,
    total: int,
    consumers: int,
    max_size: int,
    limit: float,
    t0: float,
    cpu0: float,
) -> dict[str, Any]:
    """Like :func:`accept_each`, but each consumer takes a batch of up to ``max_size``
    jobs of one cluster (``jobs.get_batch``), accepts it with ``batch.accept()`` and
    reads each owned job's command, as a consumer handing jobs to a batch system would."""

    async def step(errors: list[str]) -> tuple[list[int], int]:
        batch = await jobs.get_batch(max_size)
        try:
            owned = await batch.accept()
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
            owned = []
        _read = [job.job.command for job in owned]  # what a real consumer reads
        return [job.id for job in owned], len(batch) - len(owned)

    return await _consume(step, total=total, consumers=consumers, limit=limit, t0=t0, cpu0=cpu0)


async def drain(
    jobs: Any, params: dict[str, Any], *, limit: float, t0: float, cpu0: float
) -> dict[str, Any]:
    """Drain ``params["total"]`` jobs from ``jobs`` with ``params["consumers"]`` consumers:
    in batches of up to ``params["batch"]`` when given, else one job at a time."""
    if "batch" in params:
        return await accept_batches(
            jobs,
            total=params["total"],
            consumers=params["consumers"],
            max_size=params["batch"],
            limit=limit,
            t0=t0,
            cpu0=cpu0,
        )
    return await accept_each(
        jobs, total=params["total"], consumers=params["consumers"], limit=limit, t0=t0, cpu0=cpu0
    )


async def _consume(
    step: Callable[[list[str]], Awaitable[tuple[list[int], int]]],
    *,
    total: int,
    consumers: int,
    limit: float,
    t0: float,
    cpu0: float,
) -> dict[str, Any]:
    """Run ``consumers`` tasks repeating ``step`` (it returns the ids it accepted and how
    many jobs it failed to) until ``total`` are accepted or ``limit`` seconds pass."""
    accepted: list[int] = []
    errors: list[str] = []
    failed = 0
    done = asyncio.Event()

    async def consume() -> None:
        nonlocal failed
        while not done.is_set():
            ids, missed = await step(errors)
            accepted.extend(ids)
            failed += missed
            if len(accepted) >= total:
                done.set()

    tasks = [asyncio.create_task(consume()) for _ in range(consumers)]
    try:
        await asyncio.wait_for(done.wait(), limit)
        seconds = time.perf_counter() - t0
        cpu = cpu_seconds() - cpu0
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return {
        "seconds": round(seconds, 4),
        "cpu_s": round(cpu, 4),
        "failed_accepts": failed,
        "errors": errors,
        "accepted": accepted,
    }


def jsonable(obj: Any) -> Any:
    """A stats snapshot as plain JSON (dataclass, mapping or object attributes)."""
    if obj is None or isinstance(obj, int | float | str | bool):
        return obj
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = dataclasses.asdict(obj)
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    return str(obj)


def verify_drain(
    checks: Checks,
    label: str,
    expected: Mapping[str, Sequence[int]],
    accepted: Sequence[int],
    remaining: Mapping[str, set[int]],
    *,
    partial_ok: bool = False,
) -> bool:
    """Check that every expected job was accepted exactly once and none is left waiting.

    With ``partial_ok`` (a timed run that stops before the backlog is empty) the jobs
    not accepted must all still be waiting: accepted + waiting == loaded, disjoint.
    """
    want = {i for ids in expected.values() for i in ids}
    got = list(accepted)
    got_set = set(got)
    dupes = len(got) - len(got_set)
    stray = got_set - want
    left = {i for ids in remaining.values() for i in ids} & want
    ok = checks.check(f"{label}: no job accepted twice", dupes == 0, f"{dupes} duplicates")
    ok &= checks.check(f"{label}: only loaded jobs accepted", not stray, f"{len(stray)} strays")
    if partial_ok:
        missing = want - got_set - left
        ok &= checks.check(
            f"{label}: accepted + still waiting == loaded",
            not missing and not (left & got_set),
            f"{len(got_set)} accepted, {len(left)} waiting, {len(missing)} lost",
        )
    else:
        missing = want - got_set
        ok &= checks.check(
            f"{label}: every loaded job accepted",
            not missing,
            f"{len(got_set)}/{len(want)} accepted, {len(missing)} missing",
        )
        ok &= checks.check(f"{label}: none left on the server", not left, f"{len(left)} left")
    return ok


def profile_summary(path: Path, top: int = 25) -> str:
    """The hottest frames of a py-spy collapsed-stack file: by own time and inclusive."""
    own: dict[str, int] = {}
    incl: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        n = int(count_text)
        total += n
        frames = stack.split(";")
        own[frames[-1]] = own.get(frames[-1], 0) + n
        for frame in set(frames):
            incl[frame] = incl.get(frame, 0) + n
    out = [f"{total} samples in {path.name}", "", "own time (% of samples):"]
    for frame, n in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
        out.append(f"  {100 * n / total:5.1f}%  {frame}")
    out += ["", "inclusive time (% of samples):"]
    for frame, n in sorted(incl.items(), key=lambda kv: -kv[1])[:top]:
        out.append(f"  {100 * n / total:5.1f}%  {frame}")
    return "\n".join(out)


def names(prefix: str, n: int) -> list[str]:
    return [f"{prefix}-{i:05d}" for i in range(n)]


def now_stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()
