"""Inference: one row (cached) or a batch, the input checks every route shares (REST, bus, V2, learn), and the
figures ``/health`` and ``/metrics/ml`` report.

The prediction cache is keyed by model, version, the model's state and the exact bytes of the row. The
state moves whenever the model learns, its ensemble weights move, or a version changes, for the model and
for every model built on it: a cached answer is always the one the model would give now.

A batch above `INLINE_ROWS` rows is read, checked and predicted on the thread pool, in slices, so the event
loop keeps serving while it runs.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

from ml_processing.sdk import BadRequest, Clock, Columns, TooLarge
from ml_processing.sdk.columns import NAMES
from ml_processing.sdk.model import FeatureRow, FeatureRows, Prediction
from ml_processing.sdk.services.features import Features

from .catalog import Catalog, Loaded
from .declarations import PredictArgs, PredictBatchArgs, Predicted, PredictedBatch

#: Rows above which a batch is read and predicted on the thread pool, off the event loop.
INLINE_ROWS = 2_000


class Throughput:
    """Predictions per second over the last `window` seconds of `clock`."""

    def __init__(self, clock: Clock, window: int = 10) -> None:
        self.clock = clock
        self.window = window
        self.buckets: deque[list[int]] = deque()

    def add(self, count: int) -> None:
        second = int(self.clock.monotonic())
        if self.buckets and self.buckets[-1][0] == second:
            self.buckets[-1][1] += count
        else:
            self.buckets.append([second, count])
        while self.buckets and self.buckets[0][0] <= second - self.window:
            self.buckets.popleft()

    def rate(self) -> float:
        now = int(self.clock.monotonic())
        return sum(c for s, c in self.buckets if s > now - self.window) / self.window


class Inference:
    def __init__(self, catalog: Catalog, cache: Any, latency: Any, clock: Clock, features: Features,
                 max_batch: int, run_in_thread: Callable[..., Awaitable[Any]]) -> None:
        self.catalog = catalog
        self.cache = cache
        self.latency = latency  # Prometheus histogram, labelled by model
        self.features = features
        self.max_batch = max_batch
        self.run_in_thread = run_in_thread
        self.predictions = 0
        self.latency_ns = 0
        self.throughput = Throughput(clock)
        self.state: dict[str, int] = {}  # model -> how many times it changed (part of the cache key)
        self._latency_of: dict[str, Any] = {}
        catalog.on_change.append(self._version_changed)

    # -- one row ----------------------------------------------------------------------------------------

    def predict(self, args: PredictArgs) -> Predicted | Awaitable[Predicted]:
        start = time.perf_counter_ns()
        loaded = self.catalog.get(args.model, args.version)
        if args.features is not None:
            return self.predict_row(loaded, row(loaded, args.features), start)
        if args.bars is not None:
            return self._predict_bars(loaded, args.bars, start)
        raise BadRequest("send 'features' (a row), or 'bars' (OHLCV columns) for a model bound to a feature "
                         "pipeline", field="features")

    def predict_row(self, loaded: Loaded, x: np.ndarray, start: int) -> Predicted:
        name = loaded.name
        key = (name, loaded.version, self.state.get(name, 0), x.tobytes())
        hit = self.cache.get(key)
        if hit is None:
            hit = one(loaded.predictor.predict(x))
            self.cache.put(key, hit)
            cached = False
        else:
            cached = True
        elapsed = time.perf_counter_ns() - start
        self.count(name, 1, elapsed)
        return {"model": name, "version": loaded.version, **hit, "classes": loaded.predictor.classes,
                "latency_us": round(elapsed / 1000, 1), "cached": cached}

    async def _predict_bars(self, loaded: Loaded, bars: Columns, start: int) -> Predicted:
        pipeline = loaded.manifest.get("pipeline")
        if not pipeline:
            raise BadRequest(f"model {loaded.name}@{loaded.version} is not bound to a feature pipeline: send "
                             "'features'", field="bars")
        out = await self.features.extract(pipeline, bars.columns(NAMES), transform=True)
        x = np.ascontiguousarray(np.asarray(out["values"][-1], dtype=np.float64).reshape(1, -1))
        if np.isnan(x).any():
            raise BadRequest(f"the last bar has no complete feature row yet: pipeline {pipeline} needs more than "
                             f"{out['first_complete'] or 'its lookback of'} bars", field="bars")
        result = self.predict_row(loaded, x, start)
        result["features"], result["row"] = out["features"], x[0]
        return result

    # -- batches ----------------------------------------------------------------------------------------

    def predict_batch(self, args: PredictBatchArgs) -> PredictedBatch | Awaitable[PredictedBatch]:
        start = time.perf_counter_ns()
        loaded = self.catalog.get(args.model, args.version)
        if len(args.rows) > self.max_batch:
            raise TooLarge(f"{len(args.rows):,} rows; at most {self.max_batch:,} per batch", field="rows")
        if len(args.rows) > INLINE_ROWS:
            return self._batch_in_thread(loaded, args.rows, start)
        x = matrix(loaded, args.rows)
        return self._batch_reply(loaded, loaded.predictor.predict(x), start, len(x))

    async def _batch_in_thread(self, loaded: Loaded, rows: FeatureRows, start: int) -> PredictedBatch:
        prediction = await self.run_in_thread(_read_and_predict, loaded, rows)
        return self._batch_reply(loaded, prediction, start, len(rows))

    def _batch_reply(self, loaded: Loaded, prediction: Prediction, start: int, rows: int) -> PredictedBatch:
        elapsed = time.perf_counter_ns() - start
        self.count(loaded.name, rows, elapsed)
        return {"model": loaded.name, "version": loaded.version, "rows": rows, "predictions": prediction.values,
                "probabilities": prediction.proba, "classes": loaded.predictor.classes, "path": prediction.path,
                "latency_us": round(elapsed / 1000, 1)}

    # -- state and figures ------------------------------------------------------------------------------

    def count(self, name: str, rows: int, elapsed_ns: int) -> None:
        """Count `rows` predictions of model `name` that took `elapsed_ns`."""
        self.predictions += rows
        self.latency_ns += elapsed_ns
        self.throughput.add(rows)
        child = self._latency_of.get(name)
        if child is None:  # the labelled child, looked up once per model (labels() costs microseconds)
            child = self._latency_of[name] = self.latency.labels(name)
        child.observe(elapsed_ns / 1e9)

    def invalidate(self, name: str) -> None:
        """Model `name` changed (it learned, its weights moved, its version changed): its cached predictions,
        and those of every model built on it, are not its answers any more."""
        for changed in (name, *self.catalog.built_on(name)):
            self.state[changed] = self.state.get(changed, 0) + 1

    def _version_changed(self, name: str, loaded: Loaded | None) -> None:
        self.invalidate(name)
        self.cache.discard(lambda key: key[0] != name)  # unreachable now: free the room

    def performance(self) -> dict[str, Any]:
        stats = self.cache.stats()
        return {"avg_prediction_time_ms": round(self.latency_ns / self.predictions / 1e6, 4) if self.predictions
                else 0.0, "predictions_per_second": round(self.throughput.rate(), 2),
                "cache_hit_rate": f"{100 * stats['hit_rate']:.1f}%", "predictions_total": self.predictions}


# -- the input checks every route shares ---------------------------------------------------------------------


def row(loaded: Loaded, features: FeatureRow) -> np.ndarray:
    """One request row as a (1, n) float64 array, checked against the model."""
    n = loaded.predictor.n_features
    if features.named is not None:
        names = loaded.features
        if names is None:
            raise BadRequest(f"model {loaded.name}@{loaded.version} has no feature names: send a list",
                             field="features")
        named = features.named
        if len(named) != len(names) or any(k not in named for k in names):
            missing = [k for k in names if k not in named]
            extra = [k for k in named if k not in names]
            raise BadRequest(f"features: missing {missing[:3]}, unknown {extra[:3]} (the model takes "
                             f"{', '.join(names)})", field="features")
        x = np.array([[named[k] for k in names]], dtype=np.float64)
    else:
        values = features.values
        assert values is not None
        if len(values) != n:
            raise BadRequest(f"model {loaded.name}@{loaded.version} takes {n} features, got {len(values)}",
                             field="features")
        x = values.reshape(1, n)
        if features.finite:
            return x
    check_values(loaded, x, "features")
    return x


def matrix(loaded: Loaded, rows: FeatureRows) -> np.ndarray:
    """A batch as a (rows, n) float64 matrix, checked against the model."""
    x = rows.matrix(loaded.predictor.n_features)
    check_values(loaded, x, "rows")
    return x


def check_values(loaded: Loaded, x: np.ndarray, field: str) -> None:
    """Infinities never; NaN only for a model that takes missing values. The error names the element."""
    finite = np.isfinite(x)
    if finite.all():
        return
    bad = ~finite if not loaded.predictor.allows_nan else np.isinf(x)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        what = "inf" if np.isinf(x[where]) else "NaN"
        position = f"{field}[{where[-1]}]" if field == "features" else f"{field}[{where[0]}][{where[1]}]"
        raise BadRequest(f"{position} is {what}: model {loaded.name}@{loaded.version} takes finite values"
                         + ("" if loaded.predictor.allows_nan else " only"), field=position)


def _read_and_predict(loaded: Loaded, rows: FeatureRows) -> Prediction:
    return loaded.predictor.predict(matrix(loaded, rows))


def one(prediction: Prediction) -> dict[str, Any]:
    """The first row of `prediction` as plain values: prediction, probabilities, path."""
    value = prediction.values[0]
    return {"prediction": value.item() if isinstance(value, np.generic) else value,
            "probabilities": None if prediction.proba is None else prediction.proba[0].tolist(),
            "path": prediction.path}
