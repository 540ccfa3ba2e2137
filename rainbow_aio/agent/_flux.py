"""The Flux executor: each accepted job becomes a job of a Flux instance.

Flux's Python bindings are optional: they are imported when a :class:`FluxExecutor` is
made, and a missing ``flux`` module raises :class:`FluxUnavailableError` saying what to
install. The bindings' handle is not thread-safe and its calls block, so one thread of
the executor owns the handle and runs its reactor; the event loop hands it work through
a pipe and gets the answers back with ``call_soon_threadsafe``. Nothing here blocks the
event loop.

Exactly once through a kill -9 of the agent: :meth:`FluxExecutor.start` submits the job
*held* (urgency 0, so Flux cannot run it yet), writes the Flux job id to the job's folder
(``flux-jobid``, fsynced), and only then releases it. Every job is also named after its
rainbow job (``rainbow-<cluster>-<job id>``). After a restart, ``reattach(launch, None)``
reads the folder's file, else searches the instance for a job of that name: a released
job is waited on; a job still held never ran, so it is cancelled and ``None`` is returned
(the agent starts the job again); no job at all returns ``None``. A nonce written to the
folder (``flux-submit``) before the submission, and carried in the jobspec, tells this
launch's Flux job from an older one of the same name (a reset server reusing ids).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import threading
import uuid
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from .._exceptions import RainbowError
from ._executor import Ended, Launch, LaunchError, job_environment

__all__ = ["FLUX_URI_ENV", "FluxExecutor", "FluxUnavailableError"]

_log = logging.getLogger("rainbow_aio.agent.flux")

FLUX_URI_ENV = "FLUX_URI"
JOBID_FILE = "flux-jobid"
"""The file in a job's folder that holds its Flux job id, written before it may run."""
NONCE_FILE = "flux-submit"
"""The file in a job's folder that holds the nonce of its submission, written before it:
a Flux job of the same name without this nonce is an older job's (another server's job
of the same id), never this one."""
STDOUT_FILE = "stdout"
STDERR_FILE = "stderr"

_URGENCY_HOLD = 0
_URGENCY_DEFAULT = 16

_T = TypeVar("_T")


class FluxUnavailableError(RainbowError):
    """Flux's Python bindings cannot be imported, or the instance cannot be reached.
    The message says what to install or set."""


_INSTALL_HINT = (
    "the Flux executor needs Flux's Python bindings (the `flux` module) matching the "
    "instance: put PREFIX/lib/python3.11/site-packages of a flux-core build on PYTHONPATH "
    "(and pip install cffi pyyaml ply), or pip install flux-python==0.88.0 ply and set "
    "LD_LIBRARY_PATH=PREFIX/lib"
)


def import_flux() -> Any:
    """The ``flux`` package, or :class:`FluxUnavailableError` saying what to install."""
    try:
        import flux  # type: ignore[import-not-found,unused-ignore]
        import flux.job  # type: ignore[import-not-found,unused-ignore]
        import flux.job.kvslookup  # type: ignore[import-not-found,unused-ignore]
        import flux.resource  # type: ignore[import-not-found,unused-ignore]
    except ImportError as exc:
        raise FluxUnavailableError(f"{_INSTALL_HINT} ({exc})") from exc
    return flux


def job_name(launch: Launch) -> str:
    """The Flux job name that tags a rainbow job's submission."""
    return f"rainbow-{launch.cluster}-{launch.job_id}"


