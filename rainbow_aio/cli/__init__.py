"""The ``rainbow-aio`` command line.

Each subcommand lives in its own module with ``add_parser(subparsers)``, which registers
the subcommand and sets defaults on its parser:

- ``func``: a callable taking the parsed namespace and returning the process exit code;
- ``check`` (optional): a callable ``(parser, args)`` for what only the whole command line
  can decide (a credential from the environment, two ways of giving one value); it
  reports a mistake through ``parser.error``, so before anything is printed or sent;
- ``leftovers`` (optional): ``"ignore"`` when options and words the subcommand does not
  know are ignored, with a note on stderr, as the original rainbow scripts ignored them
  (``register``, ``submit``, ``poll``); otherwise they are a bad command line.

Exit codes: 0 done, 1 the command could not do its job, 2 a bad command line, 130 Ctrl-C.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Mapping, Sequence
from typing import NoReturn

from .._version import __version__
from ._common import interrupted

# subcommand name -> module (relative to this package) that defines it
_SUBCOMMANDS = {
    "serve": ".serve",
    "register": ".jobs",
    "submit": ".jobs",
    "poll": ".jobs",
    "demo": ".demo",
    "agent": ".agent",
}


class _Parser(argparse.ArgumentParser):
    """Reports a bad command line in one stderr line (with where to look), exit code 2.

    Subcommand parsers are of this class too, so their errors point at their own
    ``--help`` (``rainbow-aio submit --help``).
    """

    #: the subcommands' parsers by name (set by build_parser on the top-level parser)
    subcommands: Mapping[str, argparse.ArgumentParser]

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see: {self.prog} --help)\n")


def build_parser() -> _Parser:
    parser = _Parser(
        prog="rainbow-aio",
        description="🌈️ rainbow-aio: drive the rainbow multi-cluster scheduler",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="subcommand", metavar="COMMAND", required=True)
    seen: set[str] = set()
    for module_name in _SUBCOMMANDS.values():
        if module_name in seen:
            continue
        seen.add(module_name)
        module = importlib.import_module(module_name, __name__)
        module.add_parser(sub)
    parser.subcommands = sub.choices
    return parser


def _leftovers(extras: list[str]) -> str:
    """What was left over, for a message: unknown options by name (never the value after
    ``=``), other words only counted. Either may be a credential typed in the wrong place."""
    options = [word.split("=", 1)[0] for word in extras if word.startswith("-")]
    words = len(extras) - len(options)
    parts = []
    if options:
        parts.append(f"unknown option{'s' * (len(options) > 1)} {' '.join(options)}")
    if words:
        parts.append(f"{words} word{'s' * (words > 1)}")
    return " and ".join(parts)


def parse(parser: _Parser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse ``argv`` and run the subcommand's own checks; a mistake exits with code 2."""
    args, extras = parser.parse_known_args(argv)
    command = parser.subcommands[args.subcommand]
    lenient = getattr(args, "leftovers", None) == "ignore"
    if extras and not lenient:
        command.error(f"{_leftovers(extras)} left over")
    check = getattr(args, "check", None)
    if check is not None:
        check(command, args)
    if extras:
        print(
            f"{command.prog}: note: ignoring {_leftovers(extras)}, as the original script did",
            file=sys.stderr,
        )
    return args


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parse(build_parser(), argv)
        code: int = args.func(args)
    except KeyboardInterrupt:
        return interrupted()
    return code
