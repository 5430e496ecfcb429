"""A real third-party plugin: a package built and installed by pip, found through its entry point, written
against the SDK only (declared op, route)."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from ml_processing import checks
from ml_processing.bus import mdp
from ml_processing.core.errors import BadRequest, Unavailable
from tests.conftest import make_config
from tests.core.helpers import running
from tests.support.thirdparty import on_path, pip_install

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
"""acme-signals: scores a list of values (a third party's plugin, written against the SDK only)."""

from __future__ import annotations

from typing import Any

from ml_processing.sdk import Actor, Args, Config, Route, hookimpl, op


def score(values: list[float]) -> float:
    """Mean of the values.

    >>> score([1.0, 2.0, 6.0])
    3.0
    """
    return sum(values) / len(values)


class ScoreArgs(Args):
    values: list[float]

    def __post_init__(self) -> None:
        if not self.values:
            raise ValueError("values: needs at least one number")


class Scorer(Actor):
    name = "acme"

    @op(ScoreArgs, reply=dict[str, Any], role="compute")
    def handle_score(self, args: ScoreArgs) -> dict[str, Any]:
        "Score values: their mean and count."
        return {"score": score(args.values), "n": len(args.values)}


@hookimpl
def register_actors(settings: Config) -> list[type[Actor]]:
    return [Scorer]


@hookimpl
def register_routes() -> list[Route]:
    return [Route("POST", "/api/v1/acme/score", "acme", "score", "Score values (acme)", "acme")]
'''


@pytest.fixture(scope="module")
def acme_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build and install the acme-signals package into a private target folder, once for this module."""
    root = tmp_path_factory.mktemp("acme")
    pkg = root / "acme-signals"
    pkg.mkdir()
    (pkg / "pyproject.toml").write_text(textwrap.dedent(PYPROJECT).lstrip(), encoding="utf-8")
    (pkg / "acme_signals.py").write_text(textwrap.dedent(MODULE).lstrip(), encoding="utf-8")
    site = pip_install(pkg, root / "site")
    assert (site / "acme_signals.py").is_file()
    return site


@pytest.fixture
def acme_on_path(acme_site: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    with on_path(monkeypatch, acme_site):
        yield acme_site


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

        checks.actors.check_actor_declarations(kernel.cells["acme"].actor_cls)  # what the project's actors pass
        await checks.actors.check_actor_answers(kernel, "acme")


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
