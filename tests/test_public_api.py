"""The package's public surface: sorted, importable, versioned."""

from __future__ import annotations

from types import ModuleType

import pytest

import runfleet
import runfleet.sim


@pytest.mark.parametrize("module", [runfleet, runfleet.sim])
def test_all_is_sorted_and_every_name_imports(module: ModuleType) -> None:
    assert list(module.__all__) == sorted(module.__all__)
    for name in module.__all__:
        assert getattr(module, name) is not None


def test_version_comes_from_the_installed_metadata() -> None:
    assert runfleet.__version__.count(".") >= 1
