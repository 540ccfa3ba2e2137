"""Write a pip constraints file that pins every dependency to its declared lower bound.

    python .ci/min_constraints.py --extras test -o min.txt
    python -m pip install -c min.txt '.[test]'

pyproject.toml promises that the package works with the lowest version each ``>=`` (or
``==``) allows; ``tox -e mindeps`` installs exactly those versions and runs the tests, so a
bound that lies fails CI instead of a user's install. A dependency with no lower bound is
an error here: every dependency must say which oldest version it was tried with.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# name, optional [extras], then the specifier list up to an environment marker
_REQUIREMENT = re.compile(
    r"^\s*(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*(?P<spec>[^;]*)(;.*)?$"
)
_LOWER = re.compile(r"(>=|==|~=)\s*(?P<version>[^,\s]+)")


def lower_bounds(requirements: list[str]) -> dict[str, str]:
    """Map each requirement's name to the lowest version its specifiers allow."""
    pins: dict[str, str] = {}
    for requirement in requirements:
        match = _REQUIREMENT.match(requirement)
        if match is None:
            raise SystemExit(f"cannot parse requirement {requirement!r}")
        name = re.sub(r"[-_.]+", "-", match["name"]).lower()
        if name == "rainbow-aio":
            continue  # an extra that names another extra of this package
        bound = _LOWER.search(match["spec"])
        if bound is None:
            raise SystemExit(f"{requirement!r} has no lower bound (>=, == or ~=); add one")
        version = bound["version"]
        if name in pins and pins[name] != version:
            # two extras disagree: the higher floor is the one that must hold for both
            version = max(pins[name], version, key=_version_key)
        pins[name] = version
    return pins


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--extras", default="", help="comma-separated extras to include")
    parser.add_argument("-o", "--output", type=Path, help="file to write (default: stdout)")
    opts = parser.parse_args(argv)

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    requirements = list(project.get("dependencies", []))
    optional = project.get("optional-dependencies", {})
    for extra in filter(None, (e.strip() for e in opts.extras.split(","))):
        if extra not in optional:
            raise SystemExit(f"pyproject.toml has no extra named {extra!r}")
        requirements.extend(optional[extra])

    text = "".join(
        f"{name}=={version}\n" for name, version in sorted(lower_bounds(requirements).items())
    )
    if opts.output is None:
        sys.stdout.write(text)
    else:
        opts.output.parent.mkdir(parents=True, exist_ok=True)
        opts.output.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
