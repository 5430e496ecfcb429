"""The plugin template is a package a newcomer copies and installs: a copy installs with pip (found through
its entry points) and its own tests, the shipped checks over a real kernel, pass."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.support.thirdparty import pip_install

ROOT = Path(__file__).resolve().parents[3]
TEMPLATE = ROOT / "plugins" / "_template"


def test_the_template_imports_only_the_sdk() -> None:
    for path in sorted(TEMPLATE.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        ours = {name for name in imported if name.startswith("ml_processing")}
        assert ours <= {"ml_processing.sdk"}, f"{path.name} imports {sorted(ours)}"


def test_a_copy_of_the_template_installs_and_its_tests_pass(tmp_path: Path) -> None:
    copy = tmp_path / "acme-plugin"
    shutil.copytree(TEMPLATE, copy, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build"))
    site = pip_install(copy, tmp_path / "site")
    assert (site / "mlp_template" / "indicators.py").is_file() and not (site / "mlp_template" / "tests").exists()
    (dist,) = site.glob("ml_processing_template-*.dist-info")
    assert "[ml_processing]" in (dist / "entry_points.txt").read_text(encoding="utf-8")

    env = {k: v for k, v in os.environ.items() if not k.startswith("MLP_")}  # the service's defaults
    env["PYTHONPATH"] = os.pathsep.join([str(site), *filter(None, [os.environ.get("PYTHONPATH")])])
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=copy, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{done.stdout[-6000:]}\n{done.stderr[-3000:]}"
    passed = re.search(r"(\d+) passed", done.stdout)
    assert passed and int(passed.group(1)) >= 6, done.stdout[-2000:]
    assert " failed" not in done.stdout and " skipped" not in done.stdout, done.stdout[-2000:]
