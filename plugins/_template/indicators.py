"""The common case: an indicator, registered through ``register_indicators``.

``CLOSE_LOCATION`` is the mean close location value of the last ``timeperiod`` bars: where each close sits
in its bar's range, +1 at the high, -1 at the low, 0 mid-range (or on a flat bar). Once registered it is
everywhere TA-Lib's indicators are: listed and computed by the ``indicators`` service, kept live on every
series, usable as a feature pipeline step, by patterns and by sentiment.

The math is plain synchronous functions with doctests (`close_location`); the `Indicator` declares inputs,
parameters, outputs and lookback, computes a whole series in `batch`, and one bar at a time in the stream
that `stream` returns. The shipped checks (`ml_processing.checks.indicators`) prove the two agree.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence

import numpy as np

from ml_processing.sdk import Indicator, IndicatorStream, Param, hookimpl


def close_location(high: np.ndarray, low: np.ndarray, close: np.ndarray) -> np.ndarray:
    """Where each close sits in its bar: ((close - low) - (high - close)) / (high - low); 0 on a flat bar,
    NaN where a price is missing.

    >>> close_location(np.array([12.0, 10.0, 5.0, 3.0]), np.array([10.0, 8.0, 5.0, 1.0]),
    ...                np.array([12.0, 9.0, 5.0, np.nan])).tolist()
    [1.0, 0.0, 0.0, nan]
    """
    span = high - low
    with np.errstate(divide="ignore", invalid="ignore"):
        out = ((close - low) - (high - close)) / span
    out[span == 0] = 0.0
    return out


def close_location_one(high: float, low: float, close: float) -> float:
    """`close_location` of one bar.

    >>> close_location_one(12.0, 10.0, 10.5), close_location_one(5.0, 5.0, 5.0)
    (-0.5, 0.0)
    """
    span = high - low
    return 0.0 if span == 0 else ((close - low) - (high - close)) / span


class CloseLocation(Indicator):
    name = "CLOSE_LOCATION"
    group = "Custom"
    inputs = ("high", "low", "close")
    params = (Param("timeperiod", int, 14, minimum=1, maximum=100_000, doc="bars averaged"),)
    outputs = ("value",)
    doc = "mean close location value over timeperiod bars: +1 closes at the highs, -1 at the lows"

    def lookback(self, params: Mapping[str, int | float]) -> int:
        return int(params["timeperiod"]) - 1

    def batch(self, data: Mapping[str, np.ndarray], params: Mapping[str, int | float]) -> tuple[np.ndarray, ...]:
        values = close_location(data["high"], data["low"], data["close"])
        n = int(params["timeperiod"])
        out = np.full(len(values), np.nan)
        if len(values) >= n:
            out[n - 1:] = np.lib.stride_tricks.sliding_window_view(values, n).mean(axis=1)
        return (out,)

    def stream(self, params: Mapping[str, int | float]) -> IndicatorStream:
        return CloseLocationStream(int(params["timeperiod"]))


class CloseLocationStream(IndicatorStream):
    """The last ``timeperiod`` close locations; each bar costs O(timeperiod)."""

    def __init__(self, timeperiod: int) -> None:
        self.timeperiod = timeperiod
        self.window: deque[float] = deque(maxlen=timeperiod)

    def _mean(self, values: Sequence[float]) -> tuple[float, ...]:
        return (sum(values) / len(values),) if len(values) == self.timeperiod else (math.nan,)

    def update(self, bar: Mapping[str, float]) -> tuple[float, ...]:
        self.window.append(close_location_one(bar["high"], bar["low"], bar["close"]))
        return self._mean(self.window)

    def peek(self, bar: Mapping[str, float]) -> tuple[float, ...]:
        latest = close_location_one(bar["high"], bar["low"], bar["close"])
        return self._mean([*self.window, latest][-self.timeperiod:])


@hookimpl
def register_indicators() -> list[Indicator]:
    return [CloseLocation()]
