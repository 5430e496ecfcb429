"""The zigzag: the swing points every chart pattern is built on, live and over whole arrays.

The threshold is ``swing_atr`` x ATR(``atr_period``) (TA-Lib's ATR). While the market rises, the highest
high since the last trough is the candidate peak; once a low falls ``threshold`` below it, the peak is
confirmed (at that bar) and the zigzag looks for a trough the same way. Before the first swing, the first
move of a threshold either way decides the direction. A bar with a NaN high or low is a gap: it moves
nothing. The threshold uses the last known ATR (bars before the ATR has a value, or while it is zero, as in
a series flat from its start, confirm nothing).

`Zigzag` confirms swings bar by bar (a live stream); `batch_swings` is the same rule over whole arrays, in
numpy (`search`): for every bar, where a zigzag holding it as its extreme would next move, then the walk
from one confirmation to the next. The chart contract test proves that they agree on every pattern's
events.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from ml_processing.sdk.indicator import IndicatorStream
from ml_processing.sdk.talib_functions import TalibIndicator

from . import jit
from .search import chains, next_moves, path, stretches


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
        if high != high or low != low or not self.last_atr > 0:  # a gap, no ATR yet, or none at all
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


@dataclass(frozen=True)
class Swings:
    """The swing points of a series as columns, in order: the bar that confirmed each, the bar of its extreme,
    its price, peak (True) or trough, and the ATR when it was confirmed."""

    at: np.ndarray
    index: np.ndarray
    price: np.ndarray
    peak: np.ndarray
    atr: np.ndarray

    def __len__(self) -> int:
        return len(self.at)

    @cached_property
    def pairs(self) -> list[tuple[int, float]]:
        """Each swing as the (bar, price) key point events carry (made once, shared by the events)."""
        return list(zip(self.index.tolist(), self.price.tolist(), strict=True))


def last_known(values: np.ndarray) -> np.ndarray:
    """Each bar's last non-NaN value (NaN before the first).

    >>> last_known(np.array([np.nan, 1.0, np.nan, 2.0])).tolist()[1:]
    [1.0, 1.0, 2.0]
    """
    at = np.where(np.isnan(values), -1, np.arange(len(values)))
    np.maximum.accumulate(at, out=at)
    out = values[np.maximum(at, 0)]
    out[at < 0] = np.nan
    return out


def batch_swings(high: np.ndarray, low: np.ndarray, atr: np.ndarray, swing_atr: float) -> tuple[Swings, np.ndarray]:
    """Every swing of the zigzag over whole arrays, and the ATR each bar saw (the last known one): the rule of
    `Zigzag.update` as a compiled loop (`compiled.zigzag_walk`, with numba), or else computed for all bars at
    once in numpy: for every bar p, `search.next_moves` finds the bar where a zigzag holding p as its extreme
    next moves (a new extreme, or p confirmed) and `search.chains` the extreme it ends up confirming; the
    swings are then the path from one confirmation to the next (`search.path`)."""
    n = len(high)
    seen = last_known(atr)
    compiled = jit.walks()
    if compiled is not None:  # the rule as a plain loop, compiled
        at, index, peak = compiled.zigzag_walk(high, low, seen, float(swing_atr))
        return Swings(at, index, np.where(peak, high[index], low[index]), peak, seen[at]), seen
    threshold = swing_atr * seen
    with np.errstate(invalid="ignore"):
        usable = ~(np.isnan(high) | np.isnan(low)) & (seen > 0)  # a gap, no ATR yet or none at all: moves nothing
    top, bottom = np.where(usable, high, -np.inf), np.where(usable, low, np.inf)
    first = first_swing(top, bottom, threshold)
    if first is None:
        none = np.zeros(0, dtype=np.int64)
        return Swings(none, none, np.zeros(0), np.zeros(0, dtype=bool), np.zeros(0)), seen
    bar, extreme, peak = first
    # for every bar, as the zigzag starts looking for a trough (False) or a peak (True) there: the extreme it
    # confirms and the bar that confirms it (n: none)
    ends, confirm = {}, {}
    for looking, (move, confirms) in ((False, next_moves(-bottom, -top, threshold)),  # the mirror image
                                      (True, next_moves(top, bottom, threshold))):
        ends[looking] = chains(move, confirms)
        confirm[looking] = np.append(move, n)[ends[looking]]
    # the swings of the first one's kind are confirmed at bar, then each at the bar two confirmations later
    ours = path(confirm[peak][confirm[not peak]], bar)
    theirs = confirm[not peak][ours]
    at = np.stack([ours, theirs], axis=1).ravel()
    index = np.stack([np.append(extreme, ends[peak][theirs[:-1]]), ends[not peak][ours]], axis=1).ravel()
    count = int(np.argmax(at >= n)) if at[-1] >= n else len(at)
    at, index = at[:count].astype(np.int64), index[:count].astype(np.int64)
    peak_ = np.arange(count) % 2 == (0 if peak else 1)
    price = np.where(peak_, high[index], low[index])
    return Swings(at, index, price, peak_, seen[at]), seen


def first_swing(top: np.ndarray, bottom: np.ndarray, threshold: np.ndarray) -> tuple[int, int, bool] | None:
    """(confirming bar, extreme bar, peak) of the zigzag's first swing, or None: from the first usable bar it
    tracks the highest high and the lowest low; the first bar a threshold away from one of them (made on an
    earlier bar) confirms it, the high first."""
    usable = np.flatnonzero(np.isfinite(top))
    if not usable.size:
        return None
    f = usable[0]
    top, bottom, threshold = top[f:], bottom[f:], threshold[f:]
    highest, lowest = np.maximum.accumulate(top), np.minimum.accumulate(bottom)
    with np.errstate(invalid="ignore"):
        up = (top <= np.concatenate([[-np.inf], highest[:-1]])) & (highest - bottom >= threshold)
        down = (bottom >= np.concatenate([[np.inf], lowest[:-1]])) & (top - lowest >= threshold)
    decided = up | down
    if not decided.any():
        return None
    d = int(decided.argmax())
    if up[d]:
        return f + d, f + int((top[:d] == highest[d]).argmax()), True
    return f + d, f + int((bottom[:d] == lowest[d]).argmax()), False


@dataclass
class SwingSeries:
    """One series over whole arrays as a chart pattern's batch detection reads it: its columns, its swings,
    the ATR each bar saw, and a memo for what several patterns derive from the same swings (it lives as long
    as the request: nothing is shared between requests)."""

    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    swings: Swings
    seen: np.ndarray
    memo: dict[Any, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.close)

    def stretch(self) -> np.ndarray:
        """For each bar, the number of the last swing confirmed at or before it (-1 before the first): the
        stretches between confirmations, in which the formations of each swing wait."""
        if "stretch" not in self.memo:
            self.memo["stretch"] = stretches(self.swings.at, len(self.close))
        return self.memo["stretch"]  # type: ignore[no-any-return]


class Zigzags:
    """The swings of one series, computed once per (ATR period, threshold) and shared by the chart patterns
    of a request."""

    def __init__(self, data: Mapping[str, np.ndarray]) -> None:
        # fresh, writable and contiguous: the compiled walks are compiled for such arrays only (a read-only
        # array, as msgpack decodes, would make numba compile another version while a request waits)
        self.high, self.low, self.close = (np.array(data[c], dtype=np.float64) for c in ("high", "low", "close"))
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
