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
bisection) and each stretch between two confirmations is summed up, for all stretches at once, by the
highest level its closes break upwards and the lowest they break downwards (exactly: `breakout_keys`): the
levels it breaks are a prefix of the resistances and a suffix of the supports, and the bars of all their
breakouts are found together at the end. A level's last touch always comes before the stretch it is checked
in (a swing is confirmed after its extreme), so that condition of the live rule holds by construction.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import ModuleType

import numpy as np

from ml_processing.sdk.indicator import Param
from ml_processing.sdk.pattern import BEARISH, BULLISH, PatternEvent

from . import jit
from .base import (
    PARAMS,
    ChartPattern,
    ChartState,
    Found,
    Points,
    at_most_one,
    chart_event,
    key_points,
    rounded,
)
from .search import confirm_key, first_in_stretches
from .zigzag import Swing, Swings, SwingSeries

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
        if not atr > 0 or close != close:  # no ATR yet, or none at all
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
        """The levels swing by swing (the compiled walk, `compiled.level_walk`, or else `LevelBook`); after each
        swing, the levels the closes of its stretch break, found exactly from the stretch's bounds
        (`breakout_keys`), and the bar that breaks each."""
        w, p = series.swings, params
        if not len(w):
            return Found.none()
        with np.errstate(invalid="ignore"):  # no breakout while the ATR is unknown or zero, as live
            need = np.where(series.seen > 0, p["breakout_atr"] * series.seen, np.nan)
        up_key, down_key = breakout_keys(series.close, need)
        tolerance, keep, min_touches = p["tolerance_atr"] * w.atr, int(p["max_levels"]), int(p["min_touches"])
        compiled = jit.walks()
        if compiled is not None:
            broken = _walked(compiled, w, tolerance, up_key, down_key, keep, min_touches)
        else:
            broken = _booked(series, tolerance, up_key, down_key, keep, min_touches)
        return self._breakouts(series, broken) if broken.points else Found.none()

    def _breakouts(self, series: SwingSeries, broken: Broken) -> Found:
        """The events of the broken levels, by bar (levels broken on the same bar oldest first)."""
        at, price, peak = broken.bar, broken.price, broken.peak
        touches = np.array([len(points) for points in broken.points])
        close = series.close[at]
        excess = np.where(peak, close - price, price - close)
        confidence = touches / (touches + 1) * at_most_one(excess / (2 * series.seen[at]))
        sequence = np.lexsort((broken.order, at))
        points = [(*broken.points[j], (bar, c)) for j, bar, c in zip(sequence.tolist(), at[sequence].tolist(),
                                                                     close[sequence].tolist(), strict=True)]
        details = [{"level": level, "touches": touched, "broke": "resistance" if resists else "support"}
                   for level, touched, resists in zip(rounded(price[sequence], 6).tolist(), touches[sequence].tolist(),
                                                      peak[sequence].tolist(), strict=True)]
        return Found.of(at[sequence], peak[sequence], confidence[sequence], points, details)


@dataclass
class Broken:
    """The levels broken over a series: each one's order (the swing that started it), price, side (last touched
    by a peak), points, and the bar that broke it."""

    order: np.ndarray
    price: np.ndarray
    peak: np.ndarray
    points: list[Points]
    bar: np.ndarray


def _walked(compiled: ModuleType, w: Swings, tolerance: np.ndarray, up_key: np.ndarray, down_key: np.ndarray,
            keep: int, min_touches: int) -> Broken:
    """The broken levels from the compiled walk (levels numbered by the swing that started them)."""
    order, bar, members, starts, mean, side = compiled.level_walk(w.price, w.peak, tolerance, w.at, up_key,
                                                                  down_key, keep, min_touches)
    pairs, members, bounds = w.pairs, members.tolist(), starts.tolist()
    points = [[pairs[k] for k in members[low:high]] for low, high in itertools.pairwise(bounds)]
    return Broken(order, mean[order], side[order], points, bar)


