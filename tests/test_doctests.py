"""Every module of the ml_processing namespace imports, and its doctests pass."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

PACKAGES = ("ml_processing.core", "ml_processing.bus", "ml_processing.sdk", "ml_processing.checks", "ml_processing.plugins")


def _modules() -> list[str]:
    names: list[str] = []
    for package_name in PACKAGES:
        package = importlib.import_module(package_name)
        names.append(package_name)
        names += [info.name for info in pkgutil.walk_packages(package.__path__, prefix=f"{package_name}.")]
    return sorted(set(names))


MODULES = _modules()


def test_walk_finds_the_known_modules() -> None:
    assert {"ml_processing.core.kernel", "ml_processing.bus.mdp", "ml_processing.bus.edge.app",
            "ml_processing.plugins._template"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_module_doctests(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, report=True)
    assert result.failed == 0, f"{result.failed} of {result.attempted} doctest examples failed in {name}"


def test_doctests_exist() -> None:
    attempted = sum(doctest.testmod(importlib.import_module(name), report=False).attempted for name in MODULES)
    assert attempted >= 10
