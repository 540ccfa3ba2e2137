"""The promises the repository's own files make to a new user and to CI.

- CI (``.ci/run``) runs exactly the test command that README.md gives people;
- that command's tox run covers the tests, lint, types and the generated-code check,
  with warnings as errors and Python's development mode;
- every dependency declares a lower bound that ``tox -e mindeps`` can pin.
"""

from __future__ import annotations

import configparser
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_test_command() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = [
        line.strip()
        for block in re.findall(r"```(?:bash|sh|console)?\n(.*?)```", readme, flags=re.S)
        for line in block.splitlines()
        if "-m tox" in line
    ]
    assert commands, "README.md shows no tox command in a code block"
    return commands[0]


def test_ci_runs_the_readme_test_command() -> None:
    command = readme_test_command()
    assert command == "python -m pip install 'tox>=4.11' && python -m tox"
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert command in ci_lines


def test_the_default_tox_run_covers_tests_lint_types_and_generated_code() -> None:
    tox = configparser.ConfigParser(interpolation=None)
    tox.read(ROOT / "tox.ini", encoding="utf-8")
    envlist = {env.strip() for env in re.split(r"[,\s]+", tox["tox"]["envlist"]) if env}
    assert envlist == {"py311", "lint", "types", "genproto"}
    assert "ruff check" in tox["testenv:lint"]["commands"]
    assert "ruff format --check" in tox["testenv:lint"]["commands"]
    assert "mypy" in tox["testenv:types"]["commands"]
    assert "--check" in tox["testenv:genproto"]["commands"]
    assert "PYTHONDEVMODE = 1" in tox["testenv"]["setenv"]
    for extra in ("soak", "mindeps"):
        assert f"testenv:{extra}" in tox


def test_warnings_are_errors_in_every_test_run() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    pytest_ini = pyproject["tool"]["pytest"]["ini_options"]
    assert pytest_ini["filterwarnings"][0] == "error"
    assert "--strict-markers" in pytest_ini["addopts"]


def test_every_dependency_has_a_lower_bound_that_mindeps_pins() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    out = subprocess.run(
        [sys.executable, str(ROOT / ".ci" / "min_constraints.py"), "--extras", "test"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    pins = dict(line.split("==") for line in out.splitlines())
    for requirement in pyproject["project"]["dependencies"]:
        name = re.split(r"[<>=!~ \[;]", requirement, maxsplit=1)[0].lower()
        assert name in pins, requirement
        assert f">={pins[name]}" in requirement.replace(" ", "")


def test_the_license_is_shipped_and_declared() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert pyproject["project"]["license"] == "MIT"
    assert (ROOT / "LICENSE").read_text(encoding="utf-8").startswith("MIT License")
    assert "LICENSE" in pyproject["project"]["license-files"]