class _Reactor:
    """A thread that owns one Flux handle and runs its reactor.

    :meth:`call` runs ``work(handle, done)`` in that thread; ``work`` starts Flux futures
    whose callbacks end by calling ``done(value)`` or ``done(exception)``, which resolves
    the asyncio future that :meth:`call` awaits.
    """

    def __init__(self, flux: Any, uri: str | None) -> None:
        self._flux = flux
        self._uri = uri
        self._queue: deque[Callable[[Any], None]] = deque()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._keep: set[Any] = set()  # Flux futures and watchers in flight (kept alive)
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="rainbow-flux", daemon=True)

    # -- the reactor thread -------------------------------------------------------------

    def _run(self) -> None:
        try:
            handle = self._flux.Flux(self._uri) if self._uri else self._flux.Flux()
            watcher = handle.fd_watcher_create(
                self._wake_r, self._on_wake, events=self._flux.constants.FLUX_POLLIN
            )
            watcher.start()
        except BaseException as exc:  # reported to the opener
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            while not self._closed:
                self._drain(handle)
                if self._closed:
                    break
                handle.reactor_run()
        finally:
            # the bindings close the handle when it is collected (they refuse a close())
            watcher.stop()
            self._keep.clear()

    def _on_wake(self, handle: Any, *_: Any) -> None:
        with contextlib.suppress(BlockingIOError):
            os.read(self._wake_r, 4096)
        self._drain(handle)
        if self._closed:
            handle.reactor_stop()

    def _drain(self, handle: Any) -> None:
        while self._queue:
            self._queue.popleft()(handle)

    # -- the event loop's side ----------------------------------------------------------

    async def open(self) -> None:
        self._thread.start()
        await asyncio.to_thread(self._ready.wait)
        if self._error is not None:
            uri = self._uri or os.environ.get(FLUX_URI_ENV) or "(no FLUX_URI)"
            raise FluxUnavailableError(
                f"cannot connect to the Flux instance at {uri}: {self._error}"
            ) from self._error

    async def call(self, work: Callable[[Any, Callable[[object], None]], None]) -> Any:
        """Run ``work(handle, done)`` in the reactor thread; the value passed to ``done``
        (raised if it is an exception)."""
        if self._closed:
            raise FluxUnavailableError("the Flux executor is closed")
        loop = asyncio.get_running_loop()
        result: asyncio.Future[Any] = loop.create_future()

        def settle(value: object) -> None:
            if result.done():
                return
            if isinstance(value, BaseException):
                result.set_exception(value)
            else:
                result.set_result(value)

        def done(value: object) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits
                loop.call_soon_threadsafe(settle, value)

        def run(handle: Any) -> None:
            try:
                work(handle, done)
            except Exception as exc:  # handed to the awaiting task
                done(exc)

        self._queue.append(run)
        os.write(self._wake_w, b"x")
        return await result

    def then(
        self, future: Any, get: Callable[[Any], object], done: Callable[[object], None]
    ) -> None:
        """When the Flux ``future`` is ready: ``done(get(future))`` or the error it raises."""
        self._keep.add(future)

        def ready(fut: Any) -> None:
            self._keep.discard(fut)
            try:
                value = get(fut)
            except Exception as exc:  # handed to the awaiting task
                done(exc)
            else:
                done(value)

        future.then(ready)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._thread.is_alive():
            os.write(self._wake_w, b"x")
            await asyncio.to_thread(self._thread.join)
        os.close(self._wake_r)
        os.close(self._wake_w)


