"""The live half of the ``models`` service: predictions on every committed bar, signals, labels, learning.

Flow for a model attached by ``[[plugins.models.live]]``: the ``features`` service publishes
``feature.SYMBOL.TIMEFRAME`` rows of its live pipelines; a row of the pipeline version the model is bound
to is predicted at once and published on ``prediction.SYMBOL``; crossing a probability threshold publishes
``signal.SYMBOL``. The prediction waits for its label: the realised direction ``horizon`` bars later (from
``bar.SYMBOL.TIMEFRAME``), or a label from outside (``label.SYMBOL``, op ``learn``). A label first scores
every model that predicted (`Scores`: accuracy, log loss, drift), then adapts the ensemble's weights
(`Hedge`), then teaches the online models (river). Online models are saved as new versions (checkpoints)
every ``checkpoint_s`` and at shutdown, so a restart loses no learning; ensemble weights are saved with them.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from ml_processing.bus import topics
from ml_processing.sdk import BadRequest, MlpError, atomic_write, get_logger
from ml_processing.sdk.model import CLASSIFICATION

from .online import Hedge, LiveSpec, Pending, Scores, SeriesState, log_loss

if TYPE_CHECKING:
    from .actor import Loaded, Models

log = get_logger(__name__)


class Live:
    def __init__(self, actor: Models) -> None:
        self.actor = actor
        config = actor.config
        self.specs = [LiveSpec.parse(raw, i) for i, raw in enumerate(config.live)]
        self.scores: dict[str, Scores] = {}
        self.hedges: dict[str, Hedge] = {}
        self.series: dict[tuple[str, str, str], SeriesState] = {}  # (model, symbol, timeframe)
        self.dirty: set[str] = set()  # online models with unsaved learning
        self.counts = {"predictions": 0, "signals": 0, "labels": 0, "unmatched_labels": 0, "skipped_rows": 0,
                       "drifts": 0, "retrains": 0}
        self.labelled_from: dict[str, tuple[str, str]] = {}  # model -> (symbol, timeframe) of its last label
        self.last_drift: dict[str, dict[str, Any]] = {}

    # -- wiring -----------------------------------------------------------------------------------------

    def start(self) -> None:
        for name, loaded in self.actor.current.items():
            if loaded.manifest["kind"] == "ensemble":
                self.hedge(name, loaded)
        if self.specs:
            self.actor.subscribe(topics.FEATURE + ".", self.on_feature)
            self.actor.subscribe(topics.BAR + ".", self.on_bar)
        self.actor.subscribe(topics.LABEL + ".", self.on_label)

    def hedge(self, name: str, loaded: Loaded) -> Hedge:
        """The ensemble's weights (loaded from disk once), bound to its predictor."""
        members = list(loaded.predictor.members)  # type: ignore[attr-defined]
        hedge = self.hedges.get(name)
        if hedge is None or hedge.members != members:
            saved = self._read_weights(name)
            hedge = Hedge(members, self.actor.config.hedge_eta, self.actor.config.hedge_floor,
                          saved.get("weights", []) if saved.get("members") == members else [])
            hedge.updates = int(saved.get("updates", 0)) if hedge.weights and saved.get("members") == members else 0
            self.hedges[name] = hedge
        loaded.predictor.weights = hedge.weights  # type: ignore[attr-defined]
        return hedge

    def _weights_path(self, name: str) -> Any:
        return self.actor.store.root / name / "weights.json"

    def _read_weights(self, name: str) -> dict[str, Any]:
        path = self._weights_path(name)
        if not path.exists():
            return {}
        try:
            data = json.loads(path.read_bytes())
            return data if isinstance(data, dict) else {}
        except ValueError as exc:
            log.error("ensemble_weights_unreadable", model=name, error=str(exc))
            return {}

    # -- rows in, predictions and signals out ---------------------------------------------------------

    def on_feature(self, topic: str, body: Any) -> None:
        parsed = topics.parse(topic)
        if parsed.symbol is None or parsed.timeframe is None or not isinstance(body, Mapping):
            return
        for spec in self.specs:
            if spec.timeframe not in (None, parsed.timeframe):
                continue
            loaded = self.actor.current.get(spec.model)
            if loaded is None or loaded.manifest.get("pipeline") != body.get("pipeline"):
                continue
            row = body.get("transformed") if body.get("transformed") is not None else body.get("values")
            if row is None or any(v is None for v in row):
                self.counts["skipped_rows"] += 1  # warming up, or the pipeline is not fitted
                continue
            self._predict(spec, loaded, parsed.symbol, parsed.timeframe, int(body["ts"]), row)

    def _predict(self, spec: LiveSpec, loaded: Loaded, symbol: str, timeframe: str, ts: int, row: list[float]) -> None:
        x = np.asarray([row], dtype=np.float64)
        start = time.perf_counter_ns()
        prediction = loaded.predictor.predict(x)
        self.actor._count(loaded.name, 1, time.perf_counter_ns() - start)
        classes = loaded.predictor.classes
        value = prediction.values[0]
        value = value.item() if isinstance(value, np.generic) else value
        proba = None if prediction.proba is None or classes is None else dict(zip(classes, prediction.proba[0].tolist(),
                                                                                  strict=True))
        parts = {m: dict(zip(classes or [], p[0].tolist(), strict=True)) for m, p in prediction.parts.items()}
        self.actor.publish(topics.prediction(symbol), {
            "symbol": symbol, "timeframe": timeframe, "ts": ts, "model": f"{loaded.name}@{loaded.version}",
            "prediction": value, "probabilities": None if proba is None else list(proba.values()),
            "classes": classes})
        self.counts["predictions"] += 1
        state = self.series.setdefault((loaded.name, symbol, timeframe), SeriesState())
        state.remember(ts, Pending(loaded.version, row, value, proba, parts))
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
        self.actor.publish(topics.signal(symbol), {
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
            state = self.series.get((spec.model, parsed.symbol, parsed.timeframe))
            if state is None:
                state = self.series[(spec.model, parsed.symbol, parsed.timeframe)] = SeriesState()
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
        self.apply(model, np.asarray(pending.row, dtype=np.float64), label, pending)
        return True

    def apply(self, model: str, row: np.ndarray, label: Any, pending: Pending) -> None:
        """Test, then train: score the model (and an ensemble's members), adapt weights, teach online models."""
        self._score(model, label, pending.predicted, pending.proba)
        loaded = self.actor.current.get(model)
        if pending.parts and loaded is not None and model in self.hedges:
            hedge = self.hedges[model]
            losses = []
            for member in hedge.members:
                proba = pending.parts.get(member, {})
                predicted = max(proba, key=lambda c: proba[c]) if proba else None
                self._score(member.partition("@")[0], label, predicted, proba or None)
                losses.append(log_loss(label, proba) if proba else 0.0)
            hedge.update(losses)
            loaded.predictor.weights = hedge.weights  # type: ignore[attr-defined]
            self.dirty.add(model)
        for name in [model, *pending.parts]:
            target = self.actor.current.get(name.partition("@")[0])
            if target is not None and target.predictor.online:
                target.predictor.learn(row, label)
                self.dirty.add(target.name)

    def _score(self, model: str, label: Any, predicted: Any, proba: Mapping[Any, float] | None) -> None:
        scores = self.scores.get(model)
        if scores is None:
            scores = self.scores[model] = Scores(self.actor.config.window)
        if scores.update(label, predicted, proba):
            self.counts["drifts"] += 1
            event = {"model": model, "labels": scores.labels, "rolling_accuracy": round(scores.rolling.get(), 4),
                     "ts": int(time.time() * 1000)}
            self.last_drift[model] = event
            self.actor.publish(topics.model("drift"), event)
            log.warning("model_drift_detected", **event)
            self._retrain(model)

    def _retrain(self, model: str) -> None:
        """Start the configured retraining of a drifted model, on the bars of the series it was labelled on."""
        source = self.labelled_from.get(model)
        for spec in self.specs:
            if spec.model != model or spec.retrain is None or source is None:
                continue
            target = spec.retrain["model_id"]
            if any(job.model == target and job.status in ("queued", "running")
                   for job in self.actor.jobs.jobs.values()):
                continue  # one retraining at a time per model
            try:
                job = self.actor.handle_train({**spec.retrain, "symbol": source[0], "timeframe": source[1]})
            except MlpError as exc:
                log.error("retrain_not_started", model=model, error=exc.message)
                continue
            self.counts["retrains"] += 1
            self.last_drift[model]["retrain_job"] = job["id"]
            log.info("retrain_started", model=model, target=target, job=job["id"])

    def learn(self, args: Mapping[str, Any]) -> dict[str, Any]:
        """Op ``learn``: ``{model, label, features}`` (test then train on that row), or ``{model, label,
        symbol, timeframe, ts}`` (the live prediction of that bar)."""
        name = args.get("model")
        loaded = self.actor._get(name)
        label = args.get("label")
        if loaded.predictor.task == CLASSIFICATION and label not in (loaded.predictor.classes or []):
            raise BadRequest(f"label {label!r:.40} is not one of the model's classes {loaded.predictor.classes}",
                             field="label")
        if "features" in args:
            x = self.actor._row(loaded, args["features"])
            prediction = loaded.predictor.predict(x)
            classes = loaded.predictor.classes or []
            proba = None if prediction.proba is None else dict(zip(classes, prediction.proba[0].tolist(), strict=True))
            parts = {m: dict(zip(classes, p[0].tolist(), strict=True)) for m, p in prediction.parts.items()}
            value = prediction.values[0]
            self.apply(loaded.name, x[0], label, Pending(loaded.version, x[0].tolist(),
                                                         value.item() if isinstance(value, np.generic) else value,
                                                         proba, parts))
            return {"model": loaded.name, "learned": True, "scores": self.scores[loaded.name].report()}
        symbol, timeframe, ts = args.get("symbol"), args.get("timeframe"), args.get("ts")
        if not isinstance(symbol, str) or not isinstance(timeframe, str) or not isinstance(ts, int):
            raise BadRequest("send 'features' (a row), or 'symbol', 'timeframe' and 'ts' of a live prediction",
                             field="features")
        joined = self.label(loaded.name, symbol, timeframe, ts, label)
        return {"model": loaded.name, "learned": joined,
                "scores": self.scores[loaded.name].report() if loaded.name in self.scores else None}

    # -- persistence ------------------------------------------------------------------------------------

    async def checkpoint(self) -> list[str]:
        """Save online models that learned as new versions (promoted), and ensemble weights."""
        saved = []
        for name in sorted(self.dirty):
            self.dirty.discard(name)
            loaded = self.actor.current.get(name)
            if loaded is None:
                continue
            if name in self.hedges:
                atomic_write(self._weights_path(name), json.dumps(self.hedges[name].state()).encode())
                saved.append(name)
            if loaded.predictor.online:
                try:
                    await self.actor.checkpoint(loaded)
                    saved.append(name)
                except MlpError as exc:
                    log.error("checkpoint_failed", model=name, error=exc.message)
        return saved

    def report(self, timelines: bool = False) -> dict[str, Any]:
        out = {"counts": dict(self.counts), "scores": {m: s.report() for m, s in self.scores.items()},
               "weights": {m: h.state() for m, h in self.hedges.items()}, "drift": self.last_drift,
               "attached": [spec.__dict__ for spec in self.specs]}
        if timelines:  # for reports: rolling accuracy per model and ensemble weights, sampled every 50 labels
            out["timelines"] = {"accuracy": {m: s.timeline() for m, s in self.scores.items()},
                                "weights": {m: h.timeline() for m, h in self.hedges.items()}}
        return out
