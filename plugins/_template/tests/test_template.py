"""The package's tests: the contract checks ml-processing ships, over a real kernel with this package
installed. Run them after ``pip install -e .`` (or ``pip install .``): the kernel must find the package
through its entry points, exactly as the service will."""

from __future__ import annotations

import doctest
import functools
import importlib
import importlib.metadata
from pathlib import Path
from typing import Any

import pytest

from ml_processing import checks

#: This package's [project] name in pyproject.toml (rename it with the package).
DISTRIBUTION = "ml-processing-template"


def _normal(name: str) -> str:
    return name.replace("_", "-").replace(".", "-").lower()


@functools.cache
def entry_points() -> tuple[importlib.metadata.EntryPoint, ...]:
    """This package's plugins, as installed."""
    found = tuple(ep for ep in importlib.metadata.entry_points(group="ml_processing")
                  if ep.dist is not None and _normal(ep.dist.name) == _normal(DISTRIBUTION))
    assert found, f"{DISTRIBUTION} is not installed: pip install -e . (then run pytest again)"
    return found


@functools.cache
def discovered() -> checks.Discovered:
    """What the service loads: the built-in plugins and every installed one, this package's included."""
    return checks.registries()


def modules() -> tuple[str, ...]:
    return tuple(ep.value for ep in entry_points())


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "item" in metafunc.fixturenames:  # everything this package registers, checked by its kind's suite
        metafunc.parametrize("item", checks.pytest_cases(discovered(), modules=modules()))


def test_every_plugin_of_the_package_loads_from_its_entry_point() -> None:
    for ep in entry_points():
        report = discovered().plugins.get(ep.name)
        assert report is not None, f"plugin {ep.name!r} was not loaded (is [plugins] autoload off?)"
        assert report["status"] == "loaded" and report["source"].startswith("entrypoint"), dict(report)


def test_the_package_registers_what_it_shows() -> None:
    found = discovered()
    assert set(found.owned("indicators", modules())) == {"CLOSE_LOCATION"}
    assert set(found.owned("actors", modules())) == {"echo"}


def test_contract(item: Any) -> None:
    checks.check(item, discovered())


def test_services_answer_garbage_without_failing(tmp_path: Path) -> None:
    services = sorted(discovered().owned("actors", modules()))
    checks.actors.check_services(checks.local_config(tmp_path), services)


def test_doctests() -> None:
    for name in modules():
        module = importlib.import_module(name)
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.attempted and not result.failed, f"{name}: {result}"
