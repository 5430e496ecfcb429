"""What makes models keep learning: prequential scores with drift detection, adaptive ensemble weights, and
the live attachment of a model to bar series (rows in, predictions and signals out, labels joined back).

* `Scores`: every model is scored on each label of a prediction it made, *before* anything learns from
  that label (prequential, "test then train"): accuracy overall and over a rolling window, log loss, and
  an ADWIN detector (river) on the stream of errors.
* `Hedge`: an ensemble's member weights, multiplied by ``exp(-eta * loss)`` for each member's log loss on
  each label, renormalised, and mixed with equal weights in the proportion ``floor``, so none falls below
  ``floor / members`` and a member that recovers can come back.
* `LiveSpec`: ``[[plugins.models.live]]`` entries: which model predicts on which bar series, how it labels
  itself (direction of the close ``horizon`` bars later), and the probability thresholds of its signals.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
from river import drift, metrics, utils

from ml_processing.sdk import BadRequest

from .train_request import TrainArgs

EPS = 1e-12


@dataclass
class Scores:
    """Prequential figures of one model."""

    window: int = 500
    labels: int = 0
    drifts: int = 0
    accuracy: Any = field(default_factory=metrics.Accuracy)
    log_loss: Any = field(default_factory=metrics.LogLoss)
    rolling: Any = None
    detector: Any = field(default_factory=drift.ADWIN)
    history: deque[tuple[int, float]] = field(default_factory=lambda: deque(maxlen=2_000))

    def __post_init__(self) -> None:
        self.rolling = utils.Rolling(metrics.Accuracy, window_size=self.window)

    def update(self, label: Any, predicted: Any, proba: Mapping[Any, float] | None) -> bool:
        """Score one labelled prediction; True when the error stream drifted."""
        self.labels += 1
        self.accuracy.update(label, predicted)
        self.rolling.update(label, predicted)
        if proba is not None:
            self.log_loss.update(label, dict(proba))
        self.detector.update(0.0 if label == predicted else 1.0)
        if self.labels % 50 == 0:
            self.history.append((self.labels, round(self.rolling.get(), 4)))
        if self.detector.drift_detected:
            self.drifts += 1
            return True
        return False

    def timeline(self) -> list[tuple[int, float]]:
        """Rolling accuracy every 50 labels (the last 2,000 samples)."""
        return list(self.history)

    def report(self) -> dict[str, Any]:
        return {"labels": self.labels, "accuracy": round(self.accuracy.get(), 4),
                "rolling_accuracy": round(self.rolling.get(), 4), "window": self.window,
                "log_loss": round(self.log_loss.get(), 4) if self.labels else None, "drifts": self.drifts}


def log_loss(label: Any, proba: Mapping[Any, float]) -> float:
    return -math.log(max(float(proba.get(label, 0.0)), EPS))


@dataclass
class Hedge:
    """Exponentially weighted member weights (the Hedge update) with a floor."""

    members: list[str]
    eta: float = 0.5
    floor: float = 0.02
    weights: list[float] = field(default_factory=list)
    updates: int = 0
    history: deque[tuple[int, list[float]]] = field(default_factory=lambda: deque(maxlen=2_000))

    def __post_init__(self) -> None:
        if len(self.weights) != len(self.members):
            self.reset()

    def reset(self) -> None:
        self.weights = [1.0 / len(self.members)] * len(self.members)
        self.updates = 0

    def update(self, losses: Sequence[float]) -> None:
        """``w_i *= exp(-eta * loss_i)``, normalised, then mixed with the uniform weights in the proportion
        ``floor``: every weight stays at least ``floor / members``."""
        raw = [w * math.exp(-self.eta * loss) for w, loss in zip(self.weights, losses, strict=True)]
        total = sum(raw)
        if not total > 0:  # every member lost everything at once: start over from equal weights
            raw, total = [1.0] * len(raw), float(len(raw))
        share = self.floor / len(self.members)
        self.weights = [(1 - self.floor) * w / total + share for w in raw]
        self.updates += 1
        if self.updates % 50 == 0:
            self.history.append((self.updates, [round(w, 4) for w in self.weights]))

    def state(self) -> dict[str, Any]:
        return {"members": self.members, "weights": [round(w, 6) for w in self.weights], "eta": self.eta,
                "floor": self.floor, "updates": self.updates}

    def timeline(self) -> list[tuple[int, list[float]]]:
        """Weights every 50 updates (the last 2,000 samples)."""
        return list(self.history)


@dataclass(frozen=True)
class LiveSpec:
    model: str
    timeframe: str | None = None  # None: every timeframe the features service publishes
    horizon: int = 1  # self-labelling: the direction of the close this many bars later (0: labels come from outside)
    buy_above: float = 0.6
    sell_below: float = 0.4
    retrain: dict[str, Any] | None = None  # a training request started when this model drifts (docs/MODELS.md)

    @classmethod
    def parse(cls, raw: Mapping[str, Any], index: int) -> LiveSpec:
        where = f"live[{index}]"
        unknown = set(raw) - {"model", "timeframe", "horizon", "buy_above", "sell_below", "retrain"}
        if unknown:
            raise BadRequest(f"{where}: unknown key {sorted(unknown)[0]!r}", field=where)
        model = raw.get("model")
        if not isinstance(model, str) or not model:
            raise BadRequest(f"{where}: 'model' must name a model", field=f"{where}.model")
        horizon = raw.get("horizon", 1)
        if isinstance(horizon, bool) or not isinstance(horizon, int) or not 0 <= horizon <= 10_000:
            raise BadRequest(f"{where}: 'horizon' must be 0..10000 bars", field=f"{where}.horizon")
        buy, sell = float(raw.get("buy_above", 0.6)), float(raw.get("sell_below", 0.4))
        if not 0 <= sell <= buy <= 1:
            raise BadRequest(f"{where}: need 0 <= sell_below <= buy_above <= 1", field=f"{where}.buy_above")
        timeframe = raw.get("timeframe")
        if timeframe is not None and not isinstance(timeframe, str):
            raise BadRequest(f"{where}: 'timeframe' must be a string", field=f"{where}.timeframe")
        retrain = raw.get("retrain")
        if retrain is not None:
            if not isinstance(retrain, Mapping) or "kind" not in retrain or "model_id" not in retrain:
                raise BadRequest(f"{where}: 'retrain' must be a training request with 'model_id' and 'kind'",
                                 field=f"{where}.retrain")
            try:  # the series comes from the labels: any will do here
                msgspec.convert({**retrain, "symbol": "X", "timeframe": "1m"}, TrainArgs)
            except msgspec.ValidationError as exc:
                raise BadRequest(f"{where}.retrain: {exc}", field=f"{where}.retrain") from None
        return cls(model, timeframe, horizon, buy, sell, dict(retrain) if retrain is not None else None)


@dataclass
class Pending:
    """A live prediction waiting for its label."""

    version: int
    row: list[float]
    predicted: Any
    proba: dict[Any, float] | None
    parts: dict[str, dict[Any, float]]  # ensemble members' probabilities at the time


@dataclass
class SeriesState:
    """One attached model on one (symbol, timeframe): the committed closes (for self-labelling), the
    predictions waiting for labels, and the signal zone it is in; all bounded."""

    pending: dict[int, Pending] = field(default_factory=dict)
    zone: str = "flat"
    limit: int = 10_000
    closes: dict[int, tuple[int, float]] = field(default_factory=dict)  # ts -> (sequence number, close)
    order: deque[int] = field(default_factory=deque)  # ts of the closes, oldest first
    count: int = 0  # closes seen

    def remember(self, ts: int, pending: Pending) -> None:
        self.pending[ts] = pending
        while len(self.pending) > self.limit:
            self.pending.pop(next(iter(self.pending)))

    def add_close(self, ts: int, close: float) -> bool:
        """Record a committed bar's close; False for a stale one (not newer than the last)."""
        if self.order and ts <= self.order[-1]:
            return False
        self.closes[ts] = (self.count, close)
        self.order.append(ts)
        self.count += 1
        while len(self.order) > self.limit:
            self.closes.pop(self.order.popleft(), None)
        return True

    def outcome(self, ts: int, horizon: int) -> float | None:
        """The direction label (1 up, 0 not) of the bar at `ts` once the bar `horizon` later is known."""
        known = self.closes.get(ts)
        if known is None:
            return None
        later = known[0] + horizon
        if later >= self.count:
            return None
        then_ts = self.order[len(self.order) - (self.count - later)]
        return float(self.closes[then_ts][1] > known[1])
