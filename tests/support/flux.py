"""A real Flux instance for tests: ``flux start --test-size=N`` on this machine.

The Flux tests find a flux-core build through ``RAINBOW_FLUX_PREFIX`` (``.ci/run`` builds
one with ``../shared/peers/flux/build-flux.sh`` into ``.ci-cache/flux``). When it is
unset, the module that asks is skipped with one reason; under ``CI=true`` collection fails
instead, as for the Go server (``support/peers.py``). The bindings are taken from
``PREFIX/lib/python3.11/site-packages`` (``tox -e flux`` puts that on ``PYTHONPATH``; this
module adds it to ``sys.path`` for a run outside tox).

Every instance is stopped by ``flux shutdown --quiet`` (``flux start`` then exits 129) and
waited for; a signal to ``flux start`` alone would leave its brokers running.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

__all__ = ["FLUX_PREFIX_ENV", "FluxInstance", "flux_instance", "flux_prefix"]

FLUX_PREFIX_ENV = "RAINBOW_FLUX_PREFIX"
READY_LIMIT = 60.0
STOP_LIMIT = 60.0


def flux_prefix() -> Path:
    """The flux-core build that ``RAINBOW_FLUX_PREFIX`` names, its bindings importable."""
    value = os.environ.get(FLUX_PREFIX_ENV, "")
    if not value:
        message = (
            f"{FLUX_PREFIX_ENV} is not set: these tests need a flux-core 0.88 build "
            "(bash ../shared/peers/flux/build-flux.sh TARBALL PREFIX; see "
            "docs/running-jobs.md, 'Flux')"
        )
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true, but {message}", pytrace=False)
        pytest.skip(message, allow_module_level=True)
    prefix = Path(value).resolve()
    if not os.access(prefix / "bin" / "flux", os.X_OK):
        pytest.fail(f"{FLUX_PREFIX_ENV}={prefix} holds no bin/flux", pytrace=False)
    bindings = prefix / "lib" / "python3.11" / "site-packages"
    if str(bindings) not in sys.path:
        sys.path.append(str(bindings))
    return prefix


class FluxInstance:
    """One running ``flux start --test-size=size``; :attr:`uri` connects to it."""

    def __init__(self, prefix: Path, size: int) -> None:
        self.prefix = prefix
        self.size = size
        self.uri = ""
        self._proc: asyncio.subprocess.Process | None = None
        self._tmp = ""

    @property
    def flux(self) -> str:
        return str(self.prefix / "bin" / "flux")

    def env(self) -> dict[str, str]:
        """The environment of Flux's commands: a short ``TMPDIR`` of its own (the
        broker's socket path must fit in 108 bytes), job ids in plain ASCII (tox runs
        with the C locale, where ``flux`` cannot read back its own ``ƒ``), and without
        the test run's development mode (Flux's Python commands would print warnings)."""
        env = {**os.environ, "TMPDIR": self._tmp, "FLUX_F58_FORCE_ASCII": "1"}
        for name in ("PYTHONDEVMODE", "PYTHONWARNINGS"):
            env.pop(name, None)
        return env

    async def start(self) -> None:
        self._tmp = tempfile.mkdtemp(prefix="fx", dir="/tmp")
        uri_file = Path(self._tmp) / "uri"
        self._proc = await asyncio.create_subprocess_exec(
            self.flux,
            "start",
            f"--test-size={self.size}",
            "sh",
            "-c",
            f'echo "$FLUX_URI" > {uri_file}.part && mv {uri_file}.part {uri_file}; exec sleep inf',
            env=self.env(),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READY_LIMIT
        while not uri_file.exists():
            if self._proc.returncode is not None or loop.time() > deadline:
                await self.stop()
                raise RuntimeError(f"flux start --test-size={self.size} did not come up")
            await asyncio.sleep(0.05)
        self.uri = uri_file.read_text().strip()

    async def run(self, *args: str) -> tuple[int, str]:
        """``flux ARGS`` against this instance: its exit status and output."""
        proc = await asyncio.create_subprocess_exec(
            self.flux,
            *args,
            env={**self.env(), "FLUX_URI": self.uri},
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await proc.communicate()
        assert proc.returncode is not None
        return proc.returncode, out.decode()

    async def stop(self) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.returncode is None and self.uri:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.run("shutdown", "--quiet"), STOP_LIMIT)
        try:
            await asyncio.wait_for(proc.wait(), STOP_LIMIT)
        except TimeoutError:
            # last resort: the whole session (flux start and its brokers)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
        self._proc = None
        shutil.rmtree(self._tmp, ignore_errors=True)


@contextlib.asynccontextmanager
async def flux_instance(prefix: Path, size: int = 2) -> AsyncIterator[FluxInstance]:
    """A Flux instance of ``size`` brokers for the length of the block."""
    instance = FluxInstance(prefix, size)
    await instance.start()
    try:
        yield instance
    finally:
        await instance.stop()
