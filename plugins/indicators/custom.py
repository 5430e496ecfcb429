"""Indicators TA-Lib lacks, each with a batch form and an O(1) stream (TA-Lib itself provides Keltner
channels ``KC``, Donchian channels ``DONCHIAN``, SuperTrend, Hull MA ``HMA`` and Heikin-Ashi ``HA``).

* ``ICHIMOKU``: tenkan-sen, kijun-sen, senkou span A and B. The spans are reported at the bar they are
  computed from, not displaced ``kijun`` bars ahead as charts draw them, so every series is causal and live
  values equal batch values; shift them forward yourself to plot. Chikou span is the close, shifted back.
* ``VWAP_SESSION``: volume-weighted average of the typical price (high + low + close) / 3, restarting at
  every session. Sessions are UTC days offset by ``session_start_minute``; ``ts`` is epoch milliseconds.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import talib

from ml_processing.sdk.indicator import Indicator, IndicatorStream, Param

NAN = float("nan")
DAY_MS = 86_400_000


def _midpoint(high: np.ndarray, low: np.ndarray, window: int) -> np.ndarray:
    """(highest high + lowest low) / 2 over the last `window` bars, NaN before: TA-Lib's ``MIDPRICE``."""
    return np.asarray(talib.MIDPRICE(high, low, timeperiod=window), dtype=np.float64)


class Ichimoku(Indicator):
    name = "ICHIMOKU"
    group = "Overlap Studies"
    doc = "Ichimoku Kinko Hyo (spans not displaced)"
    inputs = ("high", "low")
    params = (Param("tenkan", int, 9, minimum=1, maximum=100_000, doc="conversion line window"),
              Param("kijun", int, 26, minimum=1, maximum=100_000, doc="base line window"),
              Param("senkou", int, 52, minimum=1, maximum=100_000, doc="leading span B window"))
    outputs = ("tenkan", "kijun", "senkou_a", "senkou_b")

    def lookback(self, params: Mapping[str, int | float]) -> int:
        return int(max(params["tenkan"], params["kijun"], params["senkou"])) - 1

    def batch(self, data: Mapping[str, np.ndarray], params: Mapping[str, int | float]) -> tuple[np.ndarray, ...]:
        high, low = data["high"], data["low"]
        tenkan = _midpoint(high, low, int(params["tenkan"]))
        kijun = _midpoint(high, low, int(params["kijun"]))
        outputs = (tenkan, kijun, (tenkan + kijun) / 2, _midpoint(high, low, int(params["senkou"])))
        start = self.lookback(params)
        for series in outputs:
            series[:start] = np.nan  # one warm-up for all four outputs
        return outputs

    def stream(self, params: Mapping[str, int | float]) -> IndicatorStream:
        return IchimokuStream(self, params)


class IchimokuStream(IndicatorStream):
    """Three TA-Lib ``MIDPRICE`` stream handles, opened together on the first ``senkou`` bars (the longest
    window, which is also the shared warm-up), then O(1) per bar each."""

    def __init__(self, indicator: Ichimoku, params: Mapping[str, int | float]) -> None:
        self.windows = [int(params[name]) for name in ("tenkan", "kijun", "senkou")]
        self.need = indicator.lookback(params) + 1
        self.history: list[tuple[float, float]] = []
        self.handles: list[Any] = []

    def update(self, bar: Mapping[str, float]) -> tuple[float, ...]:
        high, low = bar["high"], bar["low"]
        if high != high or low != low:
            return (NAN, NAN, NAN, NAN)  # a gap: skipped
        handles = self.handles
        if handles:
            tenkan = handles[0].update(high, low)
            kijun = handles[1].update(high, low)
            return (tenkan, kijun, (tenkan + kijun) / 2, handles[2].update(high, low))
        self.history.append((high, low))
        if len(self.history) < self.need:
            return (NAN, NAN, NAN, NAN)
        highs, lows = np.array(self.history, dtype=np.float64).T
        self.handles = [talib.stream.MIDPRICE(highs, lows, timeperiod=w) for w in self.windows]
        self.history = []
        tenkan, kijun, senkou_b = (float(h.value) for h in self.handles)
        return (tenkan, kijun, (tenkan + kijun) / 2, senkou_b)

    def peek(self, bar: Mapping[str, float]) -> tuple[float, ...]:
        high, low = bar["high"], bar["low"]
        if high != high or low != low:
            return (NAN, NAN, NAN, NAN)
        if self.handles:
            tenkan, kijun, senkou_b = (float(h.peek(high, low)) for h in self.handles)
        elif len(self.history) + 1 >= self.need:
            highs, lows = np.array([*self.history, (high, low)], dtype=np.float64).T
            tenkan, kijun, senkou_b = (float(talib.MIDPRICE(highs, lows, timeperiod=w)[-1]) for w in self.windows)
        else:
            return (NAN, NAN, NAN, NAN)
        return (tenkan, kijun, (tenkan + kijun) / 2, senkou_b)


