"""The live half of the ``models`` service: predictions on every committed bar, signals, labels, learning.

Flow for a model attached by ``[[plugins.models.live]]``: the ``features`` service publishes
``feature.SYMBOL.TIMEFRAME`` rows of its live pipelines; a row of the pipeline version the model is bound
to is predicted at once and published on ``prediction.SYMBOL``; crossing a probability threshold publishes
``signal.SYMBOL``. The prediction waits for its label: the realised direction ``horizon`` bars later (from
``bar.SYMBOL.TIMEFRAME``), or a label from outside (``label.SYMBOL``, op ``learn``). A label first scores
every model that predicted (`Scores`: accuracy, log loss, drift), then adapts the ensemble's weights
(`EnsembleWeights`), then teaches the online models. Each of those changes drops the model's cached
predictions. Online models are saved as new versions (checkpoints) every ``checkpoint_s`` of the injected
clock and at shutdown, so a restart loses no learning; ensemble weights are saved with them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import msgspec
import numpy as np

from ml_processing.bus import topics
from ml_processing.sdk import BadRequest, Clock, MlpError, get_logger
from ml_processing.sdk.model import CLASSIFICATION, Prediction

from .catalog import Catalog, Loaded
from .config import ModelsConfig
from .declarations import LearnArgs
from .inference import Inference, row
from .online import LiveSpec, Pending, Scores, SeriesState, log_loss
from .train_request import TrainArgs
from .trainer import Trainer
from .weights import EnsembleWeights

log = get_logger(__name__)

Publish = Callable[[str, Any], None]


class LiveLearning:
    def __init__(self, config: ModelsConfig, catalog: Catalog, inference: Inference, weights: EnsembleWeights,
                 trainer: Trainer, publish: Publish, clock: Clock) -> None:
        self.config = config
        self.catalog = catalog
        self.inference = inference
        self.weights = weights
        self.trainer = trainer
        self.publish = publish
        self.clock = clock
        self.specs = [LiveSpec.parse(raw, i) for i, raw in enumerate(config.live)]
        self.scores: dict[str, Scores] = {}
        self.series: dict[tuple[str, str, str], SeriesState] = {}  # (model, symbol, timeframe)
        #: Set where this process is not the one learner (a worker process or host owning some symbols): a
        #: joined label goes there, as (model, row, label), instead of being learned here.
        self.forward: Callable[[str, list[float], Any], None] | None = None
        self.dirty: set[str] = set()  # models with unsaved learning (online state, ensemble weights)
        self.counts = {"predictions": 0, "signals": 0, "labels": 0, "member_labels": 0, "unmatched_labels": 0,
                       "skipped_rows": 0, "drifts": 0, "retrains": 0}
        self.labelled_from: dict[str, tuple[str, str]] = {}  # model -> (symbol, timeframe) of its last label
        self.last_drift: dict[str, dict[str, Any]] = {}

    def subscriptions(self) -> list[tuple[str, Callable[[str, Any], None]]]:
        """What to subscribe to: the live feature rows and bars (when a model is attached), and labels."""
        wanted = [(topics.FEATURE + ".", self.on_feature), (topics.BAR + ".", self.on_bar)] if self.specs else []
        return [*wanted, (topics.LABEL + ".", self.on_label)]

    # -- rows in, predictions and signals out ---------------------------------------------------------

    def on_feature(self, topic: str, body: Any) -> None:
        parsed = topics.parse(topic)
        if parsed.symbol is None or parsed.timeframe is None or not isinstance(body, Mapping):
            return
        for spec in self.specs:
            if spec.timeframe not in (None, parsed.timeframe):
                continue
            loaded = self.catalog.current.get(spec.model)
            if loaded is None or loaded.manifest.get("pipeline") != body.get("pipeline"):
                continue
            values = body.get("transformed") if body.get("transformed") is not None else body.get("values")
            if values is None or any(v is None for v in values):
                self.counts["skipped_rows"] += 1  # warming up, or the pipeline is not fitted
                continue
            self._predict(spec, loaded, parsed.symbol, parsed.timeframe, int(body["ts"]), values)

    def _predict(self, spec: LiveSpec, loaded: Loaded, symbol: str, timeframe: str, ts: int, values: list[float]) -> None:
        x = np.asarray([values], dtype=np.float64)
        start = time.perf_counter_ns()
        prediction = loaded.predictor.predict(x)
        self.inference.count(loaded.name, 1, time.perf_counter_ns() - start)
        pending = _pending(loaded, values, prediction)
        self.publish(topics.prediction(symbol), {
            "symbol": symbol, "timeframe": timeframe, "ts": ts, "model": f"{loaded.name}@{loaded.version}",
            "prediction": pending.predicted,
            "probabilities": None if pending.proba is None else list(pending.proba.values()),
            "classes": loaded.predictor.classes})
        self.counts["predictions"] += 1
        state = self.series.setdefault((loaded.name, symbol, timeframe), SeriesState())
        state.remember(ts, pending)
        proba = pending.proba
        if proba is not None and loaded.predictor.task == CLASSIFICATION and len(proba) == 2:
            self._signal(spec, loaded, state, symbol, timeframe, ts, proba)
        if spec.horizon:  # the bars after this one may have arrived before its feature row did
            outcome = state.outcome(ts, spec.horizon)
            if outcome is not None:
                self.label(loaded.name, symbol, timeframe, ts, int(outcome))

    def _signal(self, spec: LiveSpec, loaded: Loaded, state: SeriesState, symbol: str, timeframe: str, ts: int,
                proba: Mapping[Any, float]) -> None:
        up = list(proba.values())[1]
        zone = "buy" if up >= spec.buy_above else "sell" if up <= spec.sell_below else "flat"
        if zone == state.zone:
            return
        previous, state.zone = state.zone, zone
        if zone == "flat":
            return
        threshold = spec.buy_above if zone == "buy" else spec.sell_below
        strength = (up - 0.5) * 2 if zone == "buy" else (0.5 - up) * 2
        self.publish(topics.signal(symbol), {
            "symbol": symbol, "timeframe": timeframe, "ts": ts, "side": zone, "strength": round(strength, 4),
            "model": f"{loaded.name}@{loaded.version}",
            "reason": f"P(up) {up:.3f} crossed {threshold:g} (was {previous})"})
        self.counts["signals"] += 1

    # -- labels -----------------------------------------------------------------------------------------

    def on_bar(self, topic: str, body: Any) -> None:
        """Self-labelling: the close `horizon` bars after a prediction's bar labels it (up = 1, else 0)."""
        parsed = topics.parse(topic)
        if parsed.symbol is None or parsed.timeframe is None or not isinstance(body, Mapping):
            return
        if body.get("final", True) is False:
            return
        ts, close = body.get("ts"), body.get("close")
        if not isinstance(ts, int) or isinstance(close, bool) or not isinstance(close, (int, float)):
            return
        for spec in self.specs:
            if not spec.horizon or spec.timeframe not in (None, parsed.timeframe):
                continue
            key = (spec.model, parsed.symbol, parsed.timeframe)
            state = self.series.get(key)
            if state is None:
                state = self.series[key] = SeriesState()
            if not state.add_close(ts, float(close)):
                continue  # stale: the bar rule of the live market state
            if state.count > spec.horizon:
                then_ts = state.order[-1 - spec.horizon]
                if then_ts in state.pending:
                    outcome = state.outcome(then_ts, spec.horizon)
                    # after this loop turn: the new bar's feature row (already queued) is predicted first
                    asyncio.get_running_loop().call_soon(self.label, spec.model, parsed.symbol, parsed.timeframe,
                                                         then_ts, int(outcome or 0.0))

    def on_label(self, topic: str, body: Any) -> None:
        """``label.SYMBOL``: ``{"ts", "label", "timeframe"?, "model"?}`` labels the predictions of that bar."""
        parsed = topics.parse(topic)
        if parsed.symbol is None or not isinstance(body, Mapping) or not isinstance(body.get("ts"), int):
            raise BadRequest("a label is {ts, label, timeframe?, model?} on label.SYMBOL", field="label")
        for (model, symbol, timeframe) in list(self.series):
            if symbol == parsed.symbol and body.get("timeframe") in (None, timeframe) and \
                    body.get("model") in (None, model):
                self.label(model, symbol, timeframe, body["ts"], body.get("label"))

    def label(self, model: str, symbol: str, timeframe: str, ts: int, label: Any) -> bool:
        """Join a label with the prediction made at `ts`; score, adapt and learn. False if none waited."""
        state = self.series.get((model, symbol, timeframe))
        pending = state.pending.pop(ts, None) if state is not None else None
        if pending is None:
            self.counts["unmatched_labels"] += 1
            return False
        self.counts["labels"] += 1
        self.labelled_from[model] = (symbol, timeframe)
        if self.forward is not None:
            self.forward(model, list(pending.row), label)
            return True
        self.apply(model, np.asarray(pending.row, dtype=np.float64), label, pending)
        return True

    def apply(self, model: str, x: np.ndarray, label: Any, pending: Pending) -> None:
        """Test, then train: score the model (and an ensemble's members), adapt weights, teach online models."""
        self._score(model, label, pending.predicted, pending.proba)
        loaded = self.catalog.current.get(model)
        if pending.parts and loaded is not None and model in self.weights.hedges:
            losses = []
            for member in self.weights.hedges[model].members:
                proba = pending.parts.get(member, {})
                predicted = max(proba, key=lambda c: proba[c]) if proba else None
                self._score(member.partition("@")[0], label, predicted, proba or None)
                losses.append(log_loss(label, proba) if proba else 0.0)
            self.weights.update(loaded, losses)
            self.dirty.add(model)
        for name in [model, *pending.parts]:
            target = self.catalog.current.get(name.partition("@")[0])
            if target is not None and target.predictor.online:
                target.predictor.learn(x, label)
                self.inference.invalidate(target.name)
                self.dirty.add(target.name)

    def _score(self, model: str, label: Any, predicted: Any, proba: Mapping[Any, float] | None) -> None:
        scores = self.scores.get(model)
        if scores is None:
            scores = self.scores[model] = Scores(self.config.window)
        if scores.update(label, predicted, proba):
            self.counts["drifts"] += 1
            event = {"model": model, "labels": scores.labels, "rolling_accuracy": round(scores.rolling.get(), 4),
                     "ts": int(self.clock.time() * 1000)}
            self.last_drift[model] = event
            self.publish(topics.model("drift"), event)
            log.warning("model_drift_detected", **event)
            self._retrain(model)

    def _retrain(self, model: str) -> None:
        """Start the configured retraining of a drifted model, on the bars of the series it was labelled on."""
        source = self.labelled_from.get(model)
        for spec in self.specs:
            if spec.model != model or spec.retrain is None or source is None:
                continue
            if self.trainer.active(spec.retrain["model_id"]):
                continue  # one retraining at a time per model
            try:
                request = msgspec.convert({**spec.retrain, "symbol": source[0], "timeframe": source[1]}, TrainArgs)
                job = self.trainer.train(request)
            except (MlpError, msgspec.ValidationError) as exc:
                log.error("retrain_not_started", model=model, error=getattr(exc, "message", str(exc)))
                continue
            self.counts["retrains"] += 1
            self.last_drift[model]["retrain_job"] = job["id"]
            log.info("retrain_started", model=model, target=spec.retrain["model_id"], job=job["id"])

    def learn(self, args: LearnArgs) -> dict[str, Any]:
        """Op ``learn``: a label for ``features`` (test then train on that row), or for the live prediction of
        ``symbol``, ``timeframe`` and ``ts``."""
        loaded = self.catalog.get(args.model)
        label = args.label
        if loaded.predictor.task == CLASSIFICATION and label not in (loaded.predictor.classes or []):
            raise BadRequest(f"label {label!r:.40} is not one of the model's classes {loaded.predictor.classes}",
                             field="label")
        if args.features is not None:
            x = row(loaded, args.features)
            pending = _pending(loaded, x[0].tolist(), loaded.predictor.predict(x))
            self.apply(loaded.name, x[0], label, pending)
            return {"model": loaded.name, "learned": True, "scores": self.scores[loaded.name].report()}
        if args.symbol is None or args.timeframe is None or args.ts is None:
            raise BadRequest("send 'features' (a row), or 'symbol', 'timeframe' and 'ts' of a live prediction",
                             field="features")
        joined = self.label(loaded.name, args.symbol, args.timeframe, args.ts, label)
        return {"model": loaded.name, "learned": joined,
                "scores": self.scores[loaded.name].report() if loaded.name in self.scores else None}

    # -- persistence and reports -------------------------------------------------------------------------

    async def run_checkpoints(self, changed: Callable[[], Awaitable[None]]) -> None:
        """Every ``checkpoint_s`` of the clock: save what learned (a spawned task); the other processes of a
        serve group reload what was saved (`changed`)."""
        while True:
            await self.clock.sleep(self.config.checkpoint_s)
            if await self.checkpoint():
                await changed()

    async def checkpoint(self) -> list[str]:
        """Save online models that learned as new versions (promoted), and ensemble weights."""
        saved = []
        for name in sorted(self.dirty):
            self.dirty.discard(name)
            loaded = self.catalog.current.get(name)
            if loaded is None:
                continue
            if self.weights.save(name):
                saved.append(name)
            if loaded.predictor.online:
                metrics = self.scores.get(name, Scores(self.config.window)).report()
                try:
                    await self.catalog.checkpoint(loaded, metrics, self.config.keep_checkpoints)
                    saved.append(name)
                except MlpError as exc:
                    log.error("checkpoint_failed", model=name, error=exc.message)
        return saved

    def accuracy(self) -> dict[str, float]:
        """Rolling accuracy of every model that was labelled (``performance_metrics.model_accuracy``)."""
        return {m: round(s.rolling.get(), 4) for m, s in self.scores.items()}

    def report(self, timelines: bool = False) -> dict[str, Any]:
        out = {"counts": dict(self.counts), "scores": {m: s.report() for m, s in self.scores.items()},
               "weights": self.weights.states(), "drift": self.last_drift,
               "attached": [spec.__dict__ for spec in self.specs]}
        if timelines:  # for reports: rolling accuracy per model and ensemble weights, sampled every 50 labels
            out["timelines"] = {"accuracy": {m: s.timeline() for m, s in self.scores.items()},
                                "weights": self.weights.timelines()}
        return out


def _pending(loaded: Loaded, values: list[float], prediction: Prediction) -> Pending:
    """A prediction of one row, as it waits for its label."""
    classes = loaded.predictor.classes
    value = prediction.values[0]
    proba = None if prediction.proba is None or classes is None else \
        dict(zip(classes, prediction.proba[0].tolist(), strict=True))
    parts = {m: dict(zip(classes or [], p[0].tolist(), strict=True)) for m, p in prediction.parts.items()}
    return Pending(loaded.version, values, value.item() if isinstance(value, np.generic) else value, proba, parts)
