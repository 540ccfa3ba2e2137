"""Helpers for the agent tests (tests/agent, tests/compat/test_agent.py): a cluster with
its journal and workdir (:class:`Site`), an agent running in the test's event loop, or
as a real ``rainbow-aio agent`` process (killed by its pid afterwards), and checks that
no job process is left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from support.waiting import wait_until

from rainbow_aio import PollerOptions, RainbowClient, Shutdown
from rainbow_aio.agent import (
    Agent,
    AgentOptions,
    AgentStats,
    JobRecord,
    JobStateName,
    Journal,
    JournalCorruptError,
    JournalError,
)

FAST = PollerOptions(min_interval=0.01, max_interval=0.05)


@dataclass
class Site:
    """A cluster with its credentials, a journal path and a workdir."""

    client: RainbowClient
    server: Any  # anything with an .address: RainbowServer, GoServer
    name: str
    token: str = field(repr=False)
    secret: str = field(repr=False)
    root: Path

    @property
    def journal(self) -> Path:
        return self.root / "journal.db"

    @property
    def workdir(self) -> Path:
        return self.root / "jobs"

    def options(self, **changes: Any) -> AgentOptions:
        base: dict[str, Any] = {
            "cluster": self.name,
            "journal": self.journal,
            "workdir": self.workdir,
            "nodes": 4,
            "allow_root": True,  # the tests run as root here; the refusal has its own test
            "poller": FAST,
            "drain_timeout": 10.0,
        }
        return AgentOptions(**(base | changes))

    async def submit(self, command: str, *, nodes: int = 1, tasks: int = 1) -> int:
        job_id = await self.client.submit_job(
            self.name, self.token, command, nodes=nodes, tasks=tasks
        )
        assert job_id is not None
        return job_id

    async def listed(self) -> set[int]:
        return {job.id for job in await self.client.request_jobs(self.name, self.secret)}

    def records(self) -> dict[int, JobRecord]:
        try:
            with Journal.read(self.journal) as journal:
                return {r.id: r for r in journal.records()}
        except JournalError as exc:  # not there yet, or being created by the agent
            if isinstance(exc, JournalCorruptError):
                raise
            return {}


@contextlib.asynccontextmanager
async def running_agent(
    site: Site, options: AgentOptions | None = None, **kwargs: Any
) -> AsyncIterator[tuple[Agent, Shutdown, asyncio.Task[AgentStats]]]:
    """An agent running in this loop; stopped (gracefully) when the block ends."""
    agent = Agent(site.client, site.secret, options or site.options(), **kwargs)
    stop = Shutdown()
    task = asyncio.create_task(agent.run(stop))
    try:
        yield agent, stop, task
    finally:
        stop.request("test over")
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(task), 30)
        if not task.done():
            stop.force("test over")
            task.cancel()
        with contextlib.suppress(BaseException):
            await task


def agent_argv(site: Site, *extra: str) -> list[str]:
    """A ``rainbow-aio agent`` command line for ``site`` (secret from the environment)."""
    return [
        sys.executable,
        "-m",
        "rainbow_aio",
        "agent",
        "--host",
        site.server.address,
        "--cluster",
        site.name,
        "--journal",
        str(site.journal),
        "--workdir",
        str(site.workdir),
        "--allow-root",
        "--poll-interval",
        "0.02",
        "--progress",
        "never",
        *extra,
    ]


@contextlib.asynccontextmanager
async def agent_process(
    site: Site, *extra: str, stderr: Path | None = None
) -> AsyncIterator[asyncio.subprocess.Process]:
    """A real ``rainbow-aio agent`` process; killed (by its pid) if still running after."""
    env = {**os.environ, "RAINBOW_SECRET": site.secret, "PYTHONWARNINGS": "error"}
    err = open(stderr, "ab") if stderr else asyncio.subprocess.DEVNULL  # noqa: SIM115, ASYNC230
    try:
        proc = await asyncio.create_subprocess_exec(
            *agent_argv(site, *extra),
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=err,
        )
        try:
            yield proc
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                await proc.wait()
    finally:
        if stderr:
            err.close()  # type: ignore[union-attr]


def jobs_alive(workdir: Path) -> list[int]:
    """Pids of job processes still running in a folder of ``workdir`` (a job runs in
    its folder)."""
    return _processes(workdir, supervisors=False)


def supervisors_alive(workdir: Path) -> list[int]:
    """Pids of the job supervisors of ``workdir`` still running (they name it)."""
    return [pid for pid in _processes(workdir, supervisors=True) if pid not in jobs_alive(workdir)]


def _processes(workdir: Path, *, supervisors: bool) -> list[int]:
    found = []
    needle = os.fsencode(str(workdir))
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_bytes()
            cwd = os.fsencode(os.readlink(entry / "cwd"))
            cmdline = (entry / "cmdline").read_bytes() if supervisors else b""
        except OSError:
            continue
        if stat[stat.rfind(b")") + 2 :].split()[0] == b"Z":
            continue
        if cwd.startswith(needle + b"/") or (supervisors and needle in cmdline.split(b"\0")):
            found.append(int(entry.name))
    return found


def kill_job_processes(workdir: Path) -> None:
    """SIGKILL the jobs (their sessions) and supervisors of ``workdir`` still running."""
    for pid in jobs_alive(workdir) + supervisors_alive(workdir):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)


async def kill_9_soak(
    site: Site, *argv: str, jobs: int, kills: int, seed: str, within: float
) -> dict[int, str]:
    """The kill -9 soak, for any executor: ``jobs`` jobs each append their own token to
    one file; a real agent process (``argv`` added to its command line) is SIGKILLed at
    a random moment ``kills`` times and started again, then let finish and stopped with
    SIGTERM. Checks that every job is finished exactly once in the journal, the server
    lists none, every token is in the file exactly once, and the secret is in no log.
    Returns the tokens by job id."""
    out = site.root / "tokens"
    tokens: dict[int, str] = {}
    for start in range(0, jobs, 50):
        batch = range(start, min(jobs, start + 50))
        ids = await asyncio.gather(
            *(site.submit(f"sh -c 'echo token-{i} >> {out}'") for i in batch)
        )
        tokens.update({job_id: f"token-{i}" for job_id, i in zip(ids, batch, strict=True)})
    rng = random.Random(os.environ.get("SOAK_SEED", seed))

    def done() -> int:
        return sum(r.state is JobStateName.FINISHED for r in site.records().values())

    log = site.root / "agent.log"
    for _ in range(kills):
        async with agent_process(site, *argv, stderr=log) as proc:
            at = done() + rng.randint(10, max(11, jobs // (kills + 1)))
            await wait_until(
                lambda at=at, proc=proc: done() >= at or proc.returncode is not None,
                within=within,
            )
            assert proc.returncode is None, log.read_text()[-2000:]
            await asyncio.sleep(rng.uniform(0, 0.2))  # a random moment, not a count
            os.kill(proc.pid, signal.SIGKILL)
            await proc.wait()
    async with agent_process(site, *argv, stderr=log) as proc:
        await wait_until(lambda: done() == jobs, within=2 * within, what="every job to finish")
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 60) == 0
    records = site.records()
    assert {r.id for r in records.values() if r.state is JobStateName.FINISHED} == set(tokens)
    assert await site.listed() == set()
    seen = Counter(out.read_text().split())
    assert set(seen) == set(tokens.values())
    assert [t for t, n in seen.items() if n != 1] == []
    assert site.secret not in log.read_text()
    return tokens
