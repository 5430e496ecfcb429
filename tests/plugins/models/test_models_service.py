"""The models service on a real kernel: registry (upload, promote, roll back, delete), verified files on disk,
the ONNX fast path against the native libraries, inference over REST and the bus, the cache and metrics,
hot swaps under load, bad input named, and a third party's model kind."""

from __future__ import annotations

import asyncio
import base64
import json
import pickle
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
import skops.io as sio
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ml_processing.core.config import PluginSection
from ml_processing.core.errors import BadRequest
from ml_processing.core.kernel import Kernel
from ml_processing.plugins.models.kinds import SklearnKind, XGBoostKind
from tests.conftest import make_config
from tests.support.kernels import running
from tests.support.model_service import forest_artifact
from tests.support.model_service import models_config as config
from tests.support.models import NAMES, X, Y, xgb_artifact
from tests.support.rest import call
from tests.support.thirdparty import plugin_module


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[Kernel]:
    async with running(config(tmp_path)) as kernel:
        yield kernel


def upload(kind: str, artifact: bytes, fmt: str, **extra: Any) -> dict[str, Any]:
    return {"kind": kind, "format": fmt, "artifact": base64.b64encode(artifact).decode(), **extra}


async def test_register_predict_promote_rollback_delete_over_rest(service: Kernel) -> None:
    async with aiohttp.ClientSession() as http:
        first = await call(http, service, "POST", "/api/v1/models/trend/versions",
                           upload("xgboost", xgb_artifact("json"), "json", features=NAMES))
        assert (first["version"], first["current"], first["promoted"]) == (1, 1, True)
        assert first["paths"] == ["onnx", "native"] and first["n_features"] == 6 and first["task"] == "classification"
        second = await call(http, service, "POST", "/api/v1/models/trend/versions",
                            upload("xgboost", xgb_artifact("ubj", trees=10, seed=2), "ubj", features=NAMES,
                                   promote=False, metrics={"auc": 0.7}))
        assert (second["version"], second["current"], second["promoted"]) == (2, 1, False)
        row = X[3].tolist()
        v1 = await call(http, service, "POST", "/api/v1/predict", {"model": "trend", "features": row})
        assert v1["version"] == 1 and v1["path"] == "onnx" and v1["classes"] == [0, 1]
        assert v1["prediction"] in (0, 1) and abs(sum(v1["probabilities"]) - 1) < 1e-6 and v1["latency_us"] > 0
        pinned = await call(http, service, "POST", "/api/v1/predict", {"model": "trend", "version": 2, "features": row})
        assert pinned["version"] == 2
        named = await call(http, service, "POST", "/api/v1/predict",
                           {"model": "trend", "features": dict(zip(NAMES, row, strict=True))})
        assert named["probabilities"] == v1["probabilities"]
        await call(http, service, "POST", "/api/v1/models/trend/promote", {"version": 2})
        assert (await call(http, service, "POST", "/api/v1/predict", {"model": "trend", "features": row}))["version"] == 2
        back = await call(http, service, "POST", "/api/v1/models/trend/rollback", {})
        assert back["current"] == 1 and back["serving"] == 1
        await call(http, service, "POST", "/api/v1/models/trend/rollback", {}, status=400)  # nothing earlier
        error = await call(http, service, "DELETE", "/api/v1/models/trend/versions/1", status=400)
        assert "current version" in error["error"]["message"]
        await call(http, service, "DELETE", "/api/v1/models/trend/versions/2")
        details = await call(http, service, "GET", "/api/v1/models/trend")
        assert [v["version"] for v in details["versions"]] == [1] and details["status"] == "ok"
        forced = await call(http, service, "DELETE", "/api/v1/models/trend/versions/1", force="true")
        assert forced["versions"] == []
        await call(http, service, "POST", "/api/v1/predict", {"model": "trend", "features": row}, status=404)
        listed = await call(http, service, "GET", "/api/v1/models")
        assert listed["models"] == []