class SessionVwap(Indicator):
    name = "VWAP_SESSION"
    group = "Volume Indicators"
    doc = "Session-anchored VWAP of the typical price"
    inputs = ("ts", "high", "low", "close", "volume")
    params = (Param("session_start_minute", int, 0, minimum=0, maximum=1439,
                    doc="minute of the UTC day at which a session starts"),)
    outputs = ("vwap",)

    def lookback(self, params: Mapping[str, int | float]) -> int:
        return 0

    def batch(self, data: Mapping[str, np.ndarray], params: Mapping[str, int | float]) -> tuple[np.ndarray, ...]:
        session = np.floor((data["ts"] - params["session_start_minute"] * 60_000) / DAY_MS)
        weight = np.nan_to_num(data["volume"])
        price = (data["high"] + data["low"] + data["close"]) / 3
        valid = ~np.isnan(price) & ~np.isnan(session)
        pv = np.where(valid, price * weight, 0.0)
        w = np.where(valid, weight, 0.0)
        out = np.full(len(price), np.nan)
        # cumulative sums restarted at each session boundary
        starts = np.flatnonzero(np.r_[True, session[1:] != session[:-1]])
        for begin, end in zip(starts, np.r_[starts[1:], len(price)], strict=True):
            cum_pv, cum_w = np.cumsum(pv[begin:end]), np.cumsum(w[begin:end])
            with np.errstate(invalid="ignore", divide="ignore"):
                out[begin:end] = np.where(cum_w > 0, cum_pv / cum_w, np.nan)
        out[~valid] = np.nan
        return (out,)

    def stream(self, params: Mapping[str, int | float]) -> IndicatorStream:
        return SessionVwapStream(int(params["session_start_minute"]))


class SessionVwapStream(IndicatorStream):
    def __init__(self, start_minute: int) -> None:
        self.offset = start_minute * 60_000
        self.session: float | None = None
        self.pv = self.w = 0.0

    def _step(self, bar: Mapping[str, float]) -> tuple[float | None, float, float, float]:
        session = (bar["ts"] - self.offset) // DAY_MS
        price = (bar["high"] + bar["low"] + bar["close"]) / 3
        volume = bar["volume"]
        weight = volume if volume == volume else 0.0
        pv, w = (self.pv, self.w) if session == self.session else (0.0, 0.0)
        if price != price:
            return session, pv, w, NAN
        pv, w = pv + price * weight, w + weight
        return session, pv, w, (pv / w if w > 0 else NAN)

    def update(self, bar: Mapping[str, float]) -> tuple[float, ...]:
        self.session, self.pv, self.w, value = self._step(bar)
        return (value,)

    def peek(self, bar: Mapping[str, float]) -> tuple[float, ...]:
        return (self._step(bar)[3],)


def custom_indicators() -> list[Indicator]:
    return [Ichimoku(), SessionVwap()]
