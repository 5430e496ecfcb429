"""The zigzag: the swing points every chart pattern is built on, live and over whole arrays.

The threshold is ``swing_atr`` x ATR(``atr_period``) (TA-Lib's ATR). While the market rises, the highest
high since the last trough is the candidate peak; once a low falls ``threshold`` below it, the peak is
confirmed (at that bar) and the zigzag looks for a trough the same way. Before the first swing, the first
move of a threshold either way decides the direction. A bar with a NaN high or low is a gap: it moves
nothing. The threshold uses the last known ATR (bars before the ATR has a value confirm nothing).

`Zigzag` confirms swings bar by bar (a live stream); `batch_swings` is the same rule written as one tight
loop over whole arrays, beside it so the two read as one. The chart contract test proves that they agree
on every pattern's events.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ml_processing.sdk.indicator import IndicatorStream
from ml_processing.sdk.talib_functions import TalibIndicator


@dataclass(frozen=True)
class Swing:
    index: int  # the bar of the extreme
    price: float
    high: bool  # a peak (True) or a trough (False)
    atr: float  # the ATR when it was confirmed


# -- live ------------------------------------------------------------------------------------------------


@dataclass
class Zigzag:
    """Swing points of one series, confirmed bar by bar."""

    swing_atr: float
    atr: IndicatorStream
    swings: list[Swing] = field(default_factory=list)
    direction: int = 0  # +1 looking for a peak, -1 for a trough, 0 not started
    extreme: float = float("nan")
    extreme_index: int = -1
    last_atr: float = float("nan")
    low0: float = float("nan")  # before the first swing: the lowest low so far (the highest high is `extreme`)
    low0_index: int = -1

    @classmethod
    def open(cls, params: Mapping[str, int | float]) -> Zigzag:
        """A fresh zigzag for a chart pattern's ``atr_period`` and ``swing_atr``."""
        return cls(float(params["swing_atr"]), TalibIndicator("ATR").stream({"timeperiod": int(params["atr_period"])}))

    def update(self, index: int, bar: Mapping[str, float]) -> Swing | None:
        """Advance one bar; the swing point this bar confirms, if any."""
        high, low = bar["high"], bar["low"]
        (atr,) = self.atr.update(bar)
        if atr == atr:
            self.last_atr = atr
        if high != high or low != low or self.last_atr != self.last_atr:
            return None
        threshold = self.swing_atr * self.last_atr
        if self.direction == 0:  # the first move of at least the threshold decides the direction
            if self.extreme != self.extreme:
                self.extreme, self.extreme_index, self.low0, self.low0_index = high, index, low, index
                return None
            if high > self.extreme:
                self.extreme, self.extreme_index = high, index
            if low < self.low0:
                self.low0, self.low0_index = low, index
            if self.extreme - low >= threshold and self.extreme_index < index:
                self.direction = 1
            elif high - self.low0 >= threshold and self.low0_index < index:
                self.direction, self.extreme, self.extreme_index = -1, self.low0, self.low0_index
            else:
                return None
        if self.direction > 0:
            if high > self.extreme:
                self.extreme, self.extreme_index = high, index
                return None
            if self.extreme - low >= threshold:
                swing = Swing(self.extreme_index, self.extreme, True, self.last_atr)
                self.direction, self.extreme, self.extreme_index = -1, low, index
                self.swings.append(swing)
                return swing
        else:
            if low < self.extreme:
                self.extreme, self.extreme_index = low, index
                return None
            if high - self.extreme >= threshold:
                swing = Swing(self.extreme_index, self.extreme, False, self.last_atr)
                self.direction, self.extreme, self.extreme_index = 1, high, index
                self.swings.append(swing)
                return swing
        return None


# -- over whole arrays -----------------------------------------------------------------------------------