async def test_sklearn_models_through_skops_and_msgpack_bytes_over_the_bus(service: Kernel) -> None:
    forest = await service.request("models", "register", {"model_id": "forest", "kind": "sklearn", "format": "skops",
                                                           "artifact": forest_artifact()})
    assert forest["paths"] == ["onnx", "native"]
    linear = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, Y)
    pipe = await service.request("models", "register", {"model_id": "linear", "kind": "sklearn",
                                                         "artifact": sio.dumps(linear)})
    assert pipe["paths"] == ["native"] and pipe["details"]["estimator"] == "Pipeline"
    out = await service.request("models", "predict_batch", {"model": "linear", "rows": X[:50]})
    np.testing.assert_allclose(out["probabilities"], linear.predict_proba(X[:50]), rtol=1e-12)
    assert out["rows"] == 50 and list(out["predictions"]) == linear.predict(X[:50]).tolist()
    regressor = RandomForestRegressor(n_estimators=5, random_state=0).fit(X, X[:, 0])
    reg = await service.request("models", "register", {"model_id": "level", "kind": "sklearn",
                                                        "artifact": sio.dumps(regressor)})
    assert reg["task"] == "regression"
    one = await service.request("models", "predict", {"model": "level", "features": X[7].tolist()})
    assert one["probabilities"] is None and one["prediction"] == pytest.approx(regressor.predict(X[7:8])[0], rel=1e-5)


@pytest.mark.parametrize("kind", ["xgboost", "sklearn"])
def test_onnx_path_equals_the_native_library(tmp_path: Path, kind: str) -> None:
    """Both paths on the same rows: labels equal, probabilities within 1e-5."""
    kinds = {"xgboost": (XGBoostKind(), xgb_artifact("ubj", trees=200, seed=3), "model.ubj"),
             "sklearn": (SklearnKind(), forest_artifact(), "model.skops")}
    kind_, data, filename = kinds[kind]
    described = kind_.check(data, "ubj" if kind == "xgboost" else "skops")
    (tmp_path / filename).write_bytes(data)
    manifest = {"artifact": filename, "n_features": described.n_features, "files": {}}
    graph = kind_.compile(tmp_path, manifest)
    (tmp_path / "model.onnx").write_bytes(graph["model.onnx"])
    manifest["files"] = {"model.onnx": "checked by the registry"}
    predictor = kind_.load(tmp_path, manifest, {"onnx_max_rows": 10_000})
    rows = np.random.default_rng(9).normal(size=(2000, 6)) * 2
    rows[::97, 1] = np.nan  # missing values travel both paths the same way
    fast, native = predictor.predict(rows), predictor.native(rows)
    assert fast.path == ("onnx" if kind == "xgboost" else "native")  # scikit-learn's NaN rules: native only
    clean = rows[~np.isnan(rows).any(axis=1)]
    assert predictor.predict(clean).path == "onnx"
    np.testing.assert_allclose(predictor.predict(clean).proba, predictor.native(clean).proba, atol=1e-5)
    np.testing.assert_allclose(fast.proba, native.proba, atol=1e-5)
    agree = np.mean(fast.values == native.values)
    assert agree > 0.999  # a label can only differ where the probabilities tie within float32 rounding


