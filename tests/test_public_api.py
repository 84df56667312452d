"""The package's public surface: sorted, importable, versioned, and what type checkers see."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

import runfleet
import runfleet.sim


@pytest.mark.parametrize("module", [runfleet, runfleet.sim])
def test_all_is_sorted_and_every_name_imports(module: ModuleType) -> None:
    assert list(module.__all__) == sorted(module.__all__)
    for name in module.__all__:
        assert getattr(module, name) is not None


def type_checker_imports() -> list[ast.ImportFrom]:
    """The imports of runfleet/__init__.py that only type checkers run."""
    tree = ast.parse(Path(runfleet.__file__).read_text(encoding="utf-8"))
    (block,) = (n for n in tree.body if isinstance(n, ast.If) and "TYPE_CHECKING" in ast.dump(n))
    assert all(isinstance(line, ast.ImportFrom) for line in block.body)
    return [line for line in block.body if isinstance(line, ast.ImportFrom)]


def test_type_checkers_see_every_public_name_and_each_is_the_object_in_its_home() -> None:
    seen = set()
    for line in type_checker_imports():
        home = importlib.import_module(f"runfleet.{line.module}")
        for alias in line.names:
            # `X as X` is what makes mypy --strict count the name as re-exported for users.
            assert alias.asname == alias.name, f"import {alias.name} as itself"
            assert getattr(runfleet, alias.name) is getattr(home, alias.name)
            seen.add(alias.name)
    assert seen | {"__version__"} == set(runfleet.__all__)
    assert set(runfleet.__all__) <= set(dir(runfleet))


def test_importing_the_package_leaves_the_sdk_unimported() -> None:
    """The lazy names' reason: ``runfleet sim`` and ``--help`` skip the SDK's second."""
    code = "import sys, runfleet; print('openai' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_version_comes_from_the_installed_metadata() -> None:
    assert runfleet.__version__.count(".") >= 1
