"""Third-party plugins in tests: a module written to a folder on ``sys.path``, or a package installed by pip.

A plugin module a test writes (the common case: found through ``[plugins] modules``)::

    with plugin_module(monkeypatch, tmp_path, "acme_spread", SOURCE):
        async with running(make_config(tmp_path, modules=("acme_spread",))) as kernel:
            ...

A package built and installed by pip into a private folder (found through its entry points)::

    site = pip_install(project_folder, tmp_path / "site")
    with on_path(monkeypatch, site):
        ...
"""

from __future__ import annotations

import contextlib
import importlib
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def on_path(monkeypatch: pytest.MonkeyPatch, folder: Path) -> Iterator[Path]:
    """`folder` first on ``sys.path`` (its modules and installed distributions visible) until the test ends;
    the modules imported from it are forgotten when the block ends."""
    monkeypatch.syspath_prepend(str(folder))
    importlib.invalidate_caches()
    try:
        yield folder
    finally:
        for name, module in list(sys.modules.items()):
            if str(getattr(module, "__file__", "") or "").startswith(str(folder)):
                del sys.modules[name]


@contextlib.contextmanager
def plugin_module(monkeypatch: pytest.MonkeyPatch, folder: Path, name: str, source: str) -> Iterator[Path]:
    """The plugin module `name` (its `source` dedented) written into `folder`, importable for the block."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.py").write_text(textwrap.dedent(source).lstrip(), encoding="utf-8")
    with on_path(monkeypatch, folder):
        yield folder


def pip_install(project: Path, target: Path) -> Path:
    """Build and install the package in `project` (its pyproject.toml) into `target` with pip, offline and
    without its dependencies (ml-processing is installed already); returns `target`."""
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INDEX": "1"}
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                           "--target", str(target), str(project)], env=env, timeout=300, capture_output=True,
                          text=True)
    assert done.returncode == 0, f"pip install {project} failed:\n{done.stdout}\n{done.stderr}"
    return target
