"""``LEVEL_BREAKOUT``: breakouts of support and resistance levels.

**Levels.** Each confirmed swing point joins the nearest level within ``tolerance_atr`` x ATR (ATR as at
its confirmation; the first of equally near ones), whose price becomes the mean of its points; otherwise
it starts a level. The newest ``max_levels`` levels are kept. **Breakout.** A level touched at least
``min_touches`` times is broken by a close, after its last touch, ``breakout_atr`` x ATR beyond it: above a
level last touched by a peak (resistance): bullish; below one last touched by a trough (support):
bearish. A broken level is retired; levels broken on the same bar are reported oldest first.
**Confidence**: touches / (touches + 1) x the breakout's size (excess / (2 x ATR), capped at 1). The
event's points are the level's swing points and the confirming close; ``details`` holds the ``level``,
its ``touches`` and what it ``broke``.

Live, the levels are checked on every bar. Over whole arrays the level set changes only when a swing is
confirmed, so each stretch between two confirmations is first bounded (its highest and lowest close,
for all stretches at once), then searched for the few levels it can break (levels x bars).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from ml_processing.sdk.indicator import Param
from ml_processing.sdk.pattern import BEARISH, BULLISH, PatternEvent

from .base import PARAMS, ChartPattern, ChartState, chart_event, key_points
from .zigzag import Swing, SwingSeries

LEVEL_PARAMS = (*PARAMS, Param("min_touches", int, 2, minimum=2, maximum=100, doc="touches that make a level"),
                Param("breakout_atr", float, 0.25, minimum=0.0, maximum=20, doc="close beyond the level, in ATRs"),
                Param("max_levels", int, 50, minimum=1, maximum=10_000, doc="levels kept (the most recent)"))


class Levels:
    """Support and resistance levels, oldest first, in parallel lists (live and batch keep the same).

    >>> levels = Levels(keep=50)
    >>> levels.add(Swing(10, 100.0, True, 1.0), tolerance=0.75)
    >>> levels.add(Swing(20, 100.5, True, 1.0), tolerance=0.75)
    >>> levels.add(Swing(30, 97.0, False, 1.0), tolerance=0.75)
    >>> levels.prices, [len(points) for points in levels.points]
    ([100.25, 97.0], [2, 1])
    """

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.prices: list[float] = []
        self.points: list[list[Swing]] = []
        self.orders: list[int] = []  # when each level was started (the count of swings added before it)
        self.added = 0

    def add(self, swing: Swing, tolerance: float) -> None:
        """Cluster a confirmed swing point into the nearest level within `tolerance`, or start a level."""
        best, nearest = -1, tolerance
        for j, price in enumerate(self.prices):
            gap = abs(price - swing.price)
            if gap <= nearest and (best < 0 or gap < nearest):
                best, nearest = j, gap
        if best >= 0:
            self.points[best].append(swing)
            self.prices[best] = math.fsum(w.price for w in self.points[best]) / len(self.points[best])
        else:
            self.prices.append(swing.price)
            self.points.append([swing])
            self.orders.append(self.added)
            if len(self.prices) > self.keep:  # the oldest levels go first
                del self.prices[:-self.keep], self.points[:-self.keep], self.orders[:-self.keep]
        self.added += 1

    def remove(self, j: int) -> None:
        del self.prices[j], self.points[j], self.orders[j]


class LevelBreakout(ChartPattern):
    params = LEVEL_PARAMS

    def __init__(self) -> None:
        super().__init__("LEVEL_BREAKOUT", "Breakout of a support or resistance level (clustered swing points)")

    def event(self, levels: Levels, j: int, index: int, close: float, excess: float, atr: float) -> PatternEvent:
        touched = levels.points[j]
        touches, last = len(touched), touched[-1]
        confidence = touches / (touches + 1) * min(1.0, excess / (2 * atr))
        return chart_event(self.name, index, BULLISH if last.high else BEARISH, confidence,
                           key_points(touched, index, close), level=round(levels.prices[j], 6), touches=touches,
                           broke="resistance" if last.high else "support")

    def update(self, state: ChartState, index: int, bar: Mapping[str, float],
               swing: Swing | None) -> list[PatternEvent]:
        p = state.params
        if state.levels is None:
            state.levels = Levels(int(p["max_levels"]))
        levels: Levels = state.levels
        if swing is not None:
            levels.add(swing, p["tolerance_atr"] * swing.atr)
        atr, close = state.zigzag.last_atr, bar["close"]
        if atr != atr or close != close:
            return []
        events, broken = [], []
        for j, (price, touched) in enumerate(zip(levels.prices, levels.points, strict=True)):
            if len(touched) < p["min_touches"]:
                continue
            excess = (close - price) if touched[-1].high else (price - close)
            if index > touched[-1].index and excess >= p["breakout_atr"] * atr:
                events.append(self.event(levels, j, index, close, excess, atr))
                broken.append(j)
        for j in reversed(broken):
            levels.remove(j)
        return events

    def scan(self, series: SwingSeries, params: Mapping[str, int | float]) -> list[PatternEvent]:
        p, close, seen = params, series.close, series.seen
        levels = Levels(int(p["max_levels"]))
        min_touches = int(p["min_touches"])
        found: list[tuple[int, int, PatternEvent]] = []
        ends = series.bars()[1:]
        starts = np.array([bar for bar, _ in series.swings], dtype=np.intp)
        if len(starts):
            reach_ups = np.fmax.reduceat(np.where(np.isnan(close), -np.inf, close), starts).tolist()
            reach_downs = np.fmin.reduceat(np.where(np.isnan(close), np.inf, close), starts).tolist()
            least_atr = np.fmin.reduceat(np.where(np.isnan(seen), np.inf, seen), starts).tolist()
        for number, ((start, swing), end) in enumerate(zip(series.swings, ends, strict=True)):
            levels.add(swing, p["tolerance_atr"] * swing.atr)
            if start >= end:
                continue
            reach_up, reach_down = reach_ups[number], reach_downs[number]
            need = p["breakout_atr"] * least_atr[number]
            eligible = [j for j, (price, touched) in enumerate(zip(levels.prices, levels.points, strict=True))
                        if len(touched) >= min_touches
                        and (reach_up - price >= need if touched[-1].high else price - reach_down >= need)]
            if not eligible:
                continue
            price = np.array([levels.prices[j] for j in eligible])[:, None]
            above = np.array([levels.points[j][-1].high for j in eligible])[:, None]
            after = np.array([levels.points[j][-1].index for j in eligible])[:, None]
            window = close[start:end][None, :]
            excess = np.where(above, window - price, price - window)
            beyond = (np.arange(start, end)[None, :] > after) & (excess >= p["breakout_atr"] * seen[start:end][None, :])
            broken = []
            for row in np.flatnonzero(beyond.any(axis=1)).tolist():
                j = eligible[row]
                hit = int(beyond[row].argmax())
                at = start + hit
                found.append((at, levels.orders[j], self.event(levels, j, at, float(close[at]),
                                                              float(excess[row, hit]), float(seen[at]))))
                broken.append(j)
            for j in sorted(broken, reverse=True):
                levels.remove(j)
        found.sort(key=lambda item: (item[0], item[1]))
        return [event for _, _, event in found]
