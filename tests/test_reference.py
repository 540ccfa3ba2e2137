"""Every public name has a docstring and a place in the API reference (docs/reference/).

The public names are those in the ``__all__`` of ``rainbow_aio``, ``rainbow_aio.poller``,
``rainbow_aio.server`` and ``rainbow_aio.testing``; their public methods and properties
count too, since the reference shows only members that have a docstring. The reference
pages name each object in an autodoc directive (``.. autoclass:: rainbow_aio.Poller``);
``tox -e docs`` builds them strictly, so a directive whose name does not import fails
there, and these tests fail here, without Sphinx, when a name is left out.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import re
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "docs" / "reference"


def _load_public_api() -> ModuleType:
    """``docs/_ext/public_api.py``, which the Sphinx configuration uses too."""
    spec = importlib.util.spec_from_file_location(
        "public_api", ROOT / "docs" / "_ext" / "public_api.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


public_api = _load_public_api()


def public_names() -> Iterator[tuple[str, str]]:
    """(package, name) for every name in a public package's ``__all__``."""
    for package in public_api.PUBLIC_PACKAGES:
        for name in importlib.import_module(package).__all__:
            if name != "__version__":
                yield package, name


def documented() -> dict[str, str]:
    """Each dotted name an autodoc directive of the reference documents -> its page."""
    found: dict[str, str] = {}
    for page in sorted(REFERENCE.glob("*.md")):
        text = page.read_text(encoding="utf-8")
        for target in re.findall(r"^\.\. auto\w+:: (\S+)$", text, flags=re.M):
            assert target not in found, f"{target} is documented twice"
            found[target] = page.name
    return found


def resolve(dotted: str) -> object:
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


@pytest.mark.parametrize(("package", "name"), list(public_names()))
def test_every_public_name_has_a_docstring(package: str, name: str) -> None:
    text = public_api.docstring(package, name)
    assert (text or "").strip(), f"{package}.{name} has no docstring"


def test_every_public_method_and_property_has_a_docstring() -> None:
    missing = []
    classes = {resolve(f"{p}.{n}") for p, n in public_names()}
    for cls in classes:
        if not inspect.isclass(cls):
            continue
        ours = [k for k in cls.__mro__ if k.__module__.startswith("rainbow_aio")]
        for name in sorted({name for k in ours for name in vars(k)}):
            if name.startswith("_"):
                continue
            # the definition a user gets: the first class in the MRO that has the name
            member = next(vars(k)[name] for k in cls.__mro__ if name in vars(k))
            if isinstance(member, staticmethod | classmethod):
                member = member.__func__
            if not (inspect.isfunction(member) or isinstance(member, property)):
                continue
            if not (member.__doc__ or "").strip():
                missing.append(f"{cls.__name__}.{name}")
    assert not missing, f"public members without a docstring: {missing}"


def test_every_public_name_is_in_the_reference() -> None:
    """Each public object is documented under one of its public names; the names of
    ``rainbow_aio`` and ``rainbow_aio.testing`` under exactly those names."""
    targets = documented()
    objects = {id(resolve(target)) for target in targets}
    for package, name in public_names():
        if package in ("rainbow_aio", "rainbow_aio.testing"):
            assert f"{package}.{name}" in targets, f"{package}.{name} is not in the reference"
        assert id(resolve(f"{package}.{name}")) in objects, f"{package}.{name}"


def test_the_reference_documents_only_public_names() -> None:
    public = {f"{package}.{name}" for package, name in public_names()}
    for target, page in documented().items():
        assert target in public, f"{page} documents {target}, which is not public"


def test_the_docstring_check_sees_what_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The source reading behind these tests tells a documented name from a bare one,
    through a re-export, for classes, functions and aliases alike."""
    package = tmp_path / "fakepkg"
    package.mkdir()
    (package / "__init__.py").write_text(
        "from ._impl import Bare, Documented, alias, bare_alias, function\n", encoding="utf-8"
    )
    (package / "_impl.py").write_text(
        textwrap.dedent(
            '''
            class Documented:
                """Here."""

            class Bare:
                pass

            def function():
                """Also here."""

            alias = int
            """An alias, documented."""

            bare_alias = str
            '''
        ),
        encoding="utf-8",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert public_api.docstring("fakepkg", "Documented") == "Here."
        assert public_api.docstring("fakepkg", "function") == "Also here."
        assert public_api.docstring("fakepkg", "alias") == "An alias, documented."
        assert public_api.docstring("fakepkg", "Bare") is None
        assert public_api.docstring("fakepkg", "bare_alias") is None
        with pytest.raises(LookupError):
            public_api.docstring("fakepkg", "Nowhere")
    finally:
        for name in ("fakepkg", "fakepkg._impl"):
            sys.modules.pop(name, None)