class FluxExecutor:
    """Runs each job as a job of a Flux instance (see the module's docstring).

    ``uri`` is the instance's URI (default: ``FLUX_URI`` from the environment, as inside
    ``flux start`` or ``flux alloc``). The jobspec comes from the launch: its ``argv``
    (no shell), ``nodes`` and ``tasks``, its folder as the working directory with
    ``stdout`` and ``stderr`` there, the agent's environment (without its secrets) plus
    the job's variables (:attr:`Launch.environment`), and its time limit as the Flux
    duration.
    :meth:`free_nodes` is the instance's free node count. Use it as an async context
    manager, or call :meth:`open` first and :meth:`aclose` last.
    """

    name = "flux"

    def __init__(self, uri: str | None = None) -> None:
        self._uri = uri or os.environ.get(FLUX_URI_ENV) or None
        self._flux = import_flux()
        self._reactor = _Reactor(self._flux, self._uri)
        self._opened = False

    @property
    def uri(self) -> str | None:
        """The instance's URI as given (None: ``FLUX_URI``, or the enclosing instance)."""
        return self._uri

    async def open(self) -> FluxExecutor:
        """Connect to the instance (done by the first call that needs it)."""
        if not self._opened:
            self._opened = True
            await self._reactor.open()
        return self

    async def __aenter__(self) -> FluxExecutor:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop the reactor thread and close the handle; Flux's jobs keep running."""
        await self._reactor.aclose()

    async def _call(self, work: Callable[[Any, Callable[[object], None]], None]) -> Any:
        await self.open()
        return await self._reactor.call(work)

    # -- the protocol -------------------------------------------------------------------

    async def free_nodes(self) -> int | None:
        """The instance's free nodes now: the agent's capacity when ``--nodes`` is not given."""
        flux = self._flux

        def work(handle: Any, done: Callable[[object], None]) -> None:
            self._reactor.then(
                flux.resource.resource_list(handle), lambda f: int(f.get().free.nnodes), done
            )

        return int(await self._call(work))

    def jobspec(self, launch: Launch, nonce: str = "") -> Any:
        """The Flux jobspec for ``launch`` (see the class's docstring)."""
        if launch.nodes < 1 or launch.tasks < launch.nodes:
            raise LaunchError(
                f"flux needs at least one task per node: nodes={launch.nodes}, tasks={launch.tasks}"
            )
        try:
            spec = self._flux.job.JobspecV1.from_command(
                list(launch.argv),
                num_tasks=launch.tasks,
                num_nodes=launch.nodes,
                cwd=str(launch.folder),
                environment={**job_environment(), **launch.environment},
                name=job_name(launch),
                output=str(launch.folder / STDOUT_FILE),
                error=str(launch.folder / STDERR_FILE),
            )
            if launch.time_limit is not None:
                spec.duration = float(launch.time_limit)
        except (ValueError, TypeError) as exc:
            raise LaunchError(f"flux rejects the job: {exc}") from exc
        spec.setattr(
            "user.rainbow", {"cluster": launch.cluster, "job_id": launch.job_id, "nonce": nonce}
        )
        return spec

    async def start(self, launch: Launch) -> str:
        """Submit the job held, record its Flux id in its folder, then release it; the
        Flux id is the handle."""
        nonce = uuid.uuid4().hex
        spec = self.jobspec(launch, nonce)
        try:
            await asyncio.to_thread(_write_durably, launch.folder, NONCE_FILE, nonce, make=True)
        except OSError as exc:
            raise LaunchError(
                f"cannot write the job folder {launch.folder}: {exc.strerror or exc}"
            ) from None
        flux = self._flux

        def submit(handle: Any, done: Callable[[object], None]) -> None:
            future = flux.job.submit_async(handle, spec, urgency=_URGENCY_HOLD)
            self._reactor.then(future, lambda f: int(f.get_id()), done)

        try:
            jobid = int(await self._call(submit))
        except OSError as exc:
            # the instance refused the jobspec (unsatisfiable resources, bad duration)
            raise LaunchError(f"flux refused the job: {exc.strerror or exc}") from exc
        # the durable trace first, then the job may run
        await asyncio.to_thread(_write_durably, launch.folder, JOBID_FILE, str(jobid))
        await self._release(jobid)
        return str(jobid)

    async def _release(self, jobid: int) -> None:
        def work(handle: Any, done: Callable[[object], None]) -> None:
            future = handle.rpc("job-manager.urgency", {"id": jobid, "urgency": _URGENCY_DEFAULT})
            self._reactor.then(future, lambda f: f.get(), done)

        await self._call(work)

    async def wait(self, launch: Launch, handle: str) -> Ended:
        """How the Flux job ended (its exit code, or why it did not run)."""
        flux = self._flux
        jobid = int(handle)

        def work(h: Any, done: Callable[[object], None]) -> None:
            self._reactor.then(flux.job.result_async(h, jobid), lambda f: f.get_dict(), done)

        result = await self._call(work)
        return _ended(launch, result)

    async def cancel(self, launch: Launch, handle: str) -> None:
        """Cancel the Flux job (nothing to do if it has ended already)."""
        flux = self._flux
        jobid = int(handle)

        def work(h: Any, done: Callable[[object], None]) -> None:
            future = flux.job.cancel_async(h, jobid, "cancelled by the rainbow agent")
            self._reactor.then(future, lambda f: f.get(), done)

        try:
            await self._call(work)
        except OSError as exc:
            # the job is already inactive (EINVAL) or unknown (ENOENT): nothing to stop
            if exc.errno not in (errno.EINVAL, errno.ENOENT, errno.EPERM):
                raise

    async def reattach(self, launch: Launch, handle: str | None) -> str | Ended | None:
        """After a restart: the Flux id to wait on, how the job ended, or None when it
        was certainly never released to run (found by its folder's record or by name
        and nonce)."""
        if handle is None:
            recorded = await asyncio.to_thread(_read, launch.folder, JOBID_FILE)
            if recorded is not None:
                # any form Flux prints (decimal, f58...) is accepted
                handle = str(int(self._flux.job.JobID(recorded)))
        if handle is None:
            return await self._find_submitted(launch)
        state = await self._state(int(handle))
        if state is None:
            return Ended(None, f"flux job {handle} is unknown to the instance (restarted?)")
        if state["urgency"] == _URGENCY_HOLD and state["active"]:
            await self._release(int(handle))
        if not state["active"]:
            return await self.wait(launch, handle)
        return handle

    async def _state(self, jobid: int) -> dict[str, Any] | None:
        """The job's ``active`` and ``urgency``, or None when the instance has no such job."""
        flux = self._flux

        def work(h: Any, done: Callable[[object], None]) -> None:
            future = flux.job.job_list_id(h, jobid, attrs=["state", "urgency"])
            self._reactor.then(future, lambda f: f.get_job(), done)

        try:
            job = await self._call(work)
        except FileNotFoundError:
            return None
        inactive = flux.constants.FLUX_JOB_STATE_INACTIVE
        return {"active": job["state"] != inactive, "urgency": job.get("urgency")}

    async def _nonce(self, jobid: int) -> str | None:
        """The nonce in the jobspec of a Flux job (None: none there)."""
        flux = self._flux

        def work(h: Any, done: Callable[[object], None]) -> None:
            future = flux.job.kvslookup.job_info_lookup(h, jobid, keys=["jobspec"])
            self._reactor.then(future, lambda f: f.get_decode()["jobspec"], done)

        spec = await self._call(work)
        found = spec.get("attributes", {}).get("user", {}).get("rainbow", {}).get("nonce")
        return found if isinstance(found, str) else None

    async def _find_submitted(self, launch: Launch) -> str | Ended | None:
        """The job that ``start`` submitted before the agent died, by its name."""
        flux = self._flux
        name = job_name(launch)

        def work(h: Any, done: Callable[[object], None]) -> None:
            future = flux.job.job_list(h, attrs=["state", "urgency"], name=name)
            self._reactor.then(future, lambda f: f.get_jobs(), done)

        jobs: list[dict[str, Any]] = sorted(await self._call(work), key=lambda j: j["id"])
        nonce = await asyncio.to_thread(_read, launch.folder, NONCE_FILE)
        if nonce is not None:  # else the folder is lost: the name is all there is
            jobs = [job for job in jobs if await self._nonce(job["id"]) == nonce]
        inactive = flux.constants.FLUX_JOB_STATE_INACTIVE
        released = [j for j in jobs if j.get("urgency") != _URGENCY_HOLD]
        for held in (j for j in jobs if j.get("urgency") == _URGENCY_HOLD):
            if held["state"] != inactive:  # never ran: it must not run now
                await self.cancel(launch, str(held["id"]))
        if not released:
            return None
        if len(released) > 1:
            _log.warning(
                "job %s of %s has %d released Flux jobs; following the first",
                launch.job_id,
                launch.cluster,
                len(released),
            )
        first = released[0]
        await asyncio.to_thread(_write_durably, launch.folder, JOBID_FILE, str(first["id"]))
        if first["state"] == inactive:
            return await self.wait(launch, str(first["id"]))
        return str(first["id"])


