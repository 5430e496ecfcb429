"""A training request, declared: what to train, on which rows, with which label, and when to promote.

``{"model_id", "kind": "xgboost" | "lightgbm" | "sklearn" | "river", "pipeline": "default" (a feature
pipeline, NAME or NAME@VERSION), OHLCV columns or "symbol" + "timeframe" (the bars the live market state
holds) or "dataset" (NAME or NAME@VERSION: the rows a backfill stored, optionally only of "symbols" and
"timeframe"), "label": {"type": "direction" | "return", "horizon": 1}, "params": {...}, "test_fraction": 0.2,
"promote": true | false | "if_better", "refresh": false}``

The label of the row of bar ``t`` is the direction (1 if the close rose, else 0) or the simple return of
the close from ``t`` to ``t + horizon`` of the same series; rows whose label lies past the data are
dropped. The split is in time order: the last ``test_fraction`` of the rows is the holdout, never shuffled
into training (the rows of a dataset's series are merged in bar time first).

>>> request = TrainArgs(model_id="m", kind="xgboost", close=np.array([1.0, 2.0, 1.5, 3.0, 2.0]),
...                     label=Label(horizon=2))
>>> rows = {"values": [[0.0], [1.0], [2.0], [3.0]], "index": [1, 2, 3, 4], "features": ["a"]}
>>> x, y, names = request.labelled(rows)
>>> x.tolist(), y.tolist(), names
([[0.0], [1.0]], [1, 1], ['a'])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

import msgspec
import numpy as np

from ml_processing.sdk import Args, Columns, Symbol, Timeframe
from ml_processing.sdk.model import CLASSIFICATION, REGRESSION

from .declarations import DatasetRef, KindName, ModelName, PipelineRef


class Label(Args):
    """What a row is labelled with: the direction or the return of the close ``horizon`` bars later."""

    type: Literal["direction", "return"] = "direction"
    horizon: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 1


class TrainArgs(Columns, kw_only=True):
    """Start a training job (docs/MODELS.md)."""

    model_id: ModelName
    kind: KindName
    pipeline: PipelineRef | None = None  # default: "default", or a dataset's own pipeline
    symbol: Symbol | None = None  # with timeframe: the bars the service holds, instead of columns
    timeframe: Timeframe | None = None  # (with a dataset: only its series of this timeframe)
    dataset: DatasetRef | None = None  # instead of bars: the rows a backfill stored
    symbols: Annotated[list[Symbol], msgspec.Meta(min_length=1, max_length=100_000)] | None = None  # of the dataset
    label: Label = msgspec.field(default_factory=Label)
    params: dict[str, int | float | str | bool | None] = {}  # the library's own parameters
    test_fraction: Annotated[float, msgspec.Meta(ge=0.05, le=0.5)] = 0.2
    promote: bool | Literal["if_better"] = "if_better"
    refresh: bool = False  # continue from the current version's artifact (kinds that can)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.dataset is not None:
            if self.length:
                raise ValueError("dataset: send a dataset or OHLCV columns, not both")
            if self.symbol is not None:
                raise ValueError("symbol: a dataset's series are chosen with 'symbols' (a list)")
            return
        if self.symbols is not None:
            raise ValueError("symbols: chooses series of a 'dataset'")
        if self.length == 0 and (self.symbol is None or self.timeframe is None):
            raise ValueError("close: send OHLCV columns, 'symbol' and 'timeframe' of a series the service holds, "
                             "or a 'dataset'")
        if self.length and self.close is None:
            raise ValueError("close: the label needs the 'close' column")

    @property
    def task(self) -> str:
        return CLASSIFICATION if self.label.type == "direction" else REGRESSION

    @property
    def label_spec(self) -> dict[str, Any]:
        return {"type": self.label.type, "horizon": self.label.horizon}

    def labelled(self, rows: Mapping[str, Any], close: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """(x, y, feature names) from a ``features.transform`` reply and the closes of the same bars (this
        request's own ``close`` unless given)."""
        closes = self.close if close is None else close
        assert closes is not None
        horizon = self.label.horizon
        x = np.asarray(rows["values"], dtype=np.float64)
        index = np.asarray(rows["index"], dtype=np.int64)
        keep = index + horizon < len(closes)
        x, index = x[keep], index[keep]
        later, now = closes[index + horizon], closes[index]
        y = (later > now).astype(np.int64) if self.label.type == "direction" else later / now - 1.0
        return np.ascontiguousarray(x), y, list(rows["features"])

    def labelled_series(self, series: Sequence[Mapping[str, np.ndarray]], names: list[str]
                        ) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """(x, y, feature names) of a dataset's series (``values``, ``index``, ``close``, ``ts`` each): every
        series labelled on its own closes, then all rows merged in bar time (stable: ties keep the series'
        order), so the time-ordered split holds out the latest rows of all of them."""
        xs, ys, times = [], [], []
        for item in series:
            x, y, _ = self.labelled({"values": item["values"], "index": item["index"], "features": names},
                                    np.asarray(item["close"], dtype=np.float64))
            index = np.asarray(item["index"], dtype=np.int64)
            xs.append(x)
            ys.append(y)
            times.append(np.asarray(item["ts"], dtype=np.int64)[index[index + self.label.horizon < len(item["close"])]])
        order = np.argsort(np.concatenate(times), kind="stable")
        width = len(names)
        x = np.concatenate([a.reshape(-1, width) for a in xs])[order]
        return np.ascontiguousarray(x), np.concatenate(ys)[order], names
