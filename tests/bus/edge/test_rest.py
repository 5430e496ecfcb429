"""The REST edge against a real kernel: seed shapes, Prometheus, OpenAPI kept true, errors, request ids."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ml_processing.bus import mdp
from ml_processing.core.errors import NotFound, Unavailable
from ml_processing.core.kernel import Kernel
from tests.conftest import make_config
from tests.support.kernels import running
from tests.support.thirdparty import plugin_module


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


async def _ping_still_answers(http: aiohttp.ClientSession, kernel: Kernel) -> None:
    async with http.get(f"{kernel.edge_url}/api/v1/ping") as resp:
        assert resp.status == 200
        assert await resp.json() == "pong"


# -- health and metrics -----------------------------------------------------------------------------------


async def test_health_has_the_seed_shape(kernel: Kernel, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{kernel.edge_url}/health") as resp:
        assert resp.status == 200
        assert resp.content_type == "application/json"
        body = await resp.json()
    assert body["service"] == "ml-processing"
    assert body["status"] == "healthy"
    assert isinstance(body["version"], str) and body["version"]

    ml = body["ml_status"]
    assert set(ml) >= {"models_loaded", "models_healthy", "training_active", "feature_pipelines"}
    assert isinstance(ml["models_loaded"], int) and isinstance(ml["models_healthy"], int)
    assert isinstance(ml["training_active"], bool) and isinstance(ml["feature_pipelines"], int)

    perf = body["performance_metrics"]
    assert set(perf) >= {"avg_prediction_time_ms", "cache_hit_rate", "predictions_per_second", "model_accuracy"}
    assert isinstance(perf["avg_prediction_time_ms"], (int, float))
    assert isinstance(perf["cache_hit_rate"], str) and perf["cache_hit_rate"].endswith("%")
    assert isinstance(perf["predictions_per_second"], (int, float))
    assert isinstance(perf["model_accuracy"], dict)

    ta = body["technical_analysis"]
    assert set(ta) >= {"indicators_calculated", "patterns_detected", "signals_generated"}
    assert all(isinstance(ta[k], int) for k in ("indicators_calculated", "patterns_detected", "signals_generated"))

    actors = body["actors"]
    assert set(actors) == {"kernel", "indicators", "features", "models", "patterns", "sentiment", "echo", "flaky"}
    for status in actors.values():
        assert status["state"] == "running" and status["healthy"] is True
    assert actors["echo"]["plugin"] == "_template"


async def test_health_models_and_metrics_ml_answer(kernel: Kernel, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{kernel.edge_url}/health/models") as resp:
        assert resp.status == 200
        models = await resp.json()
    assert models["service"] == "ml-processing"
    assert isinstance(models["models"], list)
    assert isinstance(models["models_loaded"], int) and isinstance(models["models_healthy"], int)

    async with http.get(f"{kernel.edge_url}/metrics/ml") as resp:
        assert resp.status == 200
        ml = await resp.json()
    assert ml["service"] == "ml-processing"
    assert set(ml["performance_metrics"]) >= {"avg_prediction_time_ms", "cache_hit_rate",
                                              "predictions_per_second", "model_accuracy"}


async def test_metrics_are_prometheus_text(kernel: Kernel, http: aiohttp.ClientSession) -> None:
    for _ in range(3):
        await _ping_still_answers(http, kernel)
    async with http.get(f"{kernel.edge_url}/metrics") as resp:
        assert resp.status == 200
        assert resp.content_type == "text/plain"
        text = await resp.text()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name in ("mlp_actor_requests", "mlp_actor_state", "mlp_broker_messages", "mlp_plugins",
                 "mlp_http_responses", "process_cpu_seconds"):
        assert name in families, f"{name} missing from /metrics"
    requests = {s.labels["actor"]: s.value for s in families["mlp_actor_requests"].samples
                if s.name.endswith("_total")}
    assert requests["kernel"] >= 3
    responses = {s.labels["status"]: s.value for s in families["mlp_http_responses"].samples
                 if s.name.endswith("_total")}
    assert responses["200"] >= 3


# -- OpenAPI: describes exactly what is served --------------------------------------------------------------


def _served(kernel: Kernel) -> set[tuple[str, str]]:
    assert kernel.runner is not None
    routes = {(r.method, r.resource.canonical) for r in kernel.runner.app.router.routes() if r.resource}
    # aiohttp adds HEAD beside a GET; HTTP implies it, the document need not list it
    return {(m, p) for m, p in routes if not (m == "HEAD" and ("GET", p) in routes)}


async def _openapi(kernel: Kernel, http: aiohttp.ClientSession) -> dict[str, Any]:
    async with http.get(f"{kernel.edge_url}/api/v1/openapi.json") as resp:
        assert resp.status == 200
        document: dict[str, Any] = await resp.json()
    return document


def _documented(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, ops in document["paths"].items() for method in ops}


async def test_openapi_describes_every_served_route_and_nothing_else(kernel: Kernel,
                                                                    http: aiohttp.ClientSession) -> None:
    document = await _openapi(kernel, http)
    assert document["openapi"].startswith("3.")
    served, documented = _served(kernel), _documented(document)
    assert served - documented == set(), "served but not documented"
    assert documented - served == set(), "documented but not served"
    assert ("POST", "/api/v1/echo") in documented  # a plugin's route is documented too


async def test_openapi_operations_are_unique_and_complete(kernel: Kernel, http: aiohttp.ClientSession) -> None:
    document = await _openapi(kernel, http)
    ids = [op["operationId"] for ops in document["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    for path, ops in document["paths"].items():
        for method, op in ops.items():
            assert "200" in op["responses"], (method, path)
            declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert declared == set(re.findall(r"{(\w+)}", path)), (method, path)
    assert "Error" in document["components"]["schemas"]


async def test_every_documented_operation_answers(kernel: Kernel, http: aiohttp.ClientSession) -> None:
    """Each operation in the document is served: an empty body is a clear 400, a capability not installed
    yet says 503, and an op its plugin does not serve yet says so by name; never a bare 404/405 or a 500."""
    document = await _openapi(kernel, http)
    for path, ops in document["paths"].items():
        url = kernel.edge_url + re.sub(r"{\w+}", "x1", path)
        for method in ops:
            kwargs: dict[str, Any] = {"json": {}} if method in ("post", "put", "patch") else {}
            async with http.request(method.upper(), url, **kwargs) as resp:
                assert resp.status in (200, 400, 404, 503), (method, path, resp.status, await resp.text())
                if resp.status != 200:
                    error = (await resp.json())["error"]
                    if ops[method].get("requestBody", {}).get("content", {}).get("application/octet-stream"):
                        assert isinstance(error, str) and error, (method, path, error)  # the protocol's own form
                        continue
                    expected = {400: "bad_request", 404: "not_found", 503: "unavailable"}[resp.status]
                    assert error["code"] == expected, (method, path, error)
                    if resp.status == 404:  # the op's own answer (no such model, pipeline...), not a bare route 404
                        assert "no route" not in error["message"] and error.get("field"), (method, path, error)


# -- bad input: a clear 4xx every time, and the service still answers ---------------------------------------

ECHO = "/api/v1/echo"
BAD_INPUT: list[Any] = [
    pytest.param("POST", ECHO, b"{not json", 400, "bad_request", "json", id="invalid-json"),
    pytest.param("POST", ECHO, b"[1, 2, 3]", 400, "bad_request", "object", id="json-array"),
    pytest.param("POST", ECHO, b'"text"', 400, "bad_request", "object", id="json-string"),
    pytest.param("POST", ECHO, b"null", 400, "bad_request", "object", id="json-null"),
    pytest.param("POST", ECHO, b"\xff\xfe\x00garbage", 400, "bad_request", "json", id="not-utf8"),
    pytest.param("POST", ECHO, b'{"a": 1} trailing', 400, "bad_request", "json", id="trailing-data"),
    pytest.param("POST", ECHO, b"{" + b'"k": "' + b"x" * (3 * 512 * 1024) + b'"}', 413, "too_large", "limit",
                 id="over-max-body"),
    pytest.param("GET", "/api/v1/no-such-route", None, 404, "not_found", "/api/v1/no-such-route", id="unknown-route"),
    pytest.param("POST", "/api/v1/predict/nope", b"{}", 404, "not_found", "no route", id="unknown-subroute"),
    pytest.param("GET", ECHO, None, 405, None, "GET", id="wrong-method"),
    pytest.param("DELETE", "/health", None, 405, None, "DELETE", id="wrong-method-health"),
    pytest.param("POST", "/api/v1/predict", b'{"features": [1.2, 0.8], "model": "nope"}', 404, "not_found",
                 "no model 'nope'", id="unknown-model"),
    pytest.param("GET", "/api/v1/models/m1", None, 404, "not_found", "no model 'm1'", id="unknown-model-details"),
    pytest.param("POST", "/api/v1/sentiment/analyze", b"{}", 400, "bad_request", "texts", id="sentiment-nothing"),
    pytest.param("POST", "/api/v1/patterns/detect", b"{}", 400, "bad_request", "missing column", id="patterns-no-bars"),
    pytest.param("POST", ECHO, b'{"a": ' + b"[" * 300 + b"]" * 300 + b"}", 400, "bad_request", None,
                 id="deeply-nested"),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "code", "mentions"), BAD_INPUT)
async def test_bad_input_gets_a_clear_error_and_the_service_still_answers(
        kernel: Kernel, http: aiohttp.ClientSession, method: str, path: str, body: bytes | None, status: int,
        code: str | None, mentions: str | None) -> None:
    headers = {"Content-Type": "application/json"} if body is not None else {}
    async with http.request(method, kernel.edge_url + path, data=body, headers=headers) as resp:
        assert resp.status == status, await resp.text()
        assert resp.content_type == "application/json"
        error = (await resp.json())["error"]
    assert set(error) >= {"code", "message"}
    assert isinstance(error["message"], str) and error["message"]
    if code is not None:
        assert error["code"] == code
    if mentions is not None:
        assert mentions.lower() in error["message"].lower()
    await _ping_still_answers(http, kernel)


async def test_a_body_just_under_the_limit_is_served(kernel: Kernel, http: aiohttp.ClientSession) -> None:
    payload = {"k": "x" * (900 * 1024)}
    async with http.post(f"{kernel.edge_url}{ECHO}", json=payload) as resp:
        assert resp.status == 200
        assert await resp.json() == payload


async def test_a_declared_length_far_above_the_limit_is_refused_at_once(kernel: Kernel,
                                                                        http: aiohttp.ClientSession) -> None:
    host, port = kernel.edge_url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(b"POST /api/v1/indicators HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1000000000000\r\n\r\n")  # and never a byte of that body
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
    finally:
        writer.close()

    assert head.startswith(b"HTTP/1.1 413 ")
    assert b"connection: close" in head.lower()
    await _ping_still_answers(http, kernel)


async def test_unknown_op_and_unknown_service_over_zeromq(kernel: Kernel, client: mdp.AsyncClient,
                                                          http: aiohttp.ClientSession) -> None:
    with pytest.raises(NotFound) as caught:
        await client.request("echo", "no_such_op")
    assert "no_such_op" in caught.value.message and caught.value.field == "op"
    with pytest.raises(Unavailable) as down:
        await client.request("no-such-service", "ping")
    assert "no-such-service" in down.value.message
    assert await client.request("echo", "ping") == "pong"
    await _ping_still_answers(http, kernel)


_BODIES = [None, b"", b"{}", b"[1]", b"\xff", b'{"a":', b'{"model_id": 5, "args": null}', b"1e999"]


async def test_no_client_input_ever_gets_a_500(kernel: Kernel, http: aiohttp.ClientSession) -> None:
    document = await _openapi(kernel, http)
    seen: set[int] = set()
    for path, ops in document["paths"].items():
        url = kernel.edge_url + re.sub(r"{\w+}", "%00%ff..", path) + "?symbol=%ff&timeframes=,,"
        for method in ops:
            for body in _BODIES:
                async with http.request(method.upper(), url, data=body) as resp:
                    seen.add(resp.status)
                    assert resp.status != 500, (method, path, body, await resp.text())
    assert seen >= {200, 503}
    await _ping_still_answers(http, kernel)


# -- request ids ------------------------------------------------------------------------------------------


async def test_request_id_is_echoed(kernel: Kernel, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{kernel.edge_url}/api/v1/ping", headers={"X-Request-Id": "desk-42"}) as resp:
        assert resp.status == 200
        assert resp.headers["X-Request-Id"] == "desk-42"
    async with http.post(f"{kernel.edge_url}/api/v1/sentiment/analyze", json={},
                         headers={"X-Request-Id": "desk-43"}) as resp:
        assert resp.status == 400
        assert resp.headers["X-Request-Id"] == "desk-43"


async def test_request_id_is_generated_when_absent(kernel: Kernel, http: aiohttp.ClientSession) -> None:
    ids = []
    for _ in range(2):
        async with http.get(f"{kernel.edge_url}/api/v1/ping") as resp:
            assert resp.status == 200
            ids.append(resp.headers.get("X-Request-Id"))
    assert all(ids) and ids[0] != ids[1]


async def test_error_responses_carry_a_generated_request_id(kernel: Kernel, http: aiohttp.ClientSession) -> None:
    async with http.post(f"{kernel.edge_url}/api/v1/sentiment/analyze", json={}) as resp:
        assert resp.status == 400
        assert resp.headers.get("X-Request-Id")
    async with http.post(f"{kernel.edge_url}{ECHO}", data=b"{not json") as resp:
        assert resp.status == 400
        assert resp.headers.get("X-Request-Id")


_PROBE = """
from ml_processing.core import log  # the request id the kernel keeps: no plugin API reads it
from ml_processing.sdk import Actor, Route, hookimpl


class Probe(Actor):
    name = "probe"

    def handle_rid(self, args):
        current = log.REQUEST.get()
        return {"rid": current[2] if current else None}


@hookimpl
def register_actors(settings):
    return [Probe]


@hookimpl
def register_routes():
    return [Route("GET", "/api/v1/probe/rid", "probe", "rid", "The request id the actor sees")]
"""


@pytest.fixture
def probe_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    with plugin_module(monkeypatch, tmp_path / "site", "mlp_rid_probe", _PROBE):
        yield "mlp_rid_probe"


async def test_request_id_reaches_the_actor(probe_module: str, tmp_path: Path, http: aiohttp.ClientSession) -> None:
    async with running(make_config(tmp_path, modules=(probe_module,))) as kernel:
        async with http.get(f"{kernel.edge_url}/api/v1/probe/rid", headers={"X-Request-Id": "trace-7"}) as resp:
            assert resp.status == 200
            assert await resp.json() == {"rid": "trace-7"}
        async with http.get(f"{kernel.edge_url}/api/v1/probe/rid") as resp:
            generated = resp.headers["X-Request-Id"]
            assert json.loads(await resp.text()) == {"rid": generated}
