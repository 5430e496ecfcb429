"""The two walks of batch chart detection that are sequential by nature, compiled with numba: the zigzag
(one step per bar: `zigzag_walk`) and the support and resistance levels (one step per swing: `level_walk`).
Each is the live rule written as a plain loop over arrays (`Zigzag.update`, `levels.Levels`), so it reads as
the rule it computes; numba turns it into machine code (no fast-math: the same IEEE operations in the same
order, so the same bits), many times faster than the numpy formulations that stand in for it without numba
(docs/PATTERNS.md has the measurements). `jit.walks` imports this module on first use, and uses it only
where numba is installed (`COMPILED`); the compiled code is cached beside it (``cache=True``), so an
installation compiles once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

try:
    import numba
except ImportError:  # the module still imports (and its functions run, slowly, as plain Python)
    numba = None

COMPILED = numba is not None
jit: Callable[[Any], Any] = numba.njit(cache=True, nogil=True) if numba is not None else (lambda fn: fn)


@jit
def zigzag_walk(high: np.ndarray, low: np.ndarray, seen: np.ndarray,
                swing_atr: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`Zigzag.update` over whole arrays (`seen`: each bar's last known ATR): the confirming bar, the bar of the
    extreme and peak or not, of every swing."""
    n = len(high)
    at, index, peak = np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n, np.bool_)
    count = 0
    direction, extreme, extreme_index, low0, low0_index = 0, np.nan, -1, np.nan, -1
    for i in range(n):
        h, lo, last = high[i], low[i], seen[i]
        if h != h or lo != lo or not last > 0:
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
                at[count], index[count], peak[count] = i, extreme_index, True
                count += 1
                direction, extreme, extreme_index = -1, lo, i
        elif lo < extreme:
            extreme, extreme_index = lo, i
        elif h - extreme >= threshold:
            at[count], index[count], peak[count] = i, extreme_index, False
            count += 1
            direction, extreme, extreme_index = 1, h, i
    return at[:count], index[:count], peak[:count]


@jit
def level_walk(price: np.ndarray, peak: np.ndarray, tolerance: np.ndarray, at: np.ndarray, up_key: np.ndarray,
               down_key: np.ndarray, keep: int, min_touches: int) -> tuple[np.ndarray, ...]:
    """`levels.Levels` over the swings in order (their `price`, `peak`, each joining within `tolerance`), each
    followed by the breakouts of its stretch of bars (from its confirmation, `at`, to the next): a level
    touched `min_touches` times breaks at the first bar whose key passes it (`levels.breakout_keys`: a
    resistance at or below ``up_key``, a support at or above ``down_key``). A level is numbered by the swing
    that started it. Returns the levels broken, in the order they broke (oldest first on one bar), the bar
    that broke each, their swings one level after another with where each level's start, and every level's
    final mean price and last side."""
    m, n = len(price), len(up_key)
    mean, side, touches = np.zeros(m), np.zeros(m, np.bool_), np.zeros(m, np.int64)
    first, last, following = np.full(m, -1), np.full(m, -1), np.full(m, -1)  # each level's swings, linked in order
    alive = np.empty(m, np.int64)  # the levels kept, oldest first
    count = 0
    broken, bars = np.empty(m, np.int64), np.empty(m, np.int64)
    members, starts = np.empty(m, np.int64), np.zeros(m + 1, np.int64)
    breaks = 0
    values = np.empty(m)
    for k in range(m):
        x = price[k]
        best, nearest = -1, tolerance[k]
        for j in range(count):  # Levels.add: the first of the nearest within the tolerance
            gap = abs(mean[alive[j]] - x)
            if gap <= nearest and (best < 0 or gap < nearest):
                best, nearest = j, gap
        if best >= 0:
            level = alive[best]
            following[last[level]] = k
            last[level] = k
            touches[level] += 1
            size, s = 0, first[level]
            while s >= 0:
                values[size] = price[s]
                size += 1
                s = following[s]
            mean[level] = fsum(values[:size]) / size
        else:
            level = k
            first[level], last[level], touches[level], mean[level] = k, k, 1, x
            alive[count] = level
            count += 1
            if count > keep:  # the oldest go first
                alive[:count - 1] = alive[1:count]
                count -= 1
        side[level] = peak[k]
        start, end = at[k], at[k + 1] if k + 1 < m else n
        up, down = up_key[start:end].max(), down_key[start:end].min()
        kept = 0
        for j in range(count):  # the breakouts of the stretch, oldest first
            level = alive[j]
            resists = side[level]
            if touches[level] < min_touches or not (mean[level] <= up if resists else mean[level] >= down):
                alive[kept] = level
                kept += 1
                continue
            bar = start
            while not (up_key[bar] >= mean[level] if resists else down_key[bar] <= mean[level]):
                bar += 1
            broken[breaks], bars[breaks] = level, bar
            s, size = first[level], starts[breaks]
            while s >= 0:
                members[size] = s
                size += 1
                s = following[s]
            breaks += 1
            starts[breaks] = size
        count = kept
    return broken[:breaks], bars[:breaks], members[:starts[breaks]], starts[:breaks + 1], mean, side


@jit
def fsum(values: np.ndarray) -> float:
    """``math.fsum`` of finite floats, as CPython computes it (Shewchuk's exact partial sums, then a correctly
    rounded total, half to even across partials), for numba, which has no ``math.fsum``."""
    partials = np.empty(len(values) + 1)
    n = 0
    for value in values:
        x = value
        i = 0
        for j in range(n):
            y = partials[j]
            if abs(x) < abs(y):
                x, y = y, x
            hi = x + y
            lo = y - (hi - x)
            if lo != 0.0:
                partials[i] = lo
                i += 1
            x = hi
        n = i
        if x != 0.0:
            partials[n] = x
            n += 1
    hi = 0.0
    if n > 0:
        n -= 1
        hi = partials[n]
        lo = 0.0
        while n > 0:
            x = hi
            n -= 1
            y = partials[n]
            hi = x + y
            lo = y - (hi - x)
            if lo != 0.0:
                break
        if n > 0 and ((lo < 0.0 and partials[n - 1] < 0.0) or (lo > 0.0 and partials[n - 1] > 0.0)):
            y = lo * 2.0
            x = hi + y
            if y == x - hi:
                hi = x
    return hi
