"""The public surface: ``rainbow_aio.__all__`` is complete, exact, and sorted per group.

``__all__`` is grouped by comment lines (``# client``, ``# errors``...); within a group the
names are in plain sorted order, so a reader finds a name where they expect it and a merge
of two additions does not reorder anything.
"""

from __future__ import annotations

import ast
import inspect
import json
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import rainbow_aio

INIT = Path(rainbow_aio.__file__)

# The names TEAM.md promises to every user of the package.
CONTRACT = {
    "RainbowClient",
    "RetryPolicy",
    "TLSConfig",
    "KeepAliveConfig",
    "RainbowServer",
    "ServerTLSConfig",
    "Job",
    "Registration",
    "AcceptResult",
    "AcceptStatus",
    "RainbowError",
}
POLLER_CONTRACT = {"Poller", "PollerGroup", "PolledJob", "PollerStats", "AcceptMode"}


def all_groups() -> dict[str, list[str]]:
    """``__all__``'s names, by the comment line that opens each group."""
    source = INIT.read_text(encoding="utf-8")
    lines = source.splitlines()
    tree = ast.parse(source)
    [node] = [
        n
        for n in tree.body
        if isinstance(n, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "__all__" for t in n.targets)
    ]
    assert node.end_lineno is not None
    groups: dict[str, list[str]] = {}
    current = "(before any group comment)"
    for line in lines[node.lineno : node.end_lineno - 1]:
        text = line.strip()
        if text.startswith("#"):
            current = text.lstrip("# ")
            groups.setdefault(current, [])
        elif text:
            groups.setdefault(current, []).append(ast.literal_eval(text.rstrip(",")))
    return groups


def test_all_is_exactly_the_grouped_list_in_the_source() -> None:
    flat = [name for names in all_groups().values() for name in names]
    assert flat == list(rainbow_aio.__all__)
    assert len(set(flat)) == len(flat), "a name is listed twice"


def test_each_group_is_sorted() -> None:
    for group, names in all_groups().items():
        assert names == sorted(names), f"group {group!r} is not sorted"


def test_every_listed_name_exists() -> None:
    for name in rainbow_aio.__all__:
        assert hasattr(rainbow_aio, name), name


def test_every_public_name_is_listed() -> None:
    public = {
        name
        for name, value in vars(rainbow_aio).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and name != "annotations"  # from __future__
    }
    assert public <= set(rainbow_aio.__all__), public - set(rainbow_aio.__all__)


def test_the_promised_names_are_exported() -> None:
    assert set(rainbow_aio.__all__) >= CONTRACT
    if hasattr(rainbow_aio, "Poller"):  # the poller lands in its own change
        assert set(rainbow_aio.__all__) >= POLLER_CONTRACT


def test_every_error_is_exported_and_derives_from_the_root() -> None:
    from rainbow_aio import _exceptions

    for name, value in vars(_exceptions).items():
        if inspect.isclass(value) and issubclass(value, Exception):
            if value.__module__ != _exceptions.__name__:
                continue
            assert issubclass(value, rainbow_aio.RainbowError), name
            assert name in rainbow_aio.__all__, name


def test_importing_the_package_leaves_the_server_and_sqlite_unloaded() -> None:
    """A client-only program pays for neither the embedded server nor SQLite; the server's
    names still work, on first use, and ``dir()`` lists them before and after."""
    probe = textwrap.dedent(
        """
        import json, sys
        import rainbow_aio

        def loaded():
            return sorted(
                name for name in sys.modules
                if name.startswith("rainbow_aio.server") or "sqlite3" in name
            )

        report = {"after_import": loaded(), "dir_before": dir(rainbow_aio)}
        from rainbow_aio import ServerTLSConfig
        import rainbow_aio.server as server_package
        report["same_objects"] = (
            rainbow_aio.RainbowServer is server_package.RainbowServer
            and ServerTLSConfig is server_package.ServerTLSConfig
        )
        report["after_use"] = loaded()
        report["dir_after"] = dir(rainbow_aio)
        try:
            rainbow_aio.NoSuchName
        except AttributeError as exc:
            report["unknown"] = str(exc)
        print(json.dumps(report))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], check=True, capture_output=True, text=True
    ).stdout
    report = json.loads(out)
    assert report["after_import"] == []
    assert "rainbow_aio.server" in report["after_use"]
    assert "sqlite3" in report["after_use"]  # so the check above would have seen it
    assert report["same_objects"] is True
    assert report["dir_before"] == report["dir_after"]
    public = {name for name in report["dir_before"] if not name.startswith("_")}
    exported = {name for name in rainbow_aio.__all__ if not name.startswith("_")}
    assert public == {*exported, "annotations", "poller", "server"}
    assert report["unknown"] == "module 'rainbow_aio' has no attribute 'NoSuchName'"
