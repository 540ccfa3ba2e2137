"""The embedded rainbow scheduler server (asyncio gRPC on SQLite).

``RainbowServer`` runs in-process (tests, demos); ``rainbow-aio serve`` runs it as a
process. See ``_server.RainbowServer`` for the guarantees and ``_store`` for the
storage design.
"""

from __future__ import annotations

from ._server import RainbowServer, ServerStartError, ServerTLSConfig

__all__ = ["RainbowServer", "ServerStartError", "ServerTLSConfig"]
