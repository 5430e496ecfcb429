"""Triangles and channels: two lines, one through the last two peaks and one through the last two troughs.

**Forms** at each swing confirmation, from the last four swings (two peaks, two troughs): a line is flat
when it moves less than ``tolerance_atr`` x ATR over the pattern, two lines are parallel when their gap
changes by less than that, and lines that have crossed form nothing.

| pattern | upper line | lower line |
| --- | --- | --- |
| ``TRIANGLE_ASCENDING`` | flat | rising |
| ``TRIANGLE_DESCENDING`` | falling | flat |
| ``TRIANGLE_SYMMETRIC`` | falling | rising |
| ``CHANNEL`` | parallel to the lower | parallel to the upper |

**Confirmed** at the first close beyond either line before the next swing confirmation (which replaces
the formation, or clears it): above the upper line bullish, below the lower one bearish. **Confidence**:
the mean of the shape's quality (how much the lines converge, up to 4 x the tolerance; for a channel how
parallel they are) and the breakout's size (capped at 1 for 2 x ATR). The event's points are the four
swings and the confirming close; ``details`` holds the ``upper`` and ``lower`` lines as (slope per bar,
value at bar 0).

The shapes at every swing, and where each breaks out, are computed once per request, in numpy, and shared
by the four patterns (`SwingSeries.memo`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ml_processing.sdk.pattern import BEARISH, BULLISH, PatternEvent

from .base import (
    ChartPattern,
    ChartState,
    Formation,
    Found,
    at_least_zero,
    at_most_one,
    chart_event,
    key_points,
    rounded,
)
from .search import first_in_stretches
from .zigzag import Swing, Swings, SwingSeries

SHAPES = ("TRIANGLE_ASCENDING", "TRIANGLE_DESCENDING", "TRIANGLE_SYMMETRIC", "CHANNEL")


def _line(a: Swing, b: Swing) -> tuple[float, float]:
    """The line through two swing points: (slope per bar, value at bar 0)."""
    slope = (b.price - a.price) / max(1, b.index - a.index)
    return slope, a.price - slope * a.index


def shape_of(last: Sequence[Swing], p: Mapping[str, int | float]) -> Formation | None:
    """The shape the last four swings draw, or None.

    >>> flat_top = [Swing(0, 110.0, True, 1.0), Swing(10, 100.0, False, 1.0), Swing(20, 110.2, True, 1.0),
    ...             Swing(30, 104.0, False, 1.0)]
    >>> shape_of(flat_top, {"tolerance_atr": 0.75})["shape"]
    'TRIANGLE_ASCENDING'
    """
    peaks = [w for w in last if w.high]
    troughs = [w for w in last if not w.high]
    if len(peaks) != 2 or len(troughs) != 2:
        return None
    atr = last[-1].atr
    span = last[-1].index - last[0].index
    if span <= 0 or atr != atr:
        return None
    upper, lower = _line(*peaks), _line(*troughs)
    tolerance = p["tolerance_atr"] * atr
    up_move, low_move = upper[0] * span, lower[0] * span
    flat_up, flat_low = abs(up_move) <= tolerance, abs(low_move) <= tolerance
    end = last[-1].index
    if upper[0] * end + upper[1] <= lower[0] * end + lower[1]:
        return None  # the lines have crossed already
    if flat_up and not flat_low and low_move > 0:
        name = "TRIANGLE_ASCENDING"
    elif flat_low and not flat_up and up_move < 0:
        name = "TRIANGLE_DESCENDING"
    elif up_move < -tolerance and low_move > tolerance:
        name = "TRIANGLE_SYMMETRIC"
    elif abs(up_move - low_move) <= tolerance:
        name = "CHANNEL"
    else:
        return None
    quality = 1 - abs(up_move - low_move) / (4 * tolerance) if name == "CHANNEL" else \
        min(1.0, abs(up_move - low_move) / (4 * tolerance))
    return {"shape": name, "upper": upper, "lower": lower, "points": list(last), "quality": max(0.0, quality),
            "atr": atr}


def shapes(series: SwingSeries, p: Mapping[str, int | float]) -> dict[str, np.ndarray]:
    """`shape_of` on every four swings at once, and the bar where each formation breaks out of its lines
    before the next swing (-1 if it does not), once per request for the four shape patterns: ``shape`` (the
    index into `SHAPES`, -1 for none) and the lines, quality and ATR of each swing's formation."""
    key = ("shapes", p["tolerance_atr"])
    if key in series.memo:
        return series.memo[key]  # type: ignore[no-any-return]
    w = series.swings
    k = np.arange(3, len(w))
    first = k - 3
    peak_first = w.peak[first]
    peaks = np.where(peak_first, first, first + 1), np.where(peak_first, first + 2, first + 3)
    troughs = np.where(peak_first, first + 1, first), np.where(peak_first, first + 3, first + 2)
    (upper, upper0), (lower, lower0) = _lines(w, *peaks), _lines(w, *troughs)
    atr = w.atr[k]
    span = w.index[k] - w.index[first]
    tolerance = p["tolerance_atr"] * atr
    up_move, low_move = upper * span, lower * span
    flat_up, flat_low = np.abs(up_move) <= tolerance, np.abs(low_move) <= tolerance
    end = w.index[k]
    spread = np.abs(up_move - low_move) / (4 * tolerance)
    shape = np.select([(span <= 0) | np.isnan(atr) | (upper * end + upper0 <= lower * end + lower0),
                       flat_up & ~flat_low & (low_move > 0), flat_low & ~flat_up & (up_move < 0),
                       (up_move < -tolerance) & (low_move > tolerance), np.abs(up_move - low_move) <= tolerance],
                      [-1, 0, 1, 2, 3], -1)
    quality = at_least_zero(np.where(shape == 3, 1 - spread, at_most_one(spread)))
    # the breakout: for each bar, the lines of the formation of the stretch it lies in
    found = np.full(len(w), -1)
    found[k] = shape
    owner = series.stretch()
    bars = np.arange(len(series))
    slopes = {name: np.zeros(len(w)) for name in ("upper", "upper0", "lower", "lower0")}
    for name, values in zip(slopes, (upper, upper0, lower, lower0), strict=True):
        slopes[name][k] = values
    top = slopes["upper"][owner] * bars + slopes["upper0"][owner]
    bottom = slopes["lower"][owner] * bars + slopes["lower0"][owner]
    close = series.close
    broke = first_in_stretches(((close > top) | (close < bottom)) & (found[owner] >= 0), owner, len(w))
    out = {"shape": found[k], "k": k, "upper": upper, "upper0": upper0, "lower": lower, "lower0": lower0,
           "quality": quality, "atr": atr, "at": broke[k]}
    series.memo[key] = out
    return out


