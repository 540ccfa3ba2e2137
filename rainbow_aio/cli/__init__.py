"""The ``rainbow-aio`` command line.

Each subcommand lives in its own module with ``add_parser(subparsers)``, which registers
the subcommand and sets ``func`` on its parser: a callable taking the parsed namespace
and returning the process exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import NoReturn

# subcommand name -> module (relative to this package) that defines it
_SUBCOMMANDS = {
    "serve": ".serve",
    "register": ".jobs",
    "submit": ".jobs",
    "poll": ".jobs",
    "demo": ".demo",
}


class _Parser(argparse.ArgumentParser):
    """Reports a bad command line in one stderr line (with where to look), exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see: {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="rainbow-aio",
        description="🌈️ rainbow-aio: drive the rainbow multi-cluster scheduler",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    seen: set[str] = set()
    for module_name in _SUBCOMMANDS.values():
        if module_name in seen:
            continue
        seen.add(module_name)
        module = importlib.import_module(module_name, __name__)
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return code
