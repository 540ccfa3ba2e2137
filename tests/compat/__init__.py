"""The compatibility suite: rainbow-aio against the real Go rainbow server.

The server is found through ``RAINBOW_GO_SERVER``: a build of the Go rainbow server
(v0.1.0-draft, the API of February 2024). This repository's CI builds one with ``bash
../shared/peers/build-go-server.sh .ci-cache/rainbow-go-server``; any build of that
server will do. When the variable is unset, this package is skipped with one reason
(raised here, when the package is imported); under ``CI=true`` collection fails instead,
so CI never passes by skipping the server.

Each module gets its own Go server process (fixtures in ``support/gofixtures.py``) on a
loopback port the kernel picks, with a fresh database in a temporary folder; tests use
cluster names of their own, so they can share it. Every module is marked ``compat``:
``tox -e compat`` runs them all, the long ones (also marked ``slow``) included.
"""

from __future__ import annotations

from support.peers import go_server_binary

GO_SERVER = go_server_binary()
