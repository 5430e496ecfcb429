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

The shape at each swing is computed once per request and shared by the four patterns (`SwingSeries.memo`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ml_processing.sdk.pattern import BEARISH, BULLISH, PatternEvent

from .base import ChartPattern, ChartState, Formation, chart_event, first, key_points
from .zigzag import Swing, SwingSeries

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


def shapes(series: SwingSeries, p: Mapping[str, int | float]) -> list[Formation | None]:
    """The shape at every swing (None for the first three), once per request for the four shape patterns."""
    key = ("shapes", p["tolerance_atr"])
    if key not in series.memo:
        points = [w for _, w in series.swings]
        series.memo[key] = [None] * min(3, len(points)) + [shape_of(points[k - 3:k + 1], p)
                                                           for k in range(3, len(points))]
    found: list[Formation | None] = series.memo[key]
    return found


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
        return chart_event(self.name, index, direction, np.mean([formed["quality"], min(1.0, size / 2)]),
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

    def scan(self, series: SwingSeries, params: Mapping[str, int | float]) -> list[PatternEvent]:
        events = []
        bars, close = series.bars(), series.close
        for k, formed in enumerate(shapes(series, params)):
            if formed is None or formed["shape"] != self.name:
                continue
            start, end = bars[k], bars[k + 1]
            index = np.arange(start, end)
            top = formed["upper"][0] * index + formed["upper"][1]
            bottom = formed["lower"][0] * index + formed["lower"][1]
            window = close[start:end]
            hit = first((window > top) | (window < bottom))
            if hit is None:
                continue
            event = self.breakout(formed, start + hit, float(close[start + hit]))
            assert event is not None, "the numpy search and the per-bar rule disagree"
            events.append(event)
        return events
