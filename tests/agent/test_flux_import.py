"""Without Flux's bindings the Flux executor says what to install (no Flux needed)."""

from __future__ import annotations

import sys

import pytest

from rainbow_aio import RainbowError
from rainbow_aio.agent._flux import FluxExecutor, FluxUnavailableError


def test_missing_bindings_name_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "flux", None)  # import flux raises ImportError
    with pytest.raises(FluxUnavailableError) as caught:
        FluxExecutor("local:///nowhere")
    message = str(caught.value)
    assert "PYTHONPATH" in message
    assert "lib/python3.11/site-packages" in message
    assert "flux-python==0.88.0" in message
    assert "LD_LIBRARY_PATH" in message
    assert isinstance(caught.value, RainbowError)
