"""Every third-party module dlspec imports is a declared dependency, and every declared one is pinned."""
from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
from pathlib import Path

import pytest
from support import ROOT, run_dlspec

from dlspec.cli import KEY_PACKAGES

tomllib = pytest.importorskip("tomllib")


def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _imported_modules(folder: Path) -> dict[str, str]:
    """Top-level third-party modules imported anywhere under `folder` (lazy imports included) -> one file."""
    found = {}
    for file in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(file.read_text(), str(file))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in ("dlspec", "support", "__future__"):
                    found.setdefault(top, str(file.relative_to(ROOT)))
    return found


def _distributions(module: str) -> set[str]:
    """The distributions that provide `module`; one not installed here (an extra such as `bench`) is taken to be
    the distribution of the same name, as lightning is."""
    installed = importlib.metadata.packages_distributions().get(module) or [module]
    return {d.lower().replace("_", "-") for d in installed}


def _undeclared(folder: Path, declared: set[str], local: set[str]) -> list[str]:
    missing = []
    for module, file in _imported_modules(folder).items():
        if module in local:
            continue
        dists = _distributions(module)
        if not dists & declared:
            missing.append(f"{module} (imported in {file}; installed by {sorted(dists) or 'nothing'})")
    return missing


def test_every_import_of_the_package_is_a_declared_dependency():
    project = _project()
    declared = {_name(r) for r in project["dependencies"]}
    declared |= {_name(r) for name, extra in project["optional-dependencies"].items() if name != "bench" for r in extra}
    assert _undeclared(ROOT / "dlspec", declared, set()) == []


def test_every_import_of_the_tests_and_benchmarks_is_declared_for_development():
    project = _project()
    extras = project["optional-dependencies"]
    declared = {_name(r) for r in project["dependencies"] + extras["dev"]}
    local = {p.stem for p in (ROOT / "tests").glob("*.py")} | {p.stem for p in (ROOT / "benchmarks").glob("*.py")} \
        | {"fuzz"}
    assert _undeclared(ROOT / "tests", declared, local) == []
    assert _undeclared(ROOT / "fuzz", declared, local) == []
    # the benchmarks may also use the `bench` extra (Lightning, for comparison): never the tests or dlspec itself
    assert _undeclared(ROOT / "benchmarks", declared | {_name(r) for r in extras["bench"]}, local) == []


def test_every_dependency_has_bounds_and_an_exact_pin_in_the_constraints_file():
    project = _project()
    requirements = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    unbounded = [r for r in requirements if "<" not in r]
    assert unbounded == [], "cap each dependency below the next major release that could break it"
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[_name(name)] = version
    assert all(pins.values()), "constraints.txt pins exact versions (name==version)"
    assert sorted({_name(r) for r in requirements} - set(pins)) == []


def test_the_install_commands_use_the_constraints_file():
    readme = (ROOT / "README.md").read_text()
    installs = [line for line in readme.splitlines() if "pip install" in line and line.startswith("python3 -m venv")]
    assert len(installs) == 2 and all("-c constraints.txt" in line for line in installs)
    ci = (ROOT / ".ci" / "run").read_text()
    assert installs[1] in ci, ".ci/run runs the README's test command as written"


def test_version_lists_the_key_packages():
    done = run_dlspec("--version")
    assert done.returncode == 0
    lines = done.stdout.splitlines()
    assert lines[0].startswith("dlspec ")
    assert [line.split()[0] for line in lines[1:]] == list(KEY_PACKAGES)
    assert all(line.split()[1][0].isdigit() for line in lines[1:])
