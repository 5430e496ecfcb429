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
confirmed, so the levels are kept sorted by price (`LevelBook`: a swing finds its nearest level by
bisection), each stretch between two confirmations is bounded at once for all stretches (its highest close
less the breakout distance, its lowest plus), and only the levels within those bounds, a prefix of the
resistances and a suffix of the supports, are searched bar by bar.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ml_processing.sdk.indicator import Param
from ml_processing.sdk.pattern import BEARISH, BULLISH, PatternEvent

from .base import PARAMS, ChartPattern, ChartState, Found, Points, chart_event, key_points
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

    def scan(self, series: SwingSeries, params: Mapping[str, int | float]) -> Found:
        """The levels swing by swing (`LevelBook`); in each stretch until the next swing, only the levels its
        closes can break (found from the stretch's extreme closes), searched bar by bar."""
        w, p, close = series.swings, params, series.close
        if not len(w):
            return Found.none()
        need = p["breakout_atr"] * series.seen
        with np.errstate(invalid="ignore"):
            finite = np.isfinite(close) & np.isfinite(need)
            slack = 1e-9 * (float(np.abs(close[finite]).max(initial=0.0)) + float(need[finite].max(initial=0.0)))
            reach_up = (np.maximum.reduceat(np.where(finite, close - need, -np.inf), w.at) + slack).tolist()
            reach_down = (np.minimum.reduceat(np.where(finite, close + need, np.inf), w.at) - slack).tolist()
        book = LevelBook(int(p["max_levels"]), int(p["min_touches"]))
        resistances, supports = book.ready[True].prices, book.ready[False].prices
        ends = [*w.at.tolist()[1:], len(close)]
        rows = zip(w.at.tolist(), ends, w.index.tolist(), w.price.tolist(), w.peak.tolist(),
                   (p["tolerance_atr"] * w.atr).tolist(), reach_up, reach_down, strict=True)
        at: list[int] = []
        bullish: list[bool] = []
        confidence: list[float] = []
        points: list[Points] = []
        details: list[dict[str, Any]] = []
        for start, end, index, price, peak, tolerance, up, down in rows:
            book.add(index, price, peak, tolerance)
            if not (resistances and resistances[0] <= up) and not (supports and supports[-1] >= down):
                continue  # no level within reach of this stretch's closes
            closes, needs, atrs = close[start:end].tolist(), need[start:end].tolist(), series.seen[start:end].tolist()
            broken = []
            for order in book.breakable(up, down):
                level = book.levels[order]
                for offset, (c, limit) in enumerate(zip(closes, needs, strict=True)):
                    excess = (c - level.price) if level.peak else (level.price - c)
                    if start + offset > level.last and excess >= limit:
                        broken.append((start + offset, order, c, excess, atrs[offset]))
                        break
            for bar, order, c, excess, atr in sorted(broken):
                level = book.levels[order]
                touches = len(level.points)
                at.append(bar)
                bullish.append(level.peak)
                confidence.append(touches / (touches + 1) * min(1.0, excess / (2 * atr)))
                points.append([*level.points, (bar, c)])
                details.append({"level": round(level.price, 6), "touches": touches,
                                "broke": "resistance" if level.peak else "support"})
                book.drop(order)
        return Found.of(np.array(at, dtype=np.int64), np.array(bullish, dtype=bool), np.array(confidence), points,
                        details)


@dataclass(slots=True)
class _Level:
    price: float  # the mean of its points' prices
    prices: list[float]
    points: Points
    peak: bool  # last touched by a peak (a resistance) or a trough (a support)
    last: int  # the bar of its last touch