async def test_bad_input_is_named_and_the_service_keeps_serving(service: Kernel) -> None:
    await service.request("models", "register", {"model_id": "m", "kind": "xgboost", "artifact": xgb_artifact(),
                                                  "features": NAMES})
    linear = sio.dumps(make_pipeline(StandardScaler(), LogisticRegression()).fit(X, Y))
    await service.request("models", "register", {"model_id": "lin", "kind": "sklearn", "artifact": linear})
    cases = [
        ("/api/v1/predict", {"model": "nope", "features": [0.0] * 6}, 404, "model"),
        ("/api/v1/predict", {"model": "m", "version": 9, "features": [0.0] * 6}, 404, "version"),
        ("/api/v1/predict", {"model": "../m", "version": 1, "features": [0.0] * 6}, 404, "model"),
        ("/api/v1/predict", {"model": "x" * 200, "version": 1, "features": [0.0] * 6}, 404, "model"),
        ("/api/v1/predict", {"model": "m", "features": [0.0] * 5}, 400, "features"),
        ("/api/v1/predict", {"model": "m", "features": [0.0] * 5 + ["x"]}, 400, "features[5]"),
        ("/api/v1/predict", {"model": "m", "features": [0.0] * 5 + [True]}, 400, "features[5]"),
        ("/api/v1/predict", {"model": "m", "features": {"f0": 1.0}}, 400, "features"),
        ("/api/v1/predict", {"model": "m", "features": "1,2,3"}, 400, "features"),
        ("/api/v1/predict", {"model": "lin", "features": [0.0] * 5 + [None]}, 400, "features[5]"),
        ("/api/v1/predict", {"model": "m", "features": [0.0] * 6, "version": "two"}, 400, "version"),
        ("/api/v1/predict/batch", {"model": "m", "rows": [[0.0] * 6, [0.0] * 5]}, 400, "rows[1]"),
        ("/api/v1/predict", {"model": "m", "bars": {"close": [1.0]}}, 400, "bars"),
        ("/api/v1/models/x/versions", upload("xgboost", b"not a model", "json"), 400, "artifact"),
        ("/api/v1/models/x/versions", upload("river", b"\x80\x04K\x01.", "river"), 400, "format"),
        ("/api/v1/models/x/versions", upload("pytorch", b"x", "pt"), 400, "kind"),
        ("/api/v1/models/x/versions", {**upload("xgboost", xgb_artifact(), "ubj"), "features": ["a"]}, 400,
         "features"),
        ("/api/v1/models/x/versions", {"kind": "xgboost", "format": "ubj", "artifact": "***"}, 400, "artifact"),
        ("/api/v1/models/bad name/versions", upload("xgboost", xgb_artifact(), "ubj"), 400, "model_id"),
    ]
    async with aiohttp.ClientSession() as http:
        for path, body, status, field in cases:
            out = await call(http, service, "POST", path, body, status=status)
            assert out["error"]["field"] == field, (path, body, out)
        nan_ok = await call(http, service, "POST", "/api/v1/predict", {"model": "m", "features": [0.0] * 5 + [None]})
        assert nan_ok["prediction"] in (0, 1)  # xgboost takes missing values
        health = await call(http, service, "GET", "/health")
        assert health["actors"]["models"]["state"] == "running" and health["actors"]["models"]["restarts"] == 0


async def test_register_with_a_kind_that_is_not_a_string_is_a_400_and_never_restarts_the_actor(
        service: Kernel) -> None:
    """Issue 11: a `kind` that is an object or a list answered 500 and restarted the actor (six: failed)."""
    await service.request("models", "register", {"model_id": "m", "kind": "xgboost", "artifact": xgb_artifact()})
    artifact = base64.b64encode(xgb_artifact()).decode()
    async with aiohttp.ClientSession() as http:
        for kind in [{"name": "xgboost"}, ["xgboost"], 7, None, True] * 2:
            out = await call(http, service, "POST", "/api/v1/models/x/versions", {"kind": kind, "artifact": artifact},
                             status=400)
            assert out["error"]["field"] == "kind", out
        for artifact_value, field in [(123, "artifact"), ("", "artifact"), (["AAE="], "artifact")]:
            out = await call(http, service, "POST", "/api/v1/models/x/versions",
                             {"kind": "xgboost", "artifact": artifact_value}, status=400)
            assert out["error"]["field"] == field, out
        out = await call(http, service, "POST", "/api/v1/models/x/versions",
                         {"kind": "xgboost", "artifact": artifact, "metrics": [1]}, status=400)
        assert out["error"]["field"] == "metrics"
        health = await call(http, service, "GET", "/health")
        assert health["actors"]["models"]["state"] == "running" and health["actors"]["models"]["restarts"] == 0
        assert health["actors"]["models"]["internal_errors"] == 0
        ok = await call(http, service, "POST", "/api/v1/predict", {"model": "m", "features": X[0].tolist()})
        assert ok["version"] == 1