def _write_durably(folder: Path, name: str, text: str, *, make: bool = False) -> None:
    """``folder/name`` holds ``text`` (whole, fsynced, with the folder's entry) or is
    unchanged; ``make``: the folder is made first if missing."""
    if make:
        folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    tmp = folder / (name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as out:
        out.write(f"{text}\n")
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read(folder: Path, name: str) -> str | None:
    try:
        text = (folder / name).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    return text or None  # empty: the write was cut short, so the job was never released


def _ended(launch: Launch, result: dict[str, Any]) -> Ended:
    """An :class:`Ended` from the dict of ``flux_job_result``."""
    kind = result.get("exception_type")
    note = result.get("exception_note") or ""
    status = result.get("waitstatus")
    if kind == "cancel":
        return Ended(None, "cancelled")
    if kind == "timeout":
        limit = launch.time_limit
        return Ended(None, f"timed out after {limit:g} s" if limit else "timed out")
    if status is None:  # it never ran
        return Ended(None, f"flux {kind or 'exception'}: {note}".rstrip(": "))
    if os.WIFSIGNALED(status):
        return Ended(None, f"killed by {signal.Signals(os.WTERMSIG(status)).name}")
    code = os.WEXITSTATUS(status)
    if code == 127 and kind == "exec":
        return Ended(None, f"command not found: {launch.argv[0]}")
    if kind is not None and result.get("exception_severity") == 0 and code == 0:
        return Ended(None, f"flux {kind}: {note}".rstrip(": "))
    return Ended(code, f"exit {code}")
