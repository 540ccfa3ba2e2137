"""The cluster agent: accept jobs that fit, journal them, run them, re-attach after a crash.

See docs/reference/agent.md. The executor protocol (``Executor``, ``Launch``, ``Ended``,
``LaunchError``) is in ``_executor.py``.
"""

from __future__ import annotations

from ._executor import Ended, Executor, Launch, LaunchError

__all__ = ["Ended", "Executor", "Launch", "LaunchError"]