def batch_atr(high: np.ndarray, low: np.ndarray, close: np.ndarray, period: int) -> np.ndarray:
    """ATR as the stream sees it: bars with a NaN input are skipped (NaN there), the rest computed by TA-Lib
    as one series, so batch and live share every value."""
    valid = ~(np.isnan(high) | np.isnan(low) | np.isnan(close))
    out = np.full(len(close), np.nan)
    if valid.any():
        (atr,) = TalibIndicator("ATR").batch({"high": high[valid], "low": low[valid], "close": close[valid]},
                                             {"timeperiod": period})
        out[valid] = atr
    return out


def batch_swings(high: np.ndarray, low: np.ndarray, atr: np.ndarray,
                 swing_atr: float) -> tuple[list[tuple[int, Swing]], np.ndarray]:
    """Every (confirming bar, swing) of the zigzag over whole arrays, and the ATR each bar saw (the last
    known one): `Zigzag.update` bar by bar, in one loop over local variables."""
    highs, lows, atrs = high.tolist(), low.tolist(), atr.tolist()
    seen = np.empty(len(highs))
    out: list[tuple[int, Swing]] = []
    direction, extreme, extreme_index, low0, low0_index, last = 0, float("nan"), -1, float("nan"), -1, float("nan")
    for i, (h, lo, a) in enumerate(zip(highs, lows, atrs, strict=True)):
        if a == a:
            last = a
        seen[i] = last
        if h != h or lo != lo or last != last:
            continue
        threshold = swing_atr * last
        if direction == 0:
            if extreme != extreme:
                extreme, extreme_index, low0, low0_index = h, i, lo, i
                continue
            if h > extreme:
                extreme, extreme_index = h, i
            if lo < low0:
                low0, low0_index = lo, i
            if extreme - lo >= threshold and extreme_index < i:
                direction = 1
            elif h - low0 >= threshold and low0_index < i:
                direction, extreme, extreme_index = -1, low0, low0_index
            else:
                continue
        if direction > 0:
            if h > extreme:
                extreme, extreme_index = h, i
            elif extreme - lo >= threshold:
                out.append((i, Swing(extreme_index, extreme, True, last)))
                direction, extreme, extreme_index = -1, lo, i
        elif lo < extreme:
            extreme, extreme_index = lo, i
        elif h - extreme >= threshold:
            out.append((i, Swing(extreme_index, extreme, False, last)))
            direction, extreme, extreme_index = 1, h, i
    return out, seen


@dataclass
class SwingSeries:
    """One series over whole arrays as a chart pattern's batch detection reads it: its columns, its swings
    as (confirming bar, swing) pairs, the ATR each bar saw, and a memo for what several patterns derive
    from the same swings (it lives as long as the request: nothing is shared between requests)."""

    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    swings: list[tuple[int, Swing]]
    seen: np.ndarray
    memo: dict[Any, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.close)

    def bars(self) -> list[int]:
        """The confirming bar of every swing, then the series' length (the end of the last stretch)."""
        return [bar for bar, _ in self.swings] + [len(self.close)]


class Zigzags:
    """The swings of one series, computed once per (ATR period, threshold) and shared by the chart patterns
    of a request."""

    def __init__(self, data: Mapping[str, np.ndarray]) -> None:
        self.high, self.low, self.close = (np.asarray(data[c], dtype=np.float64) for c in ("high", "low", "close"))
        self._atr: dict[int, np.ndarray] = {}
        self._series: dict[tuple[int, float], SwingSeries] = {}

    def get(self, params: Mapping[str, int | float]) -> SwingSeries:
        """The series under a chart pattern's ``atr_period`` and ``swing_atr``."""
        atr_period, swing_atr = int(params["atr_period"]), float(params["swing_atr"])
        key = (atr_period, swing_atr)
        if key not in self._series:
            if atr_period not in self._atr:
                self._atr[atr_period] = batch_atr(self.high, self.low, self.close, atr_period)
            swings, seen = batch_swings(self.high, self.low, self._atr[atr_period], swing_atr)
            self._series[key] = SwingSeries(self.high, self.low, self.close, swings, seen)
        return self._series[key]
