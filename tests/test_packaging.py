"""Packaging: every code folder is installed under the one namespace ``ml_processing``, and nothing else."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
CODE_FOLDERS = ("core", "sdk", "checks", "bus", "integrations", "plugins")
NAMESPACE = "ml_processing"


def _pyproject() -> dict[str, Any]:
    with open(ROOT / "pyproject.toml", "rb") as fh:
        return tomllib.load(fh)


def _code_folders() -> dict[str, str]:
    """Dotted package name -> folder (relative, POSIX) for every folder under core/, bus/, plugins/ with .py files."""
    found: dict[str, str] = {}
    for top in CODE_FOLDERS:
        for folder, dirs, files in os.walk(ROOT / top):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not d.startswith("."))
            if any(f.endswith(".py") for f in files):
                rel = Path(folder).relative_to(ROOT).as_posix()
                found[f"{NAMESPACE}.{rel.replace('/', '.')}"] = rel
    return found


def test_every_code_folder_is_a_listed_package_and_vice_versa() -> None:
    setuptools = _pyproject()["tool"]["setuptools"]
    folders = _code_folders()
    assert {"ml_processing.core", "ml_processing.bus", "ml_processing.plugins"} <= set(folders)
    packages = set(setuptools["packages"])
    assert set(folders) - packages == set(), "folders holding Python code missing from [tool.setuptools] packages"
    assert packages - set(folders) == set(), "listed packages without a folder of Python code"


def test_package_dir_maps_every_package_to_its_folder() -> None:
    setuptools = _pyproject()["tool"]["setuptools"]
    folders = _code_folders()
    package_dir = setuptools["package-dir"]
    assert package_dir == folders
    for folder in package_dir.values():
        assert (ROOT / folder / "__init__.py").is_file(), f"{folder} has no __init__.py"


def test_console_script_is_declared() -> None:
    assert _pyproject()["project"]["scripts"] == {"ml-processing": "ml_processing.core.cli:main"}


def test_console_script_is_installed_in_this_environment() -> None:
    from importlib.metadata import entry_points

    (script,) = entry_points(group="console_scripts", name="ml-processing")
    assert script.value == "ml_processing.core.cli:main"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A normal (non-editable) install of this checkout into a private target folder.

    It builds from a copy of the sources pip needs, so the shared checkout gets no build/ or egg-info
    (and a stale build/ folder cannot smuggle removed modules into the wheel).
    """
    work = tmp_path_factory.mktemp("pkg")
    src = work / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for folder in CODE_FOLDERS:
        shutil.copytree(ROOT / folder, src / folder, ignore=ignore)
    for name in ("pyproject.toml", "README.md", "LICENSE", "plugins.toml", "MANIFEST.in"):
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, src / name)
    target = work / "site"
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INDEX": "1"}
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                           "--target", str(target), str(src)], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    return target


def test_normal_install_lands_under_the_namespace_only(installed: Path) -> None:
    for rel in ("ml_processing/core/kernel.py", "ml_processing/bus/mdp/__init__.py", "ml_processing/bus/edge/app.py",
                "ml_processing/plugins/_template/__init__.py"):
        assert (installed / rel).is_file(), f"{rel} missing from the install"
    for stray in ("core", "bus", "integrations", "plugins", "tests"):
        assert not (installed / stray).exists(), f"top-level {stray}/ must not be installed"
    assert not (installed / "ml_processing" / "__init__.py").exists()  # a PEP 420 namespace
    top = {p.name for p in installed.iterdir() if not p.name.endswith((".dist-info", ".egg-info"))}
    assert top <= {"ml_processing", "bin"}, top


def test_normal_install_carries_every_package_and_the_entry_point(installed: Path) -> None:
    for package in _pyproject()["tool"]["setuptools"]["packages"]:
        assert (installed / package.replace(".", "/") / "__init__.py").is_file(), package
    (dist,) = installed.glob("ml_processing-*.dist-info")
    entry_points = (dist / "entry_points.txt").read_text(encoding="utf-8")
    assert "ml-processing = ml_processing.core.cli:main" in entry_points


def test_normal_install_imports_and_runs(installed: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLP_")}
    env["PYTHONPATH"] = str(installed)
    code = ("import ml_processing.core.kernel as k, ml_processing.plugins._template as t; "
            "print(k.__file__); print(t.__file__)")
    done = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(installed)!r}); {code}"],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    for line in done.stdout.splitlines():
        assert line.startswith(str(installed)), f"imported from outside the install: {line}"
