"""What a real kernel registers, found exactly the way the service finds it.

`registries` builds a `Kernel` from a configuration (the service's own when none is given: ``plugins.toml``
through ``MLP_CONFIG``, the environment, entry points included unless autoload is off), lets it discover
its plugins (built-in, entry points, ``[plugins] modules``), keeps what they registered and releases the
kernel again: no socket is bound, no actor started. `local_config` is a configuration for a kernel that
does start (the actor checks, a plugin's own tests), on free local ports with its data in a folder of the
caller's, and `running` starts one for a block.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import structlog

from ml_processing.core import log
from ml_processing.core.actor import Actor
from ml_processing.core.config import (
    BusConfig,
    Config,
    EdgeConfig,
    KernelConfig,
    PluginsConfig,
    PluginSection,
    ServiceConfig,
    load_config,
)
from ml_processing.core.kernel import Kernel

__all__ = ["KINDS", "Discovered", "local_config", "pytest_cases", "registries", "running"]

#: The registries the SDK declares, by kind, and the check that runs over each.
KINDS = ("indicators", "features", "patterns", "model_kinds", "sentiment")


@dataclass(frozen=True)
class Discovered:
    """What one kernel's plugins registered: the registries by kind, the actor classes by service name,
    and every plugin's report (``status``, ``source``, ``module``, ``hooks``, ``error``) by plugin name."""

    registries: Mapping[str, Mapping[str, Any]]
    actors: Mapping[str, type[Actor]]
    plugins: Mapping[str, Mapping[str, Any]]

    def __getitem__(self, kind: str) -> Mapping[str, Any]:
        """One registry, by kind: ``found["indicators"]["RSI"]``."""
        return self.registries[kind]

    def owned(self, kind: str, modules: tuple[str, ...] | None = None) -> dict[str, Any]:
        """The entries of one registry (or of ``"actors"``) by name, only those whose class is defined in one
        of `modules` (or a submodule of one) when given: what one package registered."""
        table = self.actors if kind == "actors" else self.registries[kind]
        if modules is None:
            return dict(table)
        return {name: item for name, item in table.items() if _defined_in(item, modules)}

    def broken(self) -> dict[str, str]:
        """Plugin name -> the reason it was refused, for every plugin that did not load."""
        return {name: str(report["error"]) for name, report in self.plugins.items() if report["error"]}


def registries(config: Config | None = None) -> Discovered:
    """Discover the plugins of a kernel built from `config` (the service's configuration by default) and
    return what they registered; the kernel is released before this returns."""
    config = config if config is not None else load_config()
    if not structlog.is_configured():  # outside the service (a plugin's tests): log at the configured level
        log.configure(config.service.log_level)
    kernel = Kernel(config)
    try:
        actors = kernel.discover()
        return Discovered(
            registries=MappingProxyType({kind: MappingProxyType(dict(table))
                                         for kind, table in kernel.registries.items()}),
            actors=MappingProxyType({cls.name: cls for _, cls in actors}),
            plugins=MappingProxyType({report["name"]: MappingProxyType(report)
                                      for report in kernel.plugins.report()}),
        )
    finally:
        kernel.executor.shutdown(wait=False)
        kernel.context.destroy(linger=0)


@contextlib.asynccontextmanager
async def running(config: Config) -> AsyncIterator[Kernel]:
    """A started kernel for the block (bus, actors, REST edge), stopped after it, also after a failed start::

        async with running(local_config(tmp_path)) as kernel:
            await kernel.request("scorer", "score", {"symbol": "EURUSD"})  # kernel.edge_url: REST
    """
    kernel = Kernel(config)
    try:
        await kernel.start()
        yield kernel
    finally:
        await kernel.stop()  # a half-started kernel holds sockets and threads too


def local_config(data_dir: str | Path, *, modules: tuple[str, ...] = (), autoload: bool = True,
                 sections: Mapping[str, PluginSection] | None = None) -> Config:
    """A configuration for a kernel that starts in a test: every socket on a free port of 127.0.0.1, data
    under `data_dir`, quick heartbeats and restarts. Entry points are loaded (`autoload`) and `modules`
    added, as in the service. The ``models`` service trains no default models (seconds per start) unless
    `sections` configures it."""
    sections = {"models": PluginSection(True, MappingProxyType({"defaults": False})), **(sections or {})}
    return Config(
        service=ServiceConfig(data_dir=str(data_dir), log_level="warning"),
        bus=BusConfig(broker_bind=("tcp://127.0.0.1:*",), pub_in="tcp://127.0.0.1:*", pub_out="tcp://127.0.0.1:*",
                      heartbeat_ms=100, liveness=3, request_timeout_ms=5000),
        edge=EdgeConfig(port=0),
        kernel=dataclasses.replace(KernelConfig(), backoff_initial_s=0.01, backoff_max_s=0.05, drain_timeout_s=3.0,
                                   uvloop=False),
        plugins=PluginsConfig(autoload=autoload, modules=modules, sections=MappingProxyType(dict(sections))),
        source="<ml_processing.checks>",
    )


def _defined_in(item: Any, modules: tuple[str, ...]) -> bool:
    where = (item if isinstance(item, type) else type(item)).__module__
    return any(where == m or where.startswith(m + ".") for m in modules)


def pytest_cases(found: Discovered, *kinds: str, modules: tuple[str, ...] | None = None) -> list[Any]:
    """``pytest.param(item, id=name)`` for every entry of the registries named (``"actors"`` for the actor
    classes; every registry and the actors when none is named), sorted by name, only those defined in
    `modules` when given (`Discovered.owned`). With several kinds the ids are ``kind:name``::

        @pytest.mark.parametrize("indicator", checks.pytest_cases(FOUND, "indicators"))
        def test_indicator(indicator):
            checks.indicators.check_indicator(indicator)
    """
    import pytest  # only where pytest runs the checks

    kinds = kinds or (*(k for k in KINDS if k in found.registries), "actors")
    cases = []
    for kind in kinds:
        table = found.owned(kind, modules)
        cases += [pytest.param(table[name], id=f"{kind}:{name}" if len(kinds) > 1 else name) for name in sorted(table)]
    return cases
