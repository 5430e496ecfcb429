"""Training jobs on a real kernel: on both executors (the local process pool and a Dask cluster),
time-ordered holdout metrics in the manifest, promotion rules, incremental xgboost refresh, river and
scikit-learn, cancellation and failures that leave the registry as it was."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ml_processing.core.config import PluginSection
from ml_processing.core.kernel import Kernel
from ml_processing.sdk.synthetic import market
from tests.conftest import make_config

MARKET = market(3_000, seed=5, momentum=0.25)


async def start_trainer(tmp_path: Path, executor: str) -> Kernel:
    options = {"defaults": False, "live": [], "executor": executor}
    kernel = Kernel(make_config(tmp_path, modules=(), sections={"models": PluginSection(True, options)}))
    await kernel.start()
    try:
        await kernel.request("features", "fit", {"pipeline": "default", **MARKET})
    except BaseException:
        await kernel.stop()
        raise
    return kernel


@pytest.fixture
async def trainer(tmp_path: Path, executor: str) -> AsyncIterator[Kernel]:
    """A kernel whose training jobs run on `executor` (each test runs on both)."""
    kernel = await start_trainer(tmp_path, executor)
    try:
        yield kernel
    finally:
        await kernel.stop()


@pytest.fixture
async def local_trainer(tmp_path: Path) -> AsyncIterator[Kernel]:
    """A kernel with the local pool: for requests refused before any job starts."""
    kernel = await start_trainer(tmp_path, "local")
    try:
        yield kernel
    finally:
        await kernel.stop()


async def finished(kernel: Kernel, job: dict[str, Any], seconds: float = 60.0) -> dict[str, Any]:
    for _ in range(int(seconds / 0.05)):
        state = await kernel.request("models", "job", {"job_id": job["id"]})
        if state["status"] not in ("queued", "running"):
            return state  # type: ignore[no-any-return]
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job['id']} still {state['status']} after {seconds} s")


async def test_train_refresh_and_promotion_rules(trainer: Kernel) -> None:
    job = await trainer.request("models", "train", {"model_id": "xg", "kind": "xgboost", **MARKET,
                                                     "params": {"n_estimators": 50, "max_depth": 3}})
    assert job["status"] in ("queued", "running") and job["id"].startswith("job-")
    done = await finished(trainer, job)
    assert done["status"] == "done", done
    result = done["result"]
    assert result["version"] == 1 and result["promoted"]  # the first version is promoted
    assert result["rows"]["test"] == pytest.approx(0.2 * (result["rows"]["train"] + result["rows"]["test"]), abs=1)
    details = await trainer.request("models", "get", {"model_id": "xg"})
    (version,) = details["versions"]
    assert set(version["metrics"]) >= {"accuracy", "log_loss", "auc"} and version["pipeline"] == "default@2"
    same = await finished(trainer, await trainer.request("models", "train", {
        "model_id": "xg", "kind": "xgboost", **MARKET, "params": {"n_estimators": 50, "max_depth": 3}}))
    assert same["result"]["version"] == 2 and not same["result"]["promoted"]  # if_better: not better, kept
    never = await finished(trainer, await trainer.request("models", "train", {
        "model_id": "xg", "kind": "xgboost", **MARKET, "promote": False, "params": {"n_estimators": 5}}))
    assert not never["result"]["promoted"]
    refreshed = await finished(trainer, await trainer.request("models", "train", {
        "model_id": "xg", "kind": "xgboost", **MARKET, "refresh": True, "promote": True, "params": {"n_estimators": 10}}))
    assert refreshed["status"] == "done" and refreshed["result"]["promoted"]
    current = await trainer.request("models", "get", {"model_id": "xg"})
    assert current["current"] == 4 and current["details"]["trees"] == 60  # 50 of version 1, then 10 more


@pytest.mark.parametrize(("kind", "params", "label"), [
    ("sklearn", {"estimator": "RandomForestClassifier", "n_estimators": 20, "max_depth": 5}, "direction"),
    ("river", {"estimator": "HoeffdingTreeClassifier"}, "direction"),
    ("xgboost", {"n_estimators": 20}, "return"),
])
async def test_every_trainable_kind(trainer: Kernel, kind: str, params: dict[str, Any], label: str) -> None:
    done = await finished(trainer, await trainer.request("models", "train", {
        "model_id": "m", "kind": kind, **MARKET, "params": params, "label": {"type": label, "horizon": 2}}))
    assert done["status"] == "done", done
    metrics = done["result"]["metrics"]
    assert ("rmse" in metrics) == (label == "return")
    out = await trainer.request("models", "predict", {"model": "m", "features": [0.1, 0.2, 0.3, 0.4]})
    assert out["version"] == 1 and (out["probabilities"] is None) == (label == "return")


async def test_a_cancelled_or_failing_job_leaves_the_registry_as_it_was(trainer: Kernel) -> None:
    slow = await trainer.request("models", "train", {"model_id": "slow", "kind": "xgboost", **MARKET,
                                                      "params": {"n_estimators": 20_000, "max_depth": 8}})
    for _ in range(200):  # wait until it trains (bounded), while /health says so
        if (await trainer.request("models", "job", {"job_id": slow["id"]}))["stage"] == "training":
            break
        await asyncio.sleep(0.05)
    health = await trainer.request("kernel", "health", {})
    assert health["ml_status"]["training_active"] is True
    cancelled = await trainer.request("models", "cancel", {"job_id": slow["id"]})
    assert cancelled["cancelled"] and cancelled["status"] == "cancelled"
    broken = await finished(trainer, await trainer.request("models", "train", {
        "model_id": "broken", "kind": "xgboost", **MARKET, "params": {"max_depth": "deep"}}))
    assert broken["status"] == "failed" and broken["error"]
    after = await finished(trainer, await trainer.request("models", "train", {
        "model_id": "after", "kind": "xgboost", **MARKET, "params": {"n_estimators": 5}}))
    assert after["status"] == "done"  # the pool came back
    listed = {m["model"] for m in (await trainer.request("models", "list", {}))["models"]}
    assert listed == {"after"}
    health = await trainer.request("kernel", "health", {})
    assert health["ml_status"]["training_active"] is False


async def test_a_river_model_that_learns_answers_from_what_it_learned(trainer: Kernel) -> None:
    """Issue 11: the same row, 0.6043 cached vs 0.9004 from the batch route after river learned. Learning drops
    the cached predictions of the model and of an ensemble built on it."""
    for model, kind in (("online", "river"), ("trees", "xgboost")):
        done = await finished(trainer, await trainer.request("models", "train", {
            "model_id": model, "kind": kind, **MARKET, "params": {"n_estimators": 10} if kind == "xgboost" else {}}))
        assert done["status"] == "done", done
    await trainer.request("models", "register", {"model_id": "both", "kind": "ensemble",
                                                  "artifact": b'{"members": ["online", "trees"]}'})
    row = [0.5, -1.0, 2.0, 1.5]

    async def predict(model: str) -> dict[str, Any]:
        out: dict[str, Any] = await trainer.request("models", "predict", {"model": model, "features": row})
        batch = await trainer.request("models", "predict_batch", {"model": model, "rows": [row]})
        assert out["probabilities"] == pytest.approx(batch["probabilities"][0].tolist(), abs=1e-9)
        return out

    before = {model: await predict(model) for model in ("online", "both")}
    for model in ("online", "both"):
        assert (await predict(model))["cached"]
    label = 1 - before["online"]["prediction"]
    for _ in range(30):
        await trainer.request("models", "learn", {"model": "online", "features": row, "label": label})
    for model in ("online", "both"):
        after = await predict(model)
        assert not after["cached"] and after["probabilities"] != pytest.approx(before[model]["probabilities"])
    assert (await predict("online"))["prediction"] == label  # it learned the row


async def test_checkpoints_follow_the_injected_clock(tmp_path: Path) -> None:
    """An online model that learned is saved as a new version when the kernel's clock passes checkpoint_s."""
    from ml_processing.core.clock import ManualClock

    options = {"defaults": False, "live": [], "checkpoint_s": 60.0}
    clock = ManualClock()
    kernel = Kernel(make_config(tmp_path, modules=(), sections={"models": PluginSection(True, options)}), clock=clock)
    await kernel.start()
    try:
        await kernel.request("features", "fit", {"pipeline": "default", **MARKET})
        done = await finished(kernel, await kernel.request("models", "train", {
            "model_id": "online", "kind": "river", **MARKET}))
        assert done["status"] == "done", done
        await kernel.request("models", "learn", {"model": "online", "features": [0.1, 0.2, 0.3, 0.4], "label": 1})
        clock.advance(59.0)
        await asyncio.sleep(0.2)
        assert (await kernel.request("models", "get", {"model_id": "online"}))["current"] == 1
        clock.advance(1.0)
        for _ in range(100):
            details = await kernel.request("models", "get", {"model_id": "online"})
            if details["current"] == 2:
                break
            await asyncio.sleep(0.05)
        assert details["current"] == 2 and details["metrics"]["labels"] == 1
        assert [v["version"] for v in details["versions"]] == [1, 2]
    finally:
        await kernel.stop()


