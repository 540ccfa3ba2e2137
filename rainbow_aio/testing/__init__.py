"""Testing support: a real embedded rainbow server for your own tests.

- pytest plugin (loaded automatically when rainbow-aio is installed): the fixtures
  ``rainbow_server`` and ``rainbow_client``, see :mod:`rainbow_aio.testing._plugin`;
- :class:`ServerProcess`: runs ``python -m rainbow_aio serve`` as a child process on a
  free loopback port, for tests that kill, restart or signal a real server.

Importing this module does not require pytest; the fixtures are defined only when pytest
is importable.
"""

from __future__ import annotations

from importlib.util import find_spec

from ._process import ServerProcess, ServerProcessError

__all__ = ["ServerProcess", "ServerProcessError"]

if find_spec("pytest") is not None:
    # the plugin's hook, where pytest looks for it (a hook, not a name for users)
    from ._plugin import pytest_fixture_setup as pytest_fixture_setup
    from ._plugin import rainbow_client, rainbow_server

    __all__ += ["rainbow_client", "rainbow_server"]
