"""The built-in feature extractors (``{"feature": NAME}`` steps); docs/FEATURES.md describes each.

Rolling statistics are TA-Lib's (``SMA``, ``STDDEV``: population standard deviation), taken from the
indicator registry, so batch and stream run the same arithmetic and agree to the last bits. The rest are
exact one-line formulas with an O(1) stream (a ring of the last ``k`` values).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ml_processing.sdk import BadRequest
from ml_processing.sdk.feature import FeatureExtractor, FeatureStream, MapStream
from ml_processing.sdk.indicator import Indicator, IndicatorStream, Param

NAN = float("nan")
DAY_MS = 86_400_000
TWO_PI = 2 * math.pi
TWO_PI_7 = 2 * math.pi / 7
Registries = Mapping[str, Mapping[str, Any]]


def _indicator(registries: Registries, name: str) -> Indicator:
    indicator = registries.get("indicators", {}).get(name)
    if indicator is None:
        raise BadRequest(f"this step needs indicator {name}, which no loaded plugin registers", field="steps")
    return indicator  # type: ignore[no-any-return]


def _shift(x: np.ndarray, k: int) -> np.ndarray:
    out = np.full_like(x, np.nan)
    if k < len(x):
        out[k:] = x[:-k] if k else x
    return out


class _Lagged(FeatureStream):
    """``fn(x[t], x[t-k])``; NaN for the first k rows (the ring holds NaNs like the batch shift does)."""

    def __init__(self, k: int, fn: Any) -> None:
        self.ring: deque[float] = deque(maxlen=k + 1)
        self.k = k
        self.fn = fn

    def update(self, *inputs: float) -> tuple[float, ...]:
        ring = self.ring
        ring.append(inputs[0])
        if len(ring) <= self.k:
            return (NAN,)
        return (self.fn(ring[-1], ring[0]),)


def _log_ratio(a: float, b: float) -> float:
    return math.log(a / b) if a > 0 and b > 0 else NAN


def _ratio_minus_one(a: float, b: float) -> float:
    return a / b - 1.0 if b != 0 else NAN


class _KStep(FeatureExtractor):
    params = (Param("k", int, 1, minimum=1, maximum=100_000, doc="bars back"),)

    def lookback(self, params: Mapping[str, int | float]) -> int:
        return int(params["k"])


class Return(_KStep):
    name = "return"
    doc = "Simple return over k bars: x[t] / x[t-k] - 1 (NaN where x[t-k] is 0)"

    def batch(self, inputs: Sequence[np.ndarray], params: Mapping[str, int | float],
              registries: Registries) -> tuple[np.ndarray, ...]:
        x = inputs[0]
        past = _shift(x, int(params["k"]))
        with np.errstate(divide="ignore", invalid="ignore"):
            out = np.where(past != 0, x / past - 1.0, np.nan)
        return (out,)

    def stream(self, params: Mapping[str, int | float], registries: Registries) -> FeatureStream:
        return _Lagged(int(params["k"]), _ratio_minus_one)


class LogReturn(_KStep):
    name = "log_return"
    doc = "Log return over k bars: ln(x[t] / x[t-k]) (NaN unless both are positive)"

    def batch(self, inputs: Sequence[np.ndarray], params: Mapping[str, int | float],
              registries: Registries) -> tuple[np.ndarray, ...]:
        return (_log_return(inputs[0], int(params["k"])),)

    def stream(self, params: Mapping[str, int | float], registries: Registries) -> FeatureStream:
        return _Lagged(int(params["k"]), _log_ratio)


def _log_return(x: np.ndarray, k: int) -> np.ndarray:
    past = _shift(x, k)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where((x > 0) & (past > 0), np.log(x / past), np.nan)


class Change(_KStep):
    name = "change"
    doc = "Difference over k bars: x[t] - x[t-k]"

    def batch(self, inputs: Sequence[np.ndarray], params: Mapping[str, int | float],
              registries: Registries) -> tuple[np.ndarray, ...]:
        return (inputs[0] - _shift(inputs[0], int(params["k"])),)

    def stream(self, params: Mapping[str, int | float], registries: Registries) -> FeatureStream:
        return _Lagged(int(params["k"]), lambda a, b: a - b)


class Lag(_KStep):
    name = "lag"
    doc = "The value k bars back: x[t-k] (lag any column, e.g. an indicator's)"

    def batch(self, inputs: Sequence[np.ndarray], params: Mapping[str, int | float],
              registries: Registries) -> tuple[np.ndarray, ...]:
        return (_shift(inputs[0], int(params["k"])),)

    def stream(self, params: Mapping[str, int | float], registries: Registries) -> FeatureStream:
        return _Lagged(int(params["k"]), lambda a, b: b)




class Volatility(FeatureExtractor):
    name = "volatility"
    doc = "Rolling standard deviation (population, TA-Lib STDDEV) of 1-bar log returns over `window` bars"
    params = (Param("window", int, 20, minimum=2, maximum=100_000, doc="bars in the window"),)

    def lookback(self, params: Mapping[str, int | float]) -> int:
        return int(params["window"])  # one bar for the first return, window - 1 for the deviation

    def batch(self, inputs: Sequence[np.ndarray], params: Mapping[str, int | float],
              registries: Registries) -> tuple[np.ndarray, ...]:
        stddev = _indicator(registries, "STDDEV")
        returns = _log_return(inputs[0], 1)
        return (stddev.batch({"close": returns}, {"timeperiod": int(params["window"]), "nbdev": 1.0})[0],)

    def stream(self, params: Mapping[str, int | float], registries: Registries) -> FeatureStream:
        return _VolatilityStream(_indicator(registries, "STDDEV").stream(
            {"timeperiod": int(params["window"]), "nbdev": 1.0}))


class _VolatilityStream(FeatureStream):
    """The last close and a TA-Lib STDDEV stream of the log returns (its own warm-up and NaN handling)."""

    def __init__(self, stddev: IndicatorStream) -> None:
        self.stddev = stddev
        self.last = NAN

    def update(self, *inputs: float) -> tuple[float, ...]:
        x, last = inputs[0], self.last
        self.last = x
        r = _log_ratio(x, last) if x == x and last == last else NAN
        return (self.stddev.update({"close": r})[0],)


class ZScore(FeatureExtractor):
    name = "zscore"
    doc = ("Rolling z-score over `window` bars: (x - SMA) / STDDEV (TA-Lib, population); 0 where the "
           "window is flat")
    params = (Param("window", int, 20, minimum=2, maximum=100_000, doc="bars in the window"),)

    def lookback(self, params: Mapping[str, int | float]) -> int:
        return int(params["window"]) - 1

    def batch(self, inputs: Sequence[np.ndarray], params: Mapping[str, int | float],
              registries: Registries) -> tuple[np.ndarray, ...]:
        window = int(params["window"])
        data = {"close": inputs[0]}
        mean = _indicator(registries, "SMA").batch(data, {"timeperiod": window})[0]
        std = _indicator(registries, "STDDEV").batch(data, {"timeperiod": window, "nbdev": 1.0})[0]
        with np.errstate(divide="ignore", invalid="ignore"):
            out = np.where(std > 0, (inputs[0] - mean) / std, 0.0)
        out[np.isnan(std)] = np.nan
        return (out,)

    def stream(self, params: Mapping[str, int | float], registries: Registries) -> FeatureStream:
        window = int(params["window"])
        return _ZScoreStream(_indicator(registries, "SMA").stream({"timeperiod": window}),
                             _indicator(registries, "STDDEV").stream({"timeperiod": window, "nbdev": 1.0}))


class _ZScoreStream(FeatureStream):
    """TA-Lib SMA and STDDEV streams of the same column."""

    def __init__(self, sma: IndicatorStream, stddev: IndicatorStream) -> None:
        self.sma, self.stddev = sma, stddev

    def update(self, *inputs: float) -> tuple[float, ...]:
        x = inputs[0]
        bar = {"close": x}
        mean, std = self.sma.update(bar)[0], self.stddev.update(bar)[0]
        if std != std:
            return (NAN,)
        return ((x - mean) / std if std > 0 else 0.0,)


class Diff(FeatureExtractor):
    name = "diff"
    doc = "Difference of two columns: a - b (default close - open)"
    inputs = ("close", "open")

    def lookback(self, params: Mapping[str, int | float]) -> int:
        return 0

    def batch(self, inputs: Sequence[np.ndarray], params: Mapping[str, int | float],
              registries: Registries) -> tuple[np.ndarray, ...]:
        return (inputs[0] - inputs[1],)

    def stream(self, params: Mapping[str, int | float], registries: Registries) -> FeatureStream:
        return MapStream(lambda a, b: (a - b,))


class Ratio(FeatureExtractor):
    name = "ratio"
    doc = "Ratio of two columns: a / b (default close / open; NaN where b is 0)"
    inputs = ("close", "open")

    def lookback(self, params: Mapping[str, int | float]) -> int:
        return 0

    def batch(self, inputs: Sequence[np.ndarray], params: Mapping[str, int | float],
              registries: Registries) -> tuple[np.ndarray, ...]:
        a, b = inputs
        with np.errstate(divide="ignore", invalid="ignore"):
            return (np.where(b != 0, a / b, np.nan),)

    def stream(self, params: Mapping[str, int | float], registries: Registries) -> FeatureStream:
        return MapStream(lambda a, b: (a / b if b != 0 else NAN,))


class Candle(FeatureExtractor):
    name = "candle"
    doc = ("Candle shape: body (close - open), upper wick, lower wick, range (high - low); divided by the "
           "close when `relative` is 1")
    inputs = ("open", "high", "low", "close")
    outputs = ("body", "upper_wick", "lower_wick", "range")
    params = (Param("relative", int, 1, minimum=0, maximum=1, doc="1: as fractions of the close"),)

    def lookback(self, params: Mapping[str, int | float]) -> int:
        return 0

    def batch(self, inputs: Sequence[np.ndarray], params: Mapping[str, int | float],
              registries: Registries) -> tuple[np.ndarray, ...]:
        o, h, lo, c = inputs
        parts = (c - o, h - np.maximum(o, c), np.minimum(o, c) - lo, h - lo)
        if not params["relative"]:
            return parts
        with np.errstate(divide="ignore", invalid="ignore"):
            return tuple(np.where(c != 0, p / c, np.nan) for p in parts)

    def stream(self, params: Mapping[str, int | float], registries: Registries) -> FeatureStream:
        relative = bool(params["relative"])

        def shape(o: float, h: float, lo: float, c: float) -> tuple[float, ...]:
            parts = (c - o, h - max(o, c), min(o, c) - lo, h - lo)
            if not relative:
                return parts
            return tuple(p / c for p in parts) if c != 0 else (NAN, NAN, NAN, NAN)

        return MapStream(shape)


class Time(FeatureExtractor):
    name = "time"
    doc = ("Cyclical time of the bar's `ts` (epoch ms, UTC): sine and cosine of the time of day and of the "
           "(continuous) day of the week, Monday 00:00 = angle 0")
    inputs = ("ts",)
    outputs = ("tod_sin", "tod_cos", "dow_sin", "dow_cos")

    def lookback(self, params: Mapping[str, int | float]) -> int:
        return 0

    def batch(self, inputs: Sequence[np.ndarray], params: Mapping[str, int | float],
              registries: Registries) -> tuple[np.ndarray, ...]:
        days = inputs[0] / DAY_MS
        whole = np.floor(days)
        shifted = whole + 3  # 1970-01-01 was a Thursday: day 0 of the week is Monday
        week = shifted - 7 * np.floor(shifted / 7) + (days - whole)
        tod, dow = TWO_PI * (days - whole), TWO_PI_7 * week
        return (np.sin(tod), np.cos(tod), np.sin(dow), np.cos(dow))

    def stream(self, params: Mapping[str, int | float], registries: Registries) -> FeatureStream:
        def angles(ts: float) -> tuple[float, ...]:
            if ts != ts:
                return (NAN, NAN, NAN, NAN)
            days = ts / DAY_MS
            whole = math.floor(days)
            shifted = whole + 3.0
            week = shifted - 7 * math.floor(shifted / 7) + (days - whole)
            tod, dow = TWO_PI * (days - whole), TWO_PI_7 * week
            return (math.sin(tod), math.cos(tod), math.sin(dow), math.cos(dow))

        return MapStream(angles)


def builtin_extractors() -> list[FeatureExtractor]:
    return [Return(), LogReturn(), Change(), Lag(), Volatility(), ZScore(), Diff(), Ratio(), Candle(), Time()]