async def test_v2_inference_errors_are_the_protocols_with_the_fault_s_status(service: Kernel) -> None:
    await service.request("models", "register", {"model_id": "m", "kind": "xgboost", "artifact": xgb_artifact()})
    def infer(data: list[Any], shape: list[int], datatype: str = "FP64") -> bytes:
        return json.dumps({"inputs": [{"name": "input-0", "datatype": datatype, "shape": shape, "data": data}]}).encode()

    good = infer(X[0].tolist(), [1, 6])
    cases = [
        ("/v2/models/nope/infer", good, 404),
        ("/v2/models/m/versions/9/infer", good, 404),
        ("/v2/models/m/versions/abc/infer", good, 404),
        ("/v2/models/m/versions/0/infer", good, 404),
        ("/v2/models/" + "x" * 300 + "/versions/1/infer", good, 404),
        ("/v2/models/m/infer", b"{not json", 400),
        ("/v2/models/m/infer", infer([0.0] * 5, [1, 5]), 400),
        ("/v2/models/m/infer", infer(["a"] * 6, [1, 6], "BYTES"), 400),
    ]
    async with aiohttp.ClientSession() as http:
        for path, body, status in cases:
            async with http.post(service.edge_url + path, data=body,
                                 headers={"Content-Type": "application/json"}) as resp:
                payload = await resp.json(content_type=None)
                assert resp.status == status, (path, payload)
                assert set(payload) == {"error"} and isinstance(payload["error"], str) and payload["error"], payload
        for path in ("/v2/models/" + "x" * 300 + "/versions/1", "/v2/models/..%2Fm/versions/1/ready"):
            async with http.get(service.edge_url + path) as resp:
                assert resp.status == 404, path  # a name that is not a model's never reaches the file system
        async with http.post(service.edge_url + "/v2/models/m/versions/1/infer", data=good,
                             headers={"Content-Type": "application/json"}) as resp:
            assert resp.status == 200
            answer = await resp.json()
    own = await service.request("models", "predict", {"model": "m", "features": X[0].tolist()})
    proba = next(o for o in answer["outputs"] if o["name"] == "predict_proba")
    assert proba["data"] == pytest.approx(own["probabilities"], abs=1e-6)


def config_small_batch(tmp_path: Path) -> Any:
    return config(tmp_path, max_batch=100)


@pytest.fixture
async def small(tmp_path: Path) -> AsyncIterator[Kernel]:
    async with running(config_small_batch(tmp_path)) as kernel:
        yield kernel


async def test_batch_limit_is_413(small: Kernel) -> None:
    await small.request("models", "register", {"model_id": "m", "kind": "xgboost", "artifact": xgb_artifact()})
    async with aiohttp.ClientSession() as http:
        out = await call(http, small, "POST", "/api/v1/predict/batch", {"model": "m", "rows": [[0.0] * 6] * 101},
                         status=413)
        assert out["error"]["field"] == "rows"
        ok = await call(http, small, "POST", "/api/v1/predict/batch", {"model": "m", "rows": [[0.0] * 6] * 100})
        assert len(ok["predictions"]) == 100


