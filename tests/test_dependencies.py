"""Declared dependencies are exactly the imported ones: pyproject.toml against the imports."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared(requirements: list[str]) -> set[str]:
    """Distribution names of requirement strings, extras and versions left off."""
    names = {normalise(re.split(r"[\s\[<>=!~;]", req, maxsplit=1)[0]) for req in requirements}
    return names - {"runfleet"}  # dev names the package's own extras


def imported(folder: str) -> set[str]:
    """Distributions providing the third-party modules imported anywhere below ``folder``."""
    providers = packages_distributions()
    local = {path.stem for path in (ROOT / folder).glob("*.py")} | {"runfleet", "tests"}
    found: set[str] = set()
    for path in (ROOT / folder).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.partition(".")[0]
                if top not in sys.stdlib_module_names and top not in local:
                    found.update(normalise(d) for d in providers.get(top, [top]))
    return found


def test_every_runtime_dependency_is_imported_by_the_package_and_nothing_else_is() -> None:
    extras = PYPROJECT["optional-dependencies"]
    # matplotlib is imported on demand by `runfleet bench --plot`, behind the `plot` extra.
    assert imported("src/runfleet") == declared(PYPROJECT["dependencies"] + extras["plot"])


def test_tests_and_benchmarks_import_only_what_dev_installs() -> None:
    everything = declared(PYPROJECT["dependencies"])
    for extra in PYPROJECT["optional-dependencies"].values():
        everything |= declared(extra)
    assert imported("tests") <= everything
    assert imported("benchmarks") <= everything