def _lines(w: Swings, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`_line` through swings `a` and `b`, for all at once."""
    slope = (w.price[b] - w.price[a]) / np.maximum(1, w.index[b] - w.index[a])
    return slope, w.price[a] - slope * w.index[a]


class Shape(ChartPattern):
    def __init__(self, name: str) -> None:
        super().__init__(name, f"{name.replace('_', ' ').lower().capitalize()}: formed by the last two peaks and "
                         "troughs, confirmed by a close beyond either line")

    def breakout(self, formed: Formation, index: int, close: float) -> PatternEvent | None:
        """The event if `close` at bar `index` is beyond either line of the formation, else None."""
        top = formed["upper"][0] * index + formed["upper"][1]
        bottom = formed["lower"][0] * index + formed["lower"][1]
        if close > top:
            direction, size = BULLISH, (close - top) / formed["atr"]
        elif close < bottom:
            direction, size = BEARISH, (bottom - close) / formed["atr"]
        else:
            return None
        return chart_event(self.name, index, direction, (formed["quality"] + min(1.0, size / 2)) / 2,
                           key_points(formed["points"], index, close),
                           upper=[round(v, 6) for v in formed["upper"]], lower=[round(v, 6) for v in formed["lower"]])

    def update(self, state: ChartState, index: int, bar: Mapping[str, float],
               swing: Swing | None) -> list[PatternEvent]:
        swings = state.zigzag.swings
        if swing is not None and len(swings) >= 4:
            formed = shape_of(swings[-4:], state.params)
            state.pending = formed if formed is not None and formed["shape"] == self.name else None
        close = bar["close"]
        if state.pending is None or close != close:
            return []
        event = self.breakout(state.pending, index, close)
        if event is None:
            return []
        state.pending = None
        return [event]

    def scan(self, series: SwingSeries, params: Mapping[str, int | float]) -> Found:
        if len(series.swings) < 4:
            return Found.none()
        formed = shapes(series, params)
        mine = np.flatnonzero((formed["shape"] == SHAPES.index(self.name)) & (formed["at"] >= 0))
        if not mine.size:
            return Found.none()
        at = formed["at"][mine]
        close = series.close[at]
        upper, upper0, lower, lower0, atr = (formed[name][mine] for name in ("upper", "upper0", "lower", "lower0", "atr"))
        top, bottom = upper * at + upper0, lower * at + lower0
        bullish = close > top
        size = np.where(bullish, close - top, bottom - close) / atr
        confidence = (formed["quality"][mine] + at_most_one(size / 2)) / 2
        w = series.swings
        pairs = w.pairs
        points = [(*pairs[k - 3:k + 1], (bar, c))
                  for k, bar, c in zip(formed["k"][mine].tolist(), at.tolist(), close.tolist(), strict=True)]
        lines = (rounded(values, 6).tolist() for values in (upper, upper0, lower, lower0))
        details = [{"upper": [u, u0], "lower": [lo, lo0]} for u, u0, lo, lo0 in zip(*lines, strict=True)]
        return Found.of(at, bullish, confidence, points, details)