def _booked(series: SwingSeries, tolerance: np.ndarray, up_key: np.ndarray, down_key: np.ndarray, keep: int,
            min_touches: int) -> Broken:
    """The broken levels from `LevelBook`, swing by swing in Python (without numba); then the bars of all
    their breakouts at once (every bar of their stretches, once per level broken in it)."""
    w = series.swings
    book = LevelBook(keep, min_touches)
    found: list[tuple[int, int, _Level]] = []  # (swing, order, level)
    rows = zip(w.pairs, w.peak.tolist(), tolerance.tolist(), np.maximum.reduceat(up_key, w.at).tolist(),
               np.minimum.reduceat(down_key, w.at).tolist(), strict=True)
    for k, ((index, price), peak, near, high, low) in enumerate(rows):
        book.add(index, price, peak, near)
        for order in book.breaking(high, low):
            found.append((k, order, book.levels[order]))
            book.drop(order)
    swing = np.array([k for k, _, _ in found], dtype=np.intp)
    prices = np.array([level.price for _, _, level in found])
    peaks = np.array([level.peak for _, _, level in found], dtype=bool)
    starts = w.at[swing]
    lengths = np.append(w.at, len(series))[swing + 1] - starts
    row = np.repeat(np.arange(len(found)), lengths)  # each level's stretch, bar by bar, one after another
    bars = starts[row] + np.arange(len(row)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    beyond = np.where(peaks[row], up_key[bars] >= prices[row], down_key[bars] <= prices[row])
    first = first_in_stretches(beyond, row, len(found))
    assert (first >= 0).all(), "a level broken in a stretch has a bar that breaks it"
    return Broken(np.array([o for _, o, _ in found], dtype=np.intp), prices, peaks,
                  [level.points for _, _, level in found], bars[first])


def breakout_keys(close: np.ndarray, need: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each bar: the highest level its close breaks upwards (``close - level >= need``, in float
    arithmetic) and the lowest it breaks downwards (``level - close >= need``), from `search.confirm_key`:
    a level breaks at a bar exactly when it is at most the first or at least the second, so the levels a
    stretch breaks follow from the stretch's highest first key and lowest second key (-inf and +inf where
    the close or the ATR is unknown)."""
    up = -confirm_key(-close, need)
    down = confirm_key(close, need)
    return up, down


@dataclass(slots=True)
class _Level:
    price: float  # the mean of its points' prices
    prices: list[float]
    points: Points
    peak: bool  # last touched by a peak (a resistance) or a trough (a support)


class LevelBook:
    """`Levels` for batch detection, kept so that a swing costs O(log levels) rather than a pass over them:
    each level by its order (when it was started: oldest first); every level's price in ascending order (a
    swing's nearest level is beside where its price would go), with its order alongside; and the same for
    the levels touched `min_touches` times, resistances and supports apart (those a stretch breaks are a
    prefix of the one and a suffix of the other).

    >>> book = LevelBook(keep=50, min_touches=2)
    >>> book.add(10, 100.0, True, 0.75); book.add(20, 100.5, True, 0.75); book.add(30, 97.0, False, 0.75)
    >>> [(level.price, len(level.points)) for level in book.levels.values()], book.breaking(100.3, 90.0)
    ([(100.25, 2), (97.0, 1)], [0])
    """

    def __init__(self, keep: int, min_touches: int) -> None:
        self.keep, self.min_touches = keep, min_touches
        self.levels: dict[int, _Level] = {}
        self.prices: list[float] = []  # every level's, ascending
        self.orders: list[int] = []
        self.ready: dict[bool, tuple[list[float], list[int]]] = {True: ([], []), False: ([], [])}
        self.added = 0

    def add(self, index: int, price: float, peak: bool, tolerance: float) -> None:
        """`Levels.add`: the swing joins the nearest level within `tolerance` (``abs(level - price)`` as
        `Levels.add` computes it; the oldest of equally near ones), or starts a level; the oldest levels
        beyond `keep` go. The gaps only grow away from where `price` would go among the sorted prices, so
        the nearest are its neighbours there and any equally near ones beside them."""
        prices = self.prices
        right = bisect.bisect_left(prices, price)  # prices[:right] are below `price`
        below = price - prices[right - 1] if right else math.inf  # == abs(prices[right - 1] - price)
        above = prices[right] - price if right < len(prices) else math.inf
        gap = below if below < above else above
        if gap <= tolerance:
            low, high = right, right
            while low > 0 and price - prices[low - 1] == gap:
                low -= 1
            while high < len(prices) and prices[high] - price == gap:
                high += 1
            order = min(self.orders[low:high])
            level = self.levels[order]
            self._unlist(order, level)
            level.prices.append(price)
            level.points.append((index, price))
            level.price = math.fsum(level.prices) / len(level.prices)
            level.peak = peak
        else:
            order = self.added
            self.levels[order] = level = _Level(price, [price], [(index, price)], peak)
        self._list(order, level)
        if len(self.levels) > self.keep:
            self.drop(next(iter(self.levels)))
        self.added += 1

    def breaking(self, up: float, down: float) -> list[int]:
        """The levels touched often enough that a close broke: resistances at or below `up`, supports at or
        above `down` (`breakout_keys`), oldest first."""
        resistances, supports = self.ready[True], self.ready[False]
        low = bisect.bisect_right(resistances[0], up)
        high = bisect.bisect_left(supports[0], down)
        if not low and high == len(supports[0]):
            return []
        return sorted(resistances[1][:low] + supports[1][high:])

    def drop(self, order: int) -> None:
        self._unlist(order, self.levels.pop(order))

    def _list(self, order: int, level: _Level) -> None:
        at = bisect.bisect_right(self.prices, level.price)
        self.prices.insert(at, level.price)
        self.orders.insert(at, order)
        if len(level.prices) >= self.min_touches:
            prices, orders = self.ready[level.peak]
            at = bisect.bisect_right(prices, level.price)
            prices.insert(at, level.price)
            orders.insert(at, order)

    def _unlist(self, order: int, level: _Level) -> None:
        _remove(self.prices, self.orders, level.price, order)
        if len(level.prices) >= self.min_touches:
            _remove(*self.ready[level.peak], level.price, order)


def _remove(prices: list[float], orders: list[int], price: float, order: int) -> None:
    at = bisect.bisect_left(prices, price)
    while orders[at] != order:  # equal prices: find this level's
        at += 1
    del prices[at], orders[at]
