"""Shared fixtures: configurations on free local ports, a running kernel, clients against it."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from ml_processing.bus import mdp
from ml_processing.core.config import (
    BusConfig,
    Config,
    EdgeConfig,
    KernelConfig,
    PluginsConfig,
    PluginSection,
    ServiceConfig,
)
from ml_processing.core.kernel import Kernel

ROOT = Path(__file__).resolve().parent.parent


def make_config(tmp_path: Path, *, modules: tuple[str, ...] = ("ml_processing.plugins._template",),
                sections: dict[str, PluginSection] | None = None, autoload: bool = False,
                **kernel: Any) -> Config:
    """A config on free local ports (``*`` and port 0), fast heartbeats, data under `tmp_path`. The default
    models are not trained (seconds per start) unless `sections` configures ``models`` itself."""
    sections = {"models": PluginSection(True, {"defaults": False}), **(sections or {})}
    return Config(
        service=ServiceConfig(data_dir=str(tmp_path / "var"), log_level="warning"),
        bus=BusConfig(broker_bind=("tcp://127.0.0.1:*",), pub_in="tcp://127.0.0.1:*", pub_out="tcp://127.0.0.1:*",
                      heartbeat_ms=100, liveness=3, request_timeout_ms=3000),
        edge=EdgeConfig(port=0, max_body_mb=1.0),
        kernel=dataclasses.replace(KernelConfig(backoff_initial_s=0.01, backoff_max_s=0.05, drain_timeout_s=3.0,
                                                uvloop=False), **kernel),
        plugins=PluginsConfig(autoload=autoload, modules=modules, sections=sections),
        source="<test>",
    )


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return make_config(tmp_path, modules=("ml_processing.plugins._template", "tests.support.flaky"))


@pytest.fixture
async def kernel(config: Config) -> AsyncIterator[Kernel]:
    k = Kernel(config)
    await k.start()
    try:
        yield k
    finally:
        await k.stop()


@pytest.fixture
def broker_endpoint(kernel: Kernel) -> str:
    return kernel.endpoints["broker"][0]


@pytest.fixture
async def client(broker_endpoint: str) -> AsyncIterator[mdp.AsyncClient]:
    c = mdp.AsyncClient(broker_endpoint, timeout=3.0)
    try:
        yield c
    finally:
        c.close()