async def test_a_tampered_or_foreign_file_is_refused_and_the_previous_version_serves(tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    kernel = Kernel(config(tmp_path))
    await kernel.start()
    try:
        await kernel.request("models", "register", {"model_id": "m", "kind": "xgboost", "format": "ubj",
                                                     "artifact": xgb_artifact()})
        await kernel.request("models", "register", {"model_id": "m", "kind": "xgboost", "format": "ubj",
                                                     "artifact": xgb_artifact(trees=5, seed=9), "promote": True})
        before = await kernel.request("models", "predict", {"model": "m", "version": 1, "features": X[0].tolist()})
    finally:
        await kernel.stop()
    root = kernel.config.data_path / "models" / "m"
    (root / "2" / "model.ubj").write_bytes((root / "2" / "model.ubj").read_bytes()[:-10])  # truncated
    kernel = Kernel(config(tmp_path))
    await kernel.start()
    try:
        out = await kernel.request("models", "predict", {"model": "m", "features": X[0].tolist()})
        assert out["version"] == 1 and out["probabilities"] == before["probabilities"]
        listed = await kernel.request("models", "get", {"model_id": "m"})
        assert listed["status"] == "degraded" and listed["current"] == 2 and listed["serving"] == 1
        assert "does not match its sha256" in listed["refused"]["2"]
        health = await kernel.request("kernel", "health_models", {})
        assert health["models_healthy"] == 0 and health["models_loaded"] == 1
    finally:
        await kernel.stop()

    class Boom:  # a pickle that would leave a mark if it were ever executed
        def __reduce__(self) -> Any:
            return (Path.write_text, (marker, "pwned"))

    version = root / "1"
    manifest = json.loads((version / "manifest.json").read_text())
    (version / "model.ubj").unlink()
    (version / "model.river").write_bytes(pickle.dumps(Boom()))
    manifest.update(kind="river", artifact="model.river", files={"model.river": "0" * 64})
    (version / "manifest.json").write_text(json.dumps(manifest))  # a foreign manifest: its signature fails
    kernel = Kernel(config(tmp_path))
    await kernel.start()
    try:
        listed = await kernel.request("models", "get", {"model_id": "m"})
        assert listed["status"] == "unavailable" and "signature" in listed["refused"]["1"]
        async with aiohttp.ClientSession() as http:
            out = await call(http, kernel, "POST", "/api/v1/predict", {"model": "m", "features": [0.0] * 6}, status=503)
            assert "no version that loads" in out["error"]["message"]
    finally:
        await kernel.stop()
    assert not marker.exists()


def test_skops_files_with_untrusted_types_are_refused() -> None:
    data = sio.dumps({"model": RandomForestClassifier(n_estimators=2).fit(X, Y), "extra": Path("/tmp")})
    with pytest.raises(BadRequest, match="trusted list") as err:
        SklearnKind().check(data, "skops")
    assert err.value.field == "artifact"
    with pytest.raises(BadRequest, match="not a skops file"):
        SklearnKind().check(b"PK\x03\x04 not really a zip", "skops")


async def test_cache_metrics_histograms_and_version_change(service: Kernel) -> None:
    await service.request("models", "register", {"model_id": "m", "kind": "xgboost", "artifact": xgb_artifact()})
    row = X[1].tolist()
    async with aiohttp.ClientSession() as http:
        first = await call(http, service, "POST", "/api/v1/predict", {"model": "m", "features": row})
        second = await call(http, service, "POST", "/api/v1/predict", {"model": "m", "features": row})
        assert not first["cached"] and second["cached"] and second["probabilities"] == first["probabilities"]
        await service.request("models", "register", {"model_id": "m", "kind": "xgboost",
                                                      "artifact": xgb_artifact(trees=7, seed=5), "promote": True})
        third = await call(http, service, "POST", "/api/v1/predict", {"model": "m", "features": row})
        assert third["version"] == 2 and not third["cached"]  # the new version's own answer
        ml = await call(http, service, "GET", "/metrics/ml")
        assert ml["caches"]["predictions"]["hits"] == 1 and ml["caches"]["predictions"]["misses"] == 2
        assert ml["performance_metrics"]["predictions_total"] == 3
        assert ml["performance_metrics"]["cache_hit_rate"] == "33.3%"
        async with http.get(service.edge_url + "/metrics") as resp:
            text = await resp.text()
        assert 'mlp_model_latency_seconds_count{model="m"} 3.0' in text
        assert 'mlp_cache_hits_total{cache="predictions"} 1.0' in text and "mlp_cache_evictions_total" in text
        models = await call(http, service, "GET", "/health/models")
        (entry,) = models["models"]
        assert entry["model"] == "m" and entry["version"] == 2 and entry["load_ms"] > 0 and entry["status"] == "ok"


async def test_hot_swaps_never_fail_a_request_in_flight(service: Kernel) -> None:
    for seed in (1, 2):
        await service.request("models", "register", {"model_id": "m", "kind": "xgboost",
                                                      "artifact": xgb_artifact(trees=20, seed=seed)})
    rows = np.random.default_rng(3).normal(size=(2_500, 6))  # large: predicted on the thread pool
    seen: list[int] = []

    async def client() -> None:
        for _ in range(15):
            out = await service.request("models", "predict_batch", {"model": "m", "rows": rows})
            assert len(out["predictions"]) == len(rows)
            seen.append(out["version"])
            await asyncio.sleep(0)

    async def operator() -> None:
        for i in range(60):
            await service.request("models", "promote", {"model_id": "m", "version": 1 + i % 2})
            await asyncio.sleep(0.001)

    await asyncio.gather(client(), client(), client(), operator())
    assert len(seen) == 45 and set(seen) == {1, 2}  # every request answered, by both versions


async def test_default_models_answer_the_seed_quick_start_and_load_fast_after(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, modules=(), sections={"models": PluginSection(True, {})})  # defaults on
    kernel = Kernel(cfg)
    await kernel.start()
    try:
        async with aiohttp.ClientSession() as http:
            out = await call(http, kernel, "POST", "/api/v1/predict",
                             {"features": [1.2, 0.8, -0.3, 2.1], "model": "ensemble"})
            assert out["model"] == "ensemble" and out["prediction"] in (0, 1) and len(out["probabilities"]) == 2
            health = await call(http, kernel, "GET", "/health/models")
            assert {m["model"] for m in health["models"]} == {"ensemble", "xgboost_default", "sklearn_default",
                                                              "river_default", "neural_net"}
            network = next(m for m in health["models"] if m["model"] == "neural_net")
            assert network["kind"] == "onnx" and network["paths"] == ["onnx"] and network["classes"] == [0, 1]
            assert all(m["pipeline"] == "default@2" and m["status"] == "ok" for m in health["models"])
            accuracy = {m["model"]: m["metrics"].get("accuracy") for m in health["models"]}
            assert all(a > 0.5 for name, a in accuracy.items() if name != "ensemble")
            bars = await call(http, kernel, "POST", "/api/v1/predict", {"model": "ensemble", "bars": {
                "close": (100 + np.cumsum(np.random.default_rng(1).normal(0, 0.1, 60))).tolist(),
                "volume": np.random.default_rng(2).uniform(1e3, 2e3, 60).tolist()}})
            assert bars["features"] == ["log_return_1", "volatility_20", "RSI_14", "zscore_20(volume)"]
    finally:
        await kernel.stop()
    kernel = Kernel(cfg)
    await kernel.start()
    try:
        health = await kernel.request("kernel", "health_models", {})
        assert all(m["version"] == 1 for m in health["models"])  # loaded, not trained again
        assert all(m["load_ms"] < 5_000 for m in health["models"])
        again = await kernel.request("models", "predict", {"features": [1.2, 0.8, -0.3, 2.1], "model": "ensemble"})
        assert again["probabilities"] == out["probabilities"]
    finally:
        await kernel.stop()


THIRD_PARTY = textwrap.dedent('''
    import json
    import numpy as np
    from ml_processing.sdk import BadRequest, hookimpl
    from ml_processing.sdk.model import REGRESSION, Described, ModelKind, Prediction, Predictor

    class Linear(ModelKind):
        name = "linear_json"
        formats = ("json",)

        def check(self, data, fmt):
            try:
                spec = json.loads(data)
                weights = [float(w) for w in spec["weights"]]
            except (ValueError, KeyError, TypeError) as exc:
                raise BadRequest(f"not a linear model: {exc}", field="artifact") from None
            return Described(REGRESSION, len(weights), None, {"bias": spec.get("bias", 0.0)})

        def load(self, directory, manifest, options):
            spec = json.loads((directory / manifest["artifact"]).read_bytes())
            return LinearPredictor(np.asarray(spec["weights"]), float(spec.get("bias", 0.0)))

    class LinearPredictor(Predictor):
        task = REGRESSION

        def __init__(self, weights, bias):
            self.weights, self.bias, self.n_features = weights, bias, len(weights)

        def predict(self, x):
            return Prediction(x @ self.weights + self.bias)

    @hookimpl
    def register_model_kinds():
        return [Linear()]
''')


async def test_a_third_party_model_kind_works_like_a_builtin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with plugin_module(monkeypatch, tmp_path / "plugins", "acme_models", THIRD_PARTY):
        async with running(config(tmp_path, modules=("acme_models",))) as kernel:
            kinds = {k["name"] for k in await kernel.request("models", "kinds", {})}
            assert {"xgboost", "sklearn", "river", "ensemble", "linear_json"} <= kinds
            spec = json.dumps({"weights": [1, 2, 0, 0, 0, 0], "bias": 0.5}).encode()
            await kernel.request("models", "register", {"model_id": "lin", "kind": "linear_json", "artifact": spec})
            out = await kernel.request("models", "predict", {"model": "lin", "features": [1.0, 1.0, 9, 9, 9, 9]})
            assert out["prediction"] == pytest.approx(3.5) and out["path"] == "native"
    async with running(config(tmp_path)) as kernel:  # without the plugin: its models are refused, not executed
        listed = await kernel.request("models", "get", {"model_id": "lin"})
        assert "no plugin registers model kind 'linear_json'" in listed["refused"]["1"]


def test_one_row_paths_never_start_a_thread_pool(tmp_path: Path) -> None:
    kind = XGBoostKind()
    data = xgb_artifact()
    (tmp_path / "model.ubj").write_bytes(data)
    manifest = {"artifact": "model.ubj", "n_features": 6, "files": {"model.onnx": "-"}}
    (tmp_path / "model.onnx").write_bytes(kind.compile(tmp_path, manifest)["model.onnx"])
    predictor = kind.load(tmp_path, manifest, {"native_threads": 1})
    config_ = json.loads(predictor.booster.save_config())["learner"]["generic_param"]
    assert config_["nthread"] == "1"
    options = predictor.runner.session.get_session_options()
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (1, 1)

