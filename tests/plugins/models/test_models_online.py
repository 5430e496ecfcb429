"""Models that keep learning, on a real kernel: adaptive ensemble weights, prequential scores, drift events,
live predictions and signals from bars over real pub/sub, self-labelling, river learning and checkpoints
that survive a restart."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
import xgboost as xgb

from ml_processing.core.config import PluginSection
from ml_processing.core.kernel import Kernel
from ml_processing.plugins.models.online import Hedge, Scores
from ml_processing.sdk import synthetic
from tests.conftest import make_config
from tests.support.feed import pubsub
from tests.support.kernels import running
from tests.support.models import X, Y

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def booster(labels: np.ndarray, seed: int = 1) -> bytes:
    model = xgb.train({"objective": "binary:logistic", "max_depth": 3, "nthread": 1, "seed": seed},
                      xgb.DMatrix(X, label=labels), num_boost_round=20)
    return bytes(model.save_raw(raw_format="ubj"))


def test_hedge_moves_weight_to_the_member_with_lower_loss_and_keeps_a_floor() -> None:
    hedge = Hedge(["good", "bad"], eta=0.5, floor=0.1)
    for _ in range(200):
        hedge.update([0.1, 2.0])
    assert hedge.weights[0] > 0.9 and 0.05 <= hedge.weights[1] < 0.1  # never below floor / members
    assert sum(hedge.weights) == pytest.approx(1.0)
    hedge.reset()
    assert hedge.weights == [0.5, 0.5] and hedge.updates == 0


def test_scores_detect_a_change_in_the_error_rate() -> None:
    scores = Scores(window=100)
    drifted = [scores.update(1, 1, {0: 0.2, 1: 0.8}) for _ in range(400)]
    assert not any(drifted)
    drifted = [scores.update(1, 0, {0: 0.8, 1: 0.2}) for _ in range(400)]
    assert any(drifted) and scores.drifts >= 1
    report = scores.report()
    assert report["labels"] == 800 and report["rolling_accuracy"] == 0.0 and report["accuracy"] == 0.5


async def test_ensemble_weights_follow_the_better_member_and_its_loss_tracks_the_best(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, modules=(), sections={"models": PluginSection(True, {"defaults": False, "live": []})})
    kernel = Kernel(cfg)
    await kernel.start()
    try:
        await kernel.request("models", "register", {"model_id": "good", "kind": "xgboost", "artifact": booster(Y)})
        await kernel.request("models", "register", {"model_id": "bad", "kind": "xgboost",
                                                     "artifact": booster(1 - Y, seed=2)})  # made worse: inverted
        await kernel.request("models", "register", {"model_id": "mix", "kind": "ensemble",
                                                     "artifact": b'{"members": ["good", "bad"]}'})
        start = await kernel.request("models", "weights", {"model_id": "mix"})
        assert start["weights"] == [0.5, 0.5]
        for row, label in zip(X[:300].tolist(), Y[:300].tolist(), strict=True):
            await kernel.request("models", "learn", {"model": "mix", "features": row, "label": label})
        weights = await kernel.request("models", "weights", {"model_id": "mix"})
        assert weights["weights"][0] > 0.95 and weights["updates"] == 300
        live = await kernel.request("models", "live", {})
        loss = {name: live["scores"][name]["log_loss"] for name in ("mix", "good", "bad")}
        assert loss["good"] < loss["mix"] < loss["bad"]
        assert loss["mix"] - loss["good"] < 0.25 * (loss["bad"] - loss["good"])  # tracks the best member
        reset = await kernel.request("models", "reset_weights", {"model_id": "mix"})
        assert reset["weights"] == [0.5, 0.5]
    finally:
        await kernel.stop()


async def test_a_cached_prediction_is_the_answer_the_model_gives_now(tmp_path: Path) -> None:
    """Issue 11: an ensemble whose weights moved served its old cached answer. Learning, weight changes and
    a member's new version drop the cached predictions of the model and of the models built on it; a model
    that did not change keeps its cache."""
    cfg = make_config(tmp_path, modules=(), sections={"models": PluginSection(True, {"defaults": False, "live": []})})
    kernel = Kernel(cfg)
    await kernel.start()
    try:
        await kernel.request("models", "register", {"model_id": "good", "kind": "xgboost", "artifact": booster(Y)})
        await kernel.request("models", "register", {"model_id": "bad", "kind": "xgboost",
                                                     "artifact": booster(1 - Y, seed=2)})
        await kernel.request("models", "register", {"model_id": "mix", "kind": "ensemble",
                                                     "artifact": b'{"members": ["good", "bad"]}'})
        row = X[500].tolist()

        async def predict(model: str) -> dict[str, Any]:
            out: dict[str, Any] = await kernel.request("models", "predict", {"model": model, "features": row})
            batch = await kernel.request("models", "predict_batch", {"model": model, "rows": [row]})
            assert out["probabilities"] == pytest.approx(batch["probabilities"][0].tolist(), abs=1e-9)
            return out

        first = await predict("mix")
        assert not first["cached"] and (await predict("mix"))["cached"]
        assert not (await predict("good"))["cached"]
        for features, label in zip(X[:50].tolist(), Y[:50].tolist(), strict=True):
            await kernel.request("models", "learn", {"model": "mix", "features": features, "label": label})
        learned = await predict("mix")  # the weights moved: the model's answer now
        assert not learned["cached"] and learned["probabilities"] != pytest.approx(first["probabilities"])
        assert (await predict("good"))["cached"]  # a fixed member did not change
        await kernel.request("models", "reset_weights", {"model_id": "mix"})
        reset = await predict("mix")
        assert not reset["cached"] and reset["probabilities"] == pytest.approx(first["probabilities"])
        await kernel.request("models", "register", {"model_id": "good", "kind": "xgboost",
                                                     "artifact": booster(Y, seed=7), "promote": True})
        swapped = await predict("mix")  # a member's new version: the ensemble follows it
        assert not swapped["cached"]
        health = await kernel.request("kernel", "health", {})
        metrics = await kernel.request("kernel", "metrics_ml", {})
        accuracy = health["performance_metrics"]["model_accuracy"]
        assert set(accuracy) == {"mix", "good", "bad"} and accuracy["good"] > accuracy["bad"]
        assert metrics["performance_metrics"]["model_accuracy"] == accuracy
    finally:
        await kernel.stop()


async def test_a_change_in_errors_publishes_model_drift(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, modules=(), sections={"models": PluginSection(True, {"defaults": False, "live": []})})
    async with running(cfg) as kernel:
        await kernel.request("models", "register", {"model_id": "m", "kind": "xgboost", "artifact": booster(Y)})
        async with pubsub(kernel, b"model.drift") as (_, sub):
            row = X[0].tolist()
            predicted = (await kernel.request("models", "predict", {"model": "m", "features": row}))["prediction"]
            for label in [predicted] * 300 + [1 - predicted] * 300:
                await kernel.request("models", "learn", {"model": "m", "features": row, "label": label})
            assert await sub.poll(3000), "no model.drift event"
            topic, body = await sub.recv_multipart()
        event = msgpack.unpackb(body)
        assert topic == b"model.drift" and event["model"] == "m" and event["labels"] > 300
        health = await kernel.request("kernel", "health_models", {})
        assert health["models"][0]["live"]["drifts"] >= 1


async def test_live_predictions_signals_self_labels_learning_and_checkpoints(tmp_path: Path) -> None:
    """The default models attached to bars: predictions and signals on pub/sub, labels joined from later bars,
    the river member learning; its learning is a new version after a restart."""
    options = {"live": [{"model": "ensemble", "horizon": 1, "buy_above": 0.5, "sell_below": 0.5}]}
    cfg = make_config(tmp_path, modules=(), sections={"models": PluginSection(True, options),
                                                      "indicators": PluginSection(True, {"timeframes": []})})
    kernel = Kernel(cfg)
    await kernel.start()
    try:
        market = synthetic.market(120, seed=3, momentum=0.25)
        bars = synthetic.rows(market)
        received: list[tuple[bytes, dict[str, Any]]] = []
        async with pubsub(kernel, b"prediction.SYN", b"signal.SYN") as (pub, sub):
            for bar in bars:
                await pub.send_multipart([b"bar.SYN.1m", msgpack.packb(bar)])
                await asyncio.sleep(0.002)
            while await sub.poll(1500):
                topic, body = await sub.recv_multipart()
                received.append((topic, msgpack.unpackb(body)))
        predictions = [b for t, b in received if t == b"prediction.SYN"]
        signals = [b for t, b in received if t == b"signal.SYN"]
        assert len(predictions) == len(bars) - 20  # every bar after the pipeline's 20-bar lookback
        assert predictions[0]["ts"] == bars[20]["ts"] and predictions[0]["model"] == "ensemble@1"
        assert signals and all(s["side"] in ("buy", "sell") and "crossed" in s["reason"] for s in signals)
        live = await kernel.request("models", "live", {})
        assert live["counts"]["labels"] == len(predictions) - 1  # the last one waits for the next bar
        assert live["scores"]["river_default"]["labels"] == len(predictions) - 1
        assert live["weights"]["ensemble"]["updates"] == len(predictions) - 1
        health = await kernel.request("kernel", "health", {})
        assert health["technical_analysis"]["signals_generated"] == len(signals)
        assert set(health["performance_metrics"]["model_accuracy"]) >= {"ensemble", "river_default", "neural_net"}
        metrics = await kernel.request("kernel", "metrics_ml", {})
        assert 0.0 <= metrics["performance_metrics"]["model_accuracy"]["neural_net"] <= 1.0  # the seed's example
        weights = live["weights"]["ensemble"]["weights"]
    finally:
        await kernel.stop()  # checkpoints the river member and the ensemble weights
    kernel = Kernel(cfg)
    await kernel.start()
    try:
        river = await kernel.request("models", "get", {"model_id": "river_default"})
        assert river["current"] == 2 and [v["version"] for v in river["versions"]] == [1, 2]
        assert river["metrics"]["labels"] == len(predictions) - 1
        again = await kernel.request("models", "weights", {"model_id": "ensemble"})
        assert again["weights"] == pytest.approx(weights, abs=1e-6)
    finally:
        await kernel.stop()


async def test_drift_of_a_live_model_starts_its_configured_retraining(tmp_path: Path) -> None:
    retrain = {"model_id": "m", "kind": "xgboost", "params": {"n_estimators": 10}, "promote": True}
    options = {"defaults": False, "live": [{"model": "m", "horizon": 0, "retrain": retrain}]}
    cfg = make_config(tmp_path, modules=(), sections={"models": PluginSection(True, options),
                                                      "indicators": PluginSection(True, {"timeframes": []})})
    kernel = Kernel(cfg)
    await kernel.start()
    try:
        market = synthetic.market(700, seed=11, momentum=0.25)
        fitted = await kernel.request("features", "fit", {"pipeline": "default", **market})
        rows = await kernel.request("features", "transform", {"pipeline": fitted["pipeline"], **market})
        labels = (np.diff(market["close"])[rows["index"][:-1]] > 0).astype(int)
        model = xgb.train({"objective": "binary:logistic", "nthread": 1, "max_depth": 2},
                          xgb.DMatrix(np.asarray(rows["values"][:-1]), label=labels), num_boost_round=5)
        await kernel.request("models", "register", {"model_id": "m", "kind": "xgboost", "pipeline": fitted["pipeline"],
                                                     "artifact": bytes(model.save_raw(raw_format="ubj"))})
        bars = synthetic.rows(market)
        predictions = []
        async with pubsub(kernel, b"prediction.DRI") as (pub, sub):
            for bar in bars:
                await pub.send_multipart([b"bar.DRI.1m", msgpack.packb(bar)])
                await asyncio.sleep(0.001)
            while await sub.poll(1500):
                predictions.append(msgpack.unpackb((await sub.recv_multipart())[1]))
        assert len(predictions) == len(bars) - 20
        for i, p in enumerate(predictions):  # right for a while, then always wrong: the errors drift
            label = p["prediction"] if i < 300 else 1 - p["prediction"]
            await kernel.request("models", "learn", {"model": "m", "label": label, "symbol": "DRI",
                                                     "timeframe": "1m", "ts": p["ts"]})
        live = await kernel.request("models", "live", {})
        assert live["counts"]["drifts"] >= 1 and live["counts"]["retrains"] == 1
        job_id = live["drift"]["m"]["retrain_job"]
        for _ in range(600):
            job = await kernel.request("models", "job", {"job_id": job_id})
            if job["status"] not in ("queued", "running"):
                break
            await asyncio.sleep(0.05)
        assert job["status"] == "done", job
        assert (await kernel.request("models", "get", {"model_id": "m"}))["current"] == 2
    finally:
        await kernel.stop()
