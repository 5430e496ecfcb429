"""The layers, checked on the source: bus imports nothing of ours; core builds on bus only; the SDK on core
and bus; a plugin imports only the SDK, bus topics and itself (its tests the shipped checks too); the checks
sit on top of the SDK; an integration (a trading framework's side) speaks to the service through the bus only."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OURS = "ml_processing"

#: folder -> the packages of ours its modules may import (its own package always may).
ALLOWED = {
    "bus": ("ml_processing.bus",),
    "core": ("ml_processing.core", "ml_processing.bus"),
    "sdk": ("ml_processing.sdk", "ml_processing.core", "ml_processing.bus"),
    "checks": ("ml_processing.checks", "ml_processing.sdk", "ml_processing.core", "ml_processing.bus"),
    # an integration is a client of the service: it speaks the documented protocol through the bus's clients
    "integrations": ("ml_processing.integrations", "ml_processing.bus"),
}
PLUGIN_ALLOWED = ("ml_processing.sdk", "ml_processing.bus.topics")


def _imports(path: Path, package: str) -> list[str]:
    """Every module of ours `path` imports (relative imports resolved against `package`)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
                found.append(module)
            elif node.module:
                if node.module in (OURS, f"{OURS}.bus"):  # from ml_processing.bus import topics
                    found += [f"{node.module}.{alias.name}" for alias in node.names]
                else:
                    found.append(node.module)
    return [name for name in found if name == OURS or name.startswith(OURS + ".")]


def _modules(folder: str) -> list[tuple[Path, str]]:
    out = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        package = ".".join([OURS, *parts[: len(parts) if path.name == "__init__.py" else -1]])
        out.append((path, package))
    return out


@pytest.mark.parametrize("folder", sorted(ALLOWED))
def test_each_layer_imports_only_the_layers_below(folder: str) -> None:
    bad = [f"{path.relative_to(ROOT)}: {name}" for path, package in _modules(folder)
           for name in _imports(path, package)
           if not any(name == ok or name.startswith(ok + ".") for ok in ALLOWED[folder])]
    assert not bad, "\n".join(bad)


def test_plugins_import_only_the_sdk_topics_and_themselves() -> None:
    bad = []
    for path, package in _modules("plugins"):
        own = ".".join(package.split(".")[:3])  # ml_processing.plugins.NAME
        for name in _imports(path, package):
            allowed = (*PLUGIN_ALLOWED, "ml_processing.checks") if "tests" in path.parts else PLUGIN_ALLOWED
            if not (name == own or name.startswith(own + ".")
                    or any(name == ok or name.startswith(ok + ".") for ok in allowed)):
                bad.append(f"{path.relative_to(ROOT)}: {name}")
    assert not bad, "\n".join(bad)


def test_no_module_imports_itself_in_a_circle() -> None:
    """Top-level imports only (a lazy import inside a function cannot form a circle at import time)."""
    modules = {package if path.name == "__init__.py" else f"{package}.{path.stem}": (path, package)
               for folder in (*ALLOWED, "plugins") for path, package in _modules(folder)}
    graph: dict[str, set[str]] = {}
    for name, (path, package) in modules.items():
        deps: set[str] = set()
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.ImportFrom):
                base = package
                for _ in range(max(node.level - 1, 0)):
                    base = base.rsplit(".", 1)[0]
                module = (f"{base}.{node.module}" if node.module else base) if node.level else (node.module or "")
                subs = {f"{module}.{alias.name}" for alias in node.names} & set(modules)
                deps |= subs
                if len(subs) < len(node.names) and module in modules:
                    deps.add(module)
            elif isinstance(node, ast.Import):
                deps |= {alias.name for alias in node.names} & set(modules)
        graph[name] = deps - {name}
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as exc:
        raise AssertionError(f"import circle: {' -> '.join(exc.args[1])}") from None