class LevelBook:
    """`Levels` for batch detection, kept so that a swing costs O(log levels) rather than a pass over them:
    each level by its order (when it was started: oldest first); every level's price in ascending order (a
    swing's nearest level is beside where its price would go), with its order alongside; and the same for
    the levels touched `min_touches` times, resistances and supports apart (those a stretch of closes can
    break are a prefix of the one and a suffix of the other).

    >>> book = LevelBook(keep=50, min_touches=2)
    >>> book.add(10, 100.0, True, 0.75); book.add(20, 100.5, True, 0.75); book.add(30, 97.0, False, 0.75)
    >>> [(level.price, len(level.points)) for level in book.levels.values()], book.breakable(100.3, 90.0)
    ([(100.25, 2), (97.0, 1)], [0])
    """

    def __init__(self, keep: int, min_touches: int) -> None:
        self.keep, self.min_touches = keep, min_touches
        self.levels: dict[int, _Level] = {}
        self.sorted = _Sorted()
        self.ready = {True: _Sorted(), False: _Sorted()}
        self.added = 0

    def add(self, index: int, price: float, peak: bool, tolerance: float) -> None:
        """`Levels.add`: the swing joins the nearest level within `tolerance` (the oldest of equally near
        ones), or starts a level; the oldest levels beyond `keep` go."""
        order = self.sorted.nearest(price, tolerance)
        if order is None:
            self.levels[self.added] = level = _Level(price, [price], [(index, price)], peak, index)
            self.sorted.insert(price, self.added)
            if len(self.levels) > self.keep:
                self.drop(next(iter(self.levels)))
        else:
            level = self.levels[order]
            self._unlist(order, level)
            level.prices.append(price)
            level.points.append((index, price))
            level.price = math.fsum(level.prices) / len(level.prices)
            level.peak, level.last = peak, index
            self.sorted.insert(level.price, order)
            if len(level.prices) >= self.min_touches:
                self.ready[peak].insert(level.price, order)
        self.added += 1

    def breakable(self, up: float, down: float) -> list[int]:
        """The levels touched often enough that closes reaching `up` (resistances at or below it) or `down`
        (supports at or above it) may break, oldest first."""
        resistances, supports = self.ready[True], self.ready[False]
        low = bisect.bisect_right(resistances.prices, up)
        high = bisect.bisect_left(supports.prices, down)
        if not low and high == len(supports.prices):
            return []
        return sorted(resistances.orders[:low] + supports.orders[high:])

    def drop(self, order: int) -> None:
        self._unlist(order, self.levels.pop(order))

    def _unlist(self, order: int, level: _Level) -> None:
        self.sorted.remove(level.price, order)
        if len(level.prices) >= self.min_touches:
            self.ready[level.peak].remove(level.price, order)


class _Sorted:
    """Prices in ascending order, with the order of the level each belongs to alongside."""

    def __init__(self) -> None:
        self.prices: list[float] = []
        self.orders: list[int] = []

    def insert(self, price: float, order: int) -> None:
        at = bisect.bisect_right(self.prices, price)
        self.prices.insert(at, price)
        self.orders.insert(at, order)

    def remove(self, price: float, order: int) -> None:
        at = bisect.bisect_left(self.prices, price)
        while self.orders[at] != order:  # equal prices: find this level's
            at += 1
        del self.prices[at], self.orders[at]

    def nearest(self, price: float, tolerance: float) -> int | None:
        """The level nearest to `price` within `tolerance` (``abs(level - price)`` as `Levels.add` computes
        it; the oldest of equally near ones), or None. The gaps only grow away from where `price` would go,
        so the nearest are its neighbours there, and any equally near ones beside them."""
        prices, orders = self.prices, self.orders
        right = bisect.bisect_left(prices, price)  # prices[:right] are below `price`
        below = price - prices[right - 1] if right else math.inf  # == abs(prices[right - 1] - price)
        above = prices[right] - price if right < len(prices) else math.inf
        gap = below if below < above else above
        if not gap <= tolerance:
            return None
        low, high = right, right
        while low > 0 and price - prices[low - 1] == gap:
            low -= 1
        while high < len(prices) and prices[high] - price == gap:
            high += 1
        return min(orders[low:high])
