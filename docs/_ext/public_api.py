"""Where the public names of rainbow-aio are defined, read from the source (no import).

Used by the Sphinx configuration (``docs/conf.py``), which takes the docstrings of type
aliases from here, and by the tests (``tests/test_reference.py``), which check that every
public name has a docstring and a place in the API reference.

A package re-exports names from private modules (``from ._config import SubmitRetry``);
:func:`defined_in` follows those imports to the module that assigns or defines the name.
A type alias keeps its docstring as the string literal right after its assignment, which
only the source shows: at run time ``SubmitRetry.__doc__`` is ``typing.Literal``'s.
"""

from __future__ import annotations

import ast
import importlib.util
from functools import cache
from pathlib import Path

#: the packages whose ``__all__`` is public
PUBLIC_PACKAGES = (
    "rainbow_aio",
    "rainbow_aio.poller",
    "rainbow_aio.server",
    "rainbow_aio.testing",
    "rainbow_aio.agent",
)


@cache
def _tree(module: str) -> ast.Module:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise LookupError(f"no source for module {module}")
    return ast.parse(Path(spec.origin).read_text(encoding="utf-8"))


def _absolute(module: str, node: ast.ImportFrom) -> str:
    """The module an ``ImportFrom`` in ``module`` names, made absolute."""
    if not node.level:
        return node.module or ""
    is_package = _is_package(module)
    parts = module.split(".")
    base = parts if is_package else parts[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _is_package(module: str) -> bool:
    spec = importlib.util.find_spec(module)
    return spec is not None and spec.submodule_search_locations is not None


def defined_in(module: str, name: str) -> tuple[str, ast.stmt]:
    """The module that defines ``name`` as seen from ``module``, and the statement that
    defines it there (a class, a function, or an assignment), following re-exports and
    lazy imports named in a ``_LAZY`` table (``{"RainbowServer": ".server"}``)."""
    tree = _tree(module)
    for node in tree.body:
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            if node.name == name:
                return module, node
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                return module, node
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom):
            continue
        for alias in node.names:
            if (alias.asname or alias.name) == name:
                return defined_in(_absolute(module, node), alias.name)
    lazy = _lazy_table(tree)
    if name in lazy:
        target = lazy[name]
        if target.startswith("."):
            target = module + target
        return defined_in(target, name)
    raise LookupError(f"{name} is not defined in {module}")


def _lazy_table(tree: ast.Module) -> dict[str, str]:
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "_LAZY" for t in node.targets)
            and isinstance(node.value, ast.Dict)
        ):
            return {
                ast.literal_eval(k): ast.literal_eval(v)
                for k, v in zip(node.value.keys, node.value.values, strict=True)
                if k is not None
            }
    return {}


def docstring(module: str, name: str) -> str | None:
    """The docstring ``name`` has where it is defined: a class's or a function's own, or
    the string literal right after an assignment; None if it has none."""
    where, node = defined_in(module, name)
    if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
        return ast.get_docstring(node)
    body = _tree(where).body
    following = body[body.index(node) + 1] if node in body[:-1] else None
    if (
        isinstance(following, ast.Expr)
        and isinstance(following.value, ast.Constant)
        and isinstance(following.value.value, str)
    ):
        return following.value.value
    return None