@pytest.mark.parametrize(("args", "field"), [
    ({"kind": "xgboost", "close": [1.0]}, "model_id"),
    ({"model_id": "m", "kind": "torch", "close": [1.0]}, "kind"),
    ({"model_id": "m", "kind": "xgboost"}, "close"),
    ({"model_id": "m", "kind": "xgboost", "close": [1.0], "label": {"type": "colour"}}, "label.type"),
    ({"model_id": "m", "kind": "xgboost", "close": [1.0], "label": {"horizon": 0}}, "label.horizon"),
    ({"model_id": "m", "kind": "xgboost", "close": [1.0], "test_fraction": 0.9}, "test_fraction"),
    ({"model_id": "m", "kind": "xgboost", "close": [1.0], "promote": "maybe"}, "promote"),
    ({"model_id": "m", "kind": "river", "close": [1.0], "refresh": True}, "refresh"),
    ({"model_id": "m", "kind": "xgboost", "close": [1.0], "params": {"x": [1]}}, "params"),
    ({"model_id": "m", "kind": {"x": 1}, "close": [1.0]}, "kind"),
    ({"model_id": "m", "kind": "river", "close": [1.0], "label": {"type": "return"}}, "params"),
    ({"model_id": "m", "kind": "xgboost", "symbol": "EURUSD"}, "close"),
    ({"model_id": "m", "kind": "xgboost", "volume": [1.0]}, "close"),
])
async def test_bad_training_requests_are_named(local_trainer: Kernel, args: dict[str, Any], field: str) -> None:
    from ml_processing.core.errors import BadRequest

    with pytest.raises(BadRequest) as err:
        await local_trainer.request("models", "train", args)
    assert err.value.field == field


def test_labels_are_the_future_close_in_time_order() -> None:
    from ml_processing.plugins.models.train_request import Label, TrainArgs

    request = TrainArgs(model_id="m", kind="xgboost", close=np.array([1.0, 2.0, 1.5, 3.0, 2.0]),
                        label=Label(horizon=2))
    rows = {"values": [[0.0], [1.0], [2.0], [3.0]], "index": [1, 2, 3, 4], "features": ["a"]}
    x, y, names = request.labelled(rows)
    assert x.tolist() == [[0.0], [1.0]] and y.tolist() == [1, 1] and names == ["a"]
    returns = TrainArgs(model_id="m", kind="xgboost", close=np.array([1.0, 2.0, 1.5]), label=Label(type="return"))
    assert returns.labelled({"values": [[0.0], [1.0]], "index": [0, 1], "features": ["a"]})[1].tolist() == [1.0, -0.25]
