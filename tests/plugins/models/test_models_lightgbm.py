"""LightGBM as a model kind: its ONNX fast path answers what the native library answers (binary, multiclass,
regression; rows with missing values too), uploads of its text format over REST, and training jobs that
train, refresh and promote LightGBM boosters like xgboost ones."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import lightgbm as lgb
import numpy as np
import pytest

from ml_processing.core.config import PluginSection
from ml_processing.core.errors import BadRequest
from ml_processing.core.kernel import Kernel
from ml_processing.plugins.models.lightgbm_kind import LightGBMKind
from ml_processing.sdk.synthetic import market
from tests.conftest import make_config
from tests.support.kernels import running
from tests.support.models import NAMES, X, Y
from tests.support.rest import call

MARKET = market(3_000, seed=5, momentum=0.25)
THREE = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0.5)


def booster_text(objective: str, labels: np.ndarray, rounds: int = 40, **params: Any) -> bytes:
    booster = lgb.train({"objective": objective, "num_leaves": 15, "num_threads": 1, "verbose": -1, "seed": 0,
                         **params}, lgb.Dataset(X, labels), num_boost_round=rounds)
    return booster.model_to_string().encode()


@pytest.mark.parametrize(("objective", "labels", "params"), [
    ("binary", Y, {}), ("multiclass", THREE, {"num_class": 3}), ("regression", X[:, 0] * 3 - X[:, 2], {}),
    ("binary", Y, {"zero_as_missing": True}),
])
def test_the_onnx_path_answers_what_lightgbm_answers(tmp_path: Path, objective: str, labels: np.ndarray,
                                                     params: dict[str, Any]) -> None:
    kind = LightGBMKind()
    data = booster_text(objective, labels, **params)
    described = kind.check(data, "txt")
    (tmp_path / "model.txt").write_bytes(data)
    manifest: dict[str, Any] = {"artifact": "model.txt", "n_features": described.n_features,
                                "task": described.task, "files": {}}
    (tmp_path / "model.onnx").write_bytes(kind.compile(tmp_path, manifest)["model.onnx"])
    manifest["files"] = {"model.onnx": "checked by the registry"}
    predictor = kind.load(tmp_path, manifest, {"onnx_max_rows": 10_000})
    assert predictor.paths() == ["onnx", "native"] and predictor.classes == described.classes
    rows = np.random.default_rng(9).normal(size=(2000, 6)) * 2
    rows[::7, 1] = np.nan  # missing values travel both paths the same way
    rows[::11, 2] = 0.0
    fast, native = predictor.predict(rows), predictor.native(rows)
    gaps = np.isnan(rows).any(axis=1) | (rows == 0).any(axis=1)
    if params.get("zero_as_missing"):  # the converter does not follow splits on zero as missing
        assert fast.path == "native" and predictor.predict(rows[gaps][:10]).path == "native"
        rows, native = rows[~gaps], predictor.native(rows[~gaps])
        fast = predictor.predict(rows)
    assert (fast.path, native.path) == ("onnx", "native")
    if described.task == "regression":
        np.testing.assert_allclose(fast.values, native.values, rtol=1e-5, atol=1e-5)
        return
    np.testing.assert_allclose(fast.proba, native.proba, atol=1e-5)
    assert np.mean(fast.values == native.values) > 0.999  # a label can differ only on a float32 tie
    assert set(native.values.tolist()) <= set(described.classes or [])


def test_files_that_are_not_lightgbm_models_are_refused() -> None:
    kind = LightGBMKind()
    for data in (b"", b"tree\nversion=v4\nnot really", b"{}", booster_text("binary", Y)[:300]):
        with pytest.raises(BadRequest, match="LightGBM") as err:
            kind.check(data, "txt")
        assert err.value.field == "artifact"
    with pytest.raises(BadRequest, match="ranking"):
        ranker = lgb.train({"objective": "lambdarank", "verbose": -1, "num_threads": 1},
                           lgb.Dataset(X, (X[:, 0] > 0).astype(int), group=[100] * 6), num_boost_round=3)
        kind.check(ranker.model_to_string().encode(), "txt")


@pytest.fixture
async def trainer(tmp_path: Path) -> AsyncIterator[Kernel]:
    cfg = make_config(tmp_path, modules=(), sections={"models": PluginSection(True, {"defaults": False, "live": []})})
    async with running(cfg) as kernel:
        await kernel.request("features", "fit", {"pipeline": "default", **MARKET})
        yield kernel


async def finished(kernel: Kernel, job: dict[str, Any]) -> dict[str, Any]:
    for _ in range(1200):
        state: dict[str, Any] = await kernel.request("models", "job", {"job_id": job["id"]})
        if state["status"] not in ("queued", "running"):
            return state
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job['id']} still {state['status']}")


async def test_upload_both_paths_and_training_jobs(trainer: Kernel) -> None:
    data = booster_text("binary", Y)
    async with aiohttp.ClientSession() as http:
        version = await call(http, trainer, "POST", "/api/v1/models/gbm/versions",
                             {"kind": "lightgbm", "artifact": base64.b64encode(data).decode(), "features": NAMES})
        assert version["paths"] == ["onnx", "native"] and version["details"]["objective"] == "binary"
        one = await call(http, trainer, "POST", "/api/v1/predict", {"model": "gbm", "features": X[4].tolist()})
        batch = await call(http, trainer, "POST", "/api/v1/predict/batch", {"model": "gbm", "rows": X[:100].tolist()})
    assert one["path"] == "onnx" and batch["path"] == "native"  # 100 rows: above onnx_max_rows
    assert one["probabilities"] == pytest.approx(batch["probabilities"][4], abs=1e-5)

    done = await finished(trainer, await trainer.request("models", "train", {
        "model_id": "boosted", "kind": "lightgbm", **MARKET, "params": {"n_estimators": 20, "num_leaves": 7}}))
    assert done["status"] == "done", done
    assert set(done["result"]["metrics"]) >= {"accuracy", "log_loss", "auc"}
    refreshed = await finished(trainer, await trainer.request("models", "train", {
        "model_id": "boosted", "kind": "lightgbm", **MARKET, "refresh": True, "promote": True,
        "params": {"n_estimators": 10, "num_leaves": 7}}))
    assert refreshed["status"] == "done" and refreshed["result"]["promoted"], refreshed
    current = await trainer.request("models", "get", {"model_id": "boosted"})
    assert current["current"] == 2 and current["details"]["trees"] == 30  # 20 of version 1, then 10 more
    assert current["details"]["refreshed"] and current["paths"] == ["onnx", "native"]
    returns = await finished(trainer, await trainer.request("models", "train", {
        "model_id": "returns", "kind": "lightgbm", **MARKET, "label": {"type": "return", "horizon": 2},
        "params": {"n_estimators": 10}}))
    assert returns["status"] == "done" and "rmse" in returns["result"]["metrics"], returns
    out = await trainer.request("models", "predict", {"model": "returns", "features": [0.1, 0.2, 0.3, 0.4]})
    assert out["probabilities"] is None and np.isfinite(out["prediction"])
