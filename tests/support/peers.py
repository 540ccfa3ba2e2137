"""Finding the test peers that live outside this repository.

The compatibility tests run against two peers that this repository's CI provides
(``.ci/run``) and that a user may point at: a build of the Go rainbow server
(``RAINBOW_GO_SERVER``) and the original Python bindings (``RAINBOW_ORIGINAL_BINDINGS``).
The functions here are called when a test package or module is imported: when the
variable is unset, everything there is skipped with one reason, and under ``CI=true``
collection fails instead, so CI never passes by skipping them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

__all__ = ["BINDINGS_ENV", "GO_SERVER_ENV", "go_server_binary", "original_bindings"]

GO_SERVER_ENV = "RAINBOW_GO_SERVER"
BINDINGS_ENV = "RAINBOW_ORIGINAL_BINDINGS"


def _require(variable: str, what: str) -> Path:
    value = os.environ.get(variable, "")
    if value:
        return Path(value)
    message = (
        f"{variable} is not set: these tests need {what} "
        "(see docs/go-server.md, 'Running the compatibility suite')"
    )
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true, but {message}", pytrace=False)
    pytest.skip(message, allow_module_level=True)


def go_server_binary() -> Path:
    """The Go server binary that ``RAINBOW_GO_SERVER`` names."""
    path = _require(GO_SERVER_ENV, "a build of the Go rainbow server")
    if not path.is_file() or not os.access(path, os.X_OK):
        pytest.fail(f"{GO_SERVER_ENV}={path} is not an executable file", pytrace=False)
    return path.resolve()


def original_bindings() -> Path:
    """The folder of the original Python bindings that ``RAINBOW_ORIGINAL_BINDINGS``
    names (it holds ``rainbow/protos`` and ``examples/flux``)."""
    path = _require(BINDINGS_ENV, "the original rainbow Python bindings (python-v1)")
    if not (path / "rainbow" / "protos" / "rainbow_pb2.py").is_file():
        pytest.fail(f"{BINDINGS_ENV}={path} holds no rainbow/protos/rainbow_pb2.py", pytrace=False)
    return path.resolve()
