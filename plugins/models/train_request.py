"""A training request, checked: what to train, on which rows, with which label, and when to promote.

``{"model_id", "kind": "xgboost" | "sklearn" | "river", "pipeline": "default" (a feature pipeline, NAME or
NAME@VERSION), OHLCV columns or "symbol" + "timeframe" (the bars the live market state holds), "label":
{"type": "direction" | "return", "horizon": 1}, "params": {...}, "test_fraction": 0.2, "promote": true |
false | "if_better", "refresh": false}``

The label of the row of bar ``t`` is the direction (1 if the close rose, else 0) or the simple return of
the close from ``t`` to ``t + horizon``; rows whose label lies past the data are dropped. The split is in
time order: the last ``test_fraction`` of the rows is the holdout, never shuffled into training.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ml_processing.sdk import BadRequest
from ml_processing.sdk.model import CLASSIFICATION, REGRESSION

from .registry import check_name

TRAINABLE = ("xgboost", "sklearn", "river")


@dataclass(frozen=True)
class TrainRequest:
    model: str
    kind: str
    pipeline: str = "default"
    columns: dict[str, Any] | None = None
    symbol: str | None = None
    timeframe: str | None = None
    label_type: str = "direction"
    horizon: int = 1
    params: dict[str, Any] = field(default_factory=dict)
    test_fraction: float = 0.2
    promote: bool | str = "if_better"
    refresh: bool = False

    @property
    def task(self) -> str:
        return CLASSIFICATION if self.label_type == "direction" else REGRESSION

    @property
    def label_spec(self) -> dict[str, Any]:
        return {"type": self.label_type, "horizon": self.horizon}

    @classmethod
    def parse(cls, args: Mapping[str, Any], kinds: Mapping[str, Any]) -> TrainRequest:
        model = check_name(args.get("model_id") or args.get("model"), "model_id")
        kind = args.get("kind")
        if kind not in TRAINABLE or kind not in kinds:
            raise BadRequest(f"'kind' must be one of {', '.join(TRAINABLE)}, got {kind!r:.40}", field="kind")
        pipeline = args.get("pipeline", "default")
        if not isinstance(pipeline, str) or not pipeline:
            raise BadRequest("'pipeline' must name a feature pipeline", field="pipeline")
        columns = {k: args[k] for k in ("ts", "open", "high", "low", "close", "volume") if k in args} or None
        symbol, timeframe = args.get("symbol"), args.get("timeframe")
        if columns is None and not (isinstance(symbol, str) and isinstance(timeframe, str)):
            raise BadRequest("send OHLCV columns, or 'symbol' and 'timeframe' of a series the service holds",
                             field="close")
        if columns is not None and "close" not in columns:
            raise BadRequest("the label needs the 'close' column", field="close")
        label = args.get("label", {})
        if not isinstance(label, Mapping):
            raise BadRequest("'label' must be {type, horizon}", field="label")
        label_type = label.get("type", "direction")
        if label_type not in ("direction", "return"):
            raise BadRequest("label type must be 'direction' or 'return'", field="label.type")
        horizon = label.get("horizon", 1)
        if isinstance(horizon, bool) or not isinstance(horizon, int) or not 1 <= horizon <= 10_000:
            raise BadRequest("label horizon must be 1..10000 bars", field="label.horizon")
        params = args.get("params", {})
        if not isinstance(params, Mapping) or not all(
                isinstance(v, (int, float, str, bool)) or v is None for v in params.values()):
            raise BadRequest("'params' must be a map of simple values (numbers, strings, booleans)", field="params")
        fraction = args.get("test_fraction", 0.2)
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.05 <= fraction <= 0.5:
            raise BadRequest("'test_fraction' must be between 0.05 and 0.5", field="test_fraction")
        promote = args.get("promote", "if_better")
        if promote not in (True, False, "if_better"):
            raise BadRequest("'promote' must be true, false or \"if_better\"", field="promote")
        refresh = args.get("refresh", False)
        if not isinstance(refresh, bool) or (refresh and kind != "xgboost"):
            raise BadRequest("'refresh' (continue the current booster) is for xgboost models", field="refresh")
        if label_type == "return" and kind == "river" and params.get("estimator", "LogisticRegression") != \
                "LinearRegression":
            raise BadRequest("a river model for returns needs params.estimator = 'LinearRegression'", field="params")
        return cls(model, kind, pipeline, columns, symbol, timeframe, label_type, horizon, dict(params),
                   float(fraction), promote, refresh)

    def labelled(self, rows: Mapping[str, Any], close: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """(x, y, feature names) from a ``features.transform`` reply and the closes of the same bars."""
        x = np.asarray(rows["values"], dtype=np.float64)
        index = np.asarray(rows["index"], dtype=np.int64)
        keep = index + self.horizon < len(close)
        x, index = x[keep], index[keep]
        later, now = close[index + self.horizon], close[index]
        if self.label_type == "direction":
            y = (later > now).astype(np.int64)
        else:
            y = later / now - 1.0
        return np.ascontiguousarray(x), y, list(rows["features"])
