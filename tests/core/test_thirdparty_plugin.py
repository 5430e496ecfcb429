"""A real third-party plugin: a package built and installed by pip, found through its entry point."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from ml_processing.bus import mdp
from ml_processing.core.errors import BadRequest, Unavailable
from tests.conftest import make_config
from tests.core.helpers import running

PYPROJECT = """
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "acme-signals"
version = "0.3.1"
description = "A third-party ml-processing plugin used by the test suite"
requires-python = ">=3.11"

[project.entry-points.ml_processing]
acme = "acme_signals"

[tool.setuptools]
py-modules = ["acme_signals"]
"""

MODULE = '''
"""acme-signals: scores a list of values (a third party's plugin, written against the public API only)."""

from __future__ import annotations

from typing import Any

from ml_processing.bus.edge.routes import Route
from ml_processing.core.actor import Actor
from ml_processing.core.config import Config
from ml_processing.core.errors import BadRequest
from ml_processing.core.hookspecs import hookimpl


def score(values: list[float]) -> float:
    """Mean of the values.

    >>> score([1.0, 2.0, 6.0])
    3.0
    """
    return sum(values) / len(values)


class Scorer(Actor):
    name = "acme"

    def handle_score(self, args: dict[str, Any]) -> dict[str, Any]:
        values = args.get("values")
        if not isinstance(values, list) or not values or not all(isinstance(v, (int, float)) for v in values):
            raise BadRequest("'values' must be a non-empty list of numbers", field="values")
        return {"score": score(values), "n": len(values)}


@hookimpl
def register_actors(settings: Config) -> list[type[Actor]]:
    return [Scorer]


@hookimpl
def register_routes() -> list[Route]:
    return [Route("POST", "/api/v1/acme/score", "acme", "score", "Score values (acme)", "acme",
                  request_schema={"type": "object"})]
'''


@pytest.fixture(scope="module")
def acme_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build and install the acme-signals package into a private target folder, once for this module."""
    root = tmp_path_factory.mktemp("acme")
    pkg = root / "acme-signals"
    pkg.mkdir()
    (pkg / "pyproject.toml").write_text(textwrap.dedent(PYPROJECT).lstrip(), encoding="utf-8")
    (pkg / "acme_signals.py").write_text(textwrap.dedent(MODULE).lstrip(), encoding="utf-8")
    site = root / "site"
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INDEX": "1"}
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(site), str(pkg)], check=True, env=env, timeout=180,
                   capture_output=True)
    assert (site / "acme_signals.py").is_file()
    return site


@pytest.fixture
def acme_on_path(acme_site: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.syspath_prepend(str(acme_site))
    importlib.invalidate_caches()
    yield acme_site
    sys.modules.pop("acme_signals", None)


async def test_installed_plugin_is_served_over_zeromq_and_rest(acme_on_path: Path, tmp_path: Path) -> None:
    async with running(make_config(tmp_path, modules=(), autoload=True)) as kernel:
        info = kernel.plugins.infos["acme"]
        assert info.source.startswith("entrypoint")
        assert "acme-signals 0.3.1" in info.source
        assert info.module == "acme_signals"
        assert info.actors == ["acme"]
        assert info.routes == ["POST /api/v1/acme/score"]
        assert info.error is None

        client = mdp.AsyncClient(kernel.endpoints["broker"][0], timeout=3.0)
        try:
            assert await client.mmi_service("acme")
            assert await client.request("acme", "score", {"values": [1, 2, 6]}) == {"score": 3.0, "n": 3}
            with pytest.raises(BadRequest) as caught:
                await client.request("acme", "score", {"values": "many"})
            assert caught.value.field == "values"
        finally:
            client.close()

        async with aiohttp.ClientSession() as http:
            async with http.post(f"{kernel.edge_url}/api/v1/acme/score", json={"values": [2, 4]}) as resp:
                assert resp.status == 200
                assert await resp.json() == {"score": 3.0, "n": 2}
            async with http.post(f"{kernel.edge_url}/api/v1/acme/score", json={"values": []}) as resp:
                assert resp.status == 400
                assert (await resp.json())["error"]["code"] == "bad_request"
            async with http.get(f"{kernel.edge_url}/api/v1/openapi.json") as resp:
                document = await resp.json()
            assert document["paths"]["/api/v1/acme/score"]["post"]["operationId"] == "acme.score"
            async with http.get(f"{kernel.edge_url}/api/v1/plugins") as resp:
                listed = {p["name"]: p for p in await resp.json()}
            assert listed["acme"]["status"] == "loaded"
            assert listed["acme"]["source"].startswith("entrypoint")


async def test_installed_plugin_is_skipped_without_autoload(acme_on_path: Path, tmp_path: Path) -> None:
    async with running(make_config(tmp_path, modules=(), autoload=False)) as kernel:
        assert "acme" not in kernel.plugins.infos
        assert "acme" not in kernel.cells
        client = mdp.AsyncClient(kernel.endpoints["broker"][0], timeout=3.0)
        try:
            assert not await client.mmi_service("acme")
            with pytest.raises(Unavailable) as caught:
                await client.request("acme", "score", {"values": [1]})
            assert "acme" in caught.value.message
            assert await client.request("kernel", "ping") == "pong"
        finally:
            client.close()
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{kernel.edge_url}/api/v1/acme/score", json={"values": [1]}) as resp:
                assert resp.status == 404
                assert (await resp.json())["error"]["code"] == "not_found"
