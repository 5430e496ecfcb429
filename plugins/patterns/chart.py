"""Chart patterns: swing points, support/resistance breakouts, double tops and bottoms, head and shoulders.

Every detector runs one state machine over the bars, in order, and reports a pattern only at the bar that
confirms it; nothing is ever withdrawn. Batch detection is that same machine run over the series, so live
and batch report the same events by construction, and no event repaints.

**Swing points** (zigzag). The threshold is ``swing_atr`` x ATR(``atr_period``) (TA-Lib's ATR, streamed).
While the market rises, the highest high since the last trough is the candidate peak; once a low falls
``threshold`` below it, the peak is confirmed (at that bar) and the machine looks for a trough the same way.

**Double top** (bottom mirrored). Peaks P1 and P2 around a trough T: P2 within ``tolerance_atr`` x ATR of
P1, T at least ``depth_atr`` x ATR below the lower peak, confirmed when a close falls below T. Confidence:
the mean of the peaks' similarity (1 - |P1 - P2| / tolerance), the trough's depth (depth / (3 x ATR),
capped at 1) and the time symmetry (shorter leg / longer leg).

**Head and shoulders** (inverse mirrored). Peaks S1, H, S2 with troughs N1, N2 between them: H above both
shoulders by at least ``depth_atr`` x ATR, the shoulders within ``tolerance_atr`` x ATR of each other;
confirmed when a close falls below the neckline (the line through N1 and N2) at that bar. Confidence: the
mean of the shoulders' similarity, the head's prominence (capped at 1 for 3 x ATR) and the neckline's
flatness (1 - |slope| x span / ATR, floored at 0).

**Breakouts of support and resistance.** Confirmed swing points within ``tolerance_atr`` x ATR of each
other form a level (its price the mean, its touches the count); a level touched at least ``min_touches``
times is broken when a close ends beyond it by ``breakout_atr`` x ATR: above a level the market came from
below (resistance): bullish; below one it came from above (support): bearish. A broken level is retired.
Confidence: touches / (touches + 1) x the breakout's strength (excess / (2 x ATR), capped at 1).

Every event carries its key points (bar index, price) and a confidence in [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ml_processing.sdk.indicator import IndicatorStream, Param
from ml_processing.sdk.pattern import BEARISH, BULLISH, Pattern, PatternEvent, PatternStream
from ml_processing.sdk.talib_functions import TalibIndicator

PARAMS = (Param("atr_period", int, 14, minimum=2, maximum=1000, doc="ATR window"),
          Param("swing_atr", float, 2.0, minimum=0.1, maximum=50, doc="zigzag threshold, in ATRs"),
          Param("tolerance_atr", float, 0.75, minimum=0.01, maximum=20, doc="equal prices, in ATRs"),
          Param("depth_atr", float, 1.0, minimum=0.0, maximum=50, doc="minimum depth or prominence, in ATRs"))
LEVEL_PARAMS = (*PARAMS, Param("min_touches", int, 2, minimum=2, maximum=100, doc="touches that make a level"),
                Param("breakout_atr", float, 0.25, minimum=0.0, maximum=20, doc="close beyond the level, in ATRs"),
                Param("max_levels", int, 50, minimum=1, maximum=10_000, doc="levels kept (the most recent)"))


@dataclass(frozen=True)
class Swing:
    index: int
    price: float
    high: bool  # a peak (True) or a trough (False)
    atr: float  # the ATR when it was confirmed


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


class Swings(list):  # type: ignore[type-arg]
    """(confirming bar, swing) pairs of one series, with a memo for what several detectors derive from them
    (it lives as long as the request's swings: nothing is shared between requests)."""

    def __init__(self) -> None:
        super().__init__()
        self.memo: dict[Any, Any] = {}


def batch_swings(high: np.ndarray, low: np.ndarray, atr: np.ndarray,
                 swing_atr: float) -> tuple[list[tuple[int, Swing]], np.ndarray]:
    """Every (confirming bar, swing) of the zigzag over whole arrays, and the ATR each bar saw (the last
    known one): `Zigzag.update` bar by bar, in one tight loop."""
    highs, lows, atrs = high.tolist(), low.tolist(), atr.tolist()
    seen = np.empty(len(highs))
    out = Swings()
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


class Zigzags:
    """The swing points of one series, computed once per (ATR period, threshold) and shared by detectors."""

    def __init__(self, data: Mapping[str, np.ndarray]) -> None:
        self.high, self.low, self.close = (np.asarray(data[c], dtype=np.float64) for c in ("high", "low", "close"))
        self._atr: dict[int, np.ndarray] = {}
        self._swings: dict[tuple[int, float], tuple[list[tuple[int, Swing]], np.ndarray]] = {}

    def get(self, atr_period: int, swing_atr: float) -> tuple[list[tuple[int, Swing]], np.ndarray]:
        key = (atr_period, swing_atr)
        if key not in self._swings:
            if atr_period not in self._atr:
                self._atr[atr_period] = batch_atr(self.high, self.low, self.close, atr_period)
            self._swings[key] = batch_swings(self.high, self.low, self._atr[atr_period], swing_atr)
        return self._swings[key]


Detector = Callable[["ChartState", int, Mapping[str, float], "Swing | None"], list[PatternEvent]]


@dataclass
class ChartState:
    """A zigzag plus what a detector remembers between bars."""

    name: str
    params: Mapping[str, int | float]
    zigzag: Zigzag
    pending: list[dict[str, Any]] = field(default_factory=list)  # formed patterns awaiting confirmation
    levels: list[dict[str, Any]] = field(default_factory=list)


class ChartStream(PatternStream):
    def __init__(self, name: str, params: Mapping[str, int | float], detector: Detector) -> None:
        atr = TalibIndicator("ATR").stream({"timeperiod": int(params["atr_period"])})
        self.state = ChartState(name, params, Zigzag(float(params["swing_atr"]), atr))
        self.detector = detector
        self.index = -1

    def update(self, bar: Mapping[str, float]) -> list[PatternEvent]:
        self.index += 1
        swing = self.state.zigzag.update(self.index, bar)
        events = self.detector(self.state, self.index, bar, swing)
        ts = bar.get("ts")
        if ts is not None and events:
            events = [PatternEvent(e.pattern, e.kind, e.index, e.direction, e.strength, int(ts), e.points, e.details)
                      for e in events]
        return events


class ChartPattern(Pattern):
    """A chart pattern: its detector run over the bars (batch is the stream run over the series)."""

    kind = "chart"
    inputs = ("high", "low", "close")

    def __init__(self, name: str, doc: str, detector: Detector, batch: BatchDetector,
                 params: tuple[Param, ...] = PARAMS) -> None:
        self.name = name  # type: ignore[misc]
        self.doc = doc  # type: ignore[misc]
        self.detector = detector
        self.batch = batch
        self.params = params  # type: ignore[misc]

    def stream(self, params: Mapping[str, int | float]) -> PatternStream:
        return ChartStream(self.name, params, self.detector)

    def detect(self, data: Mapping[str, np.ndarray], params: Mapping[str, int | float],
               ts: np.ndarray | None = None) -> list[PatternEvent]:
        """The stream's events over the series, computed over whole arrays: one zigzag pass, then each
        formed pattern's confirmation searched with numpy (the contract test proves them equal)."""
        return self.detect_with(Zigzags(data), params, ts)

    def detect_with(self, zigzags: Zigzags, params: Mapping[str, int | float],
                    ts: np.ndarray | None = None) -> list[PatternEvent]:
        """`detect`, reusing the swings other chart patterns of the same request already found."""
        swings, seen = zigzags.get(int(params["atr_period"]), float(params["swing_atr"]))
        events = self.batch(self.name, params, zigzags.high, zigzags.low, zigzags.close, swings, seen)
        if ts is None:
            return events
        return [PatternEvent(e.pattern, e.kind, e.index, e.direction, e.strength, int(ts[e.index]), e.points,
                             e.details) for e in events]


BatchDetector = Callable[[str, Mapping[str, int | float], np.ndarray, np.ndarray, np.ndarray, list[tuple[int, Swing]],
                          np.ndarray], list[PatternEvent]]


def _first(mask: np.ndarray) -> int | None:
    return int(mask.argmax()) if mask.any() else None


def _confirmed(start: int, end: int, confirm: np.ndarray, invalid: np.ndarray) -> int | None:
    """The bar in [start, end) where a formed pattern is confirmed: the first confirming bar, unless an
    invalidating bar comes strictly before it (on the same bar, confirmation wins, as in the stream)."""
    hit = _first(confirm)
    if hit is None:
        return None
    miss = _first(invalid)
    return start + hit if miss is None or hit <= miss else None


def _event(state: ChartState | str, index: int, direction: str, confidence: float, points: list[tuple[int, float]],
           **details: Any) -> PatternEvent:
    name = state if isinstance(state, str) else state.name
    return PatternEvent(name, "chart", index, direction, round(max(0.0, min(1.0, float(confidence))), 4),
                        None, tuple((int(i), float(p)) for i, p in points), details)


def swings(state: ChartState, index: int, bar: Mapping[str, float], swing: Swing | None) -> list[PatternEvent]:
    """Every confirmed swing point, as an event at the bar that confirms it (its point is the extreme)."""
    if swing is None:
        return []
    return [_event(state, index, BEARISH if swing.high else BULLISH, 1.0, [(swing.index, swing.price)],
                   swing="peak" if swing.high else "trough")]


def double(top: bool) -> Detector:
    def detect(state: ChartState, index: int, bar: Mapping[str, float], swing: Swing | None) -> list[PatternEvent]:
        p = state.params
        s = state.zigzag.swings
        if swing is not None and len(s) >= 3 and s[-1].high == top and s[-3].high == top:
            first, middle, second = s[-3], s[-2], s[-1]
            atr = second.atr
            gap = abs(first.price - second.price)
            depth = (min(first.price, second.price) - middle.price) if top else (middle.price - max(first.price,
                                                                                                     second.price))
            if gap <= p["tolerance_atr"] * atr and depth >= p["depth_atr"] * atr:
                legs = sorted([middle.index - first.index, second.index - middle.index])
                confidence = np.mean([1 - gap / (p["tolerance_atr"] * atr), min(1.0, depth / (3 * atr)),
                                      legs[0] / max(1, legs[1])])
                state.pending = [{"points": [first, middle, second], "neck": middle.price,
                                  "confidence": float(confidence)}]
        events = []
        close = bar["close"]
        for formed in list(state.pending):
            if (close < formed["neck"]) if top else (close > formed["neck"]):
                state.pending.remove(formed)
                events.append(_event(state, index, BEARISH if top else BULLISH, formed["confidence"],
                                     [(w.index, w.price) for w in formed["points"]] + [(index, close)],
                                     neckline=formed["neck"]))
            elif (bar["high"] > max(w.price for w in formed["points"])) if top else \
                    (bar["low"] < min(w.price for w in formed["points"])):
                state.pending.remove(formed)  # a new extreme beyond both: not this pattern
        return events
    return detect


def head_shoulders(inverse: bool) -> Detector:
    def detect(state: ChartState, index: int, bar: Mapping[str, float], swing: Swing | None) -> list[PatternEvent]:
        p = state.params
        s = state.zigzag.swings
        peak = not inverse
        if swing is not None and len(s) >= 5 and s[-1].high == peak:
            s1, n1, head, n2, s2 = s[-5:]
            atr = s2.atr
            prominence = (head.price - max(s1.price, s2.price)) if peak else (min(s1.price, s2.price) - head.price)
            shoulders = abs(s1.price - s2.price)
            if prominence >= p["depth_atr"] * atr and shoulders <= p["tolerance_atr"] * atr:
                slope = (n2.price - n1.price) / max(1, n2.index - n1.index)
                confidence = np.mean([1 - shoulders / (p["tolerance_atr"] * atr), min(1.0, prominence / (3 * atr)),
                                      max(0.0, 1 - abs(slope) * (n2.index - n1.index) / atr)])
                state.pending = [{"points": [s1, n1, head, n2, s2], "slope": slope, "n2": n2,
                                  "confidence": float(confidence)}]
        events = []
        close = bar["close"]
        for formed in list(state.pending):
            n2 = formed["n2"]
            neck = n2.price + formed["slope"] * (index - n2.index)
            if (close < neck) if peak else (close > neck):
                state.pending.remove(formed)
                events.append(_event(state, index, BEARISH if peak else BULLISH, formed["confidence"],
                                     [(w.index, w.price) for w in formed["points"]] + [(index, close)],
                                     neckline_at_break=round(neck, 6)))
            elif (bar["high"] > formed["points"][2].price) if peak else (bar["low"] < formed["points"][2].price):
                state.pending.remove(formed)  # beyond the head: not this pattern
        return events
    return detect


def breakouts(state: ChartState, index: int, bar: Mapping[str, float], swing: Swing | None) -> list[PatternEvent]:
    p = state.params
    if swing is not None:
        tolerance = p["tolerance_atr"] * swing.atr
        near = [level for level in state.levels if abs(level["price"] - swing.price) <= tolerance]
        if near:
            level = min(near, key=lambda lv: abs(lv["price"] - swing.price))
            level["points"].append(swing)
            level["price"] = math.fsum(w.price for w in level["points"]) / len(level["points"])
        else:
            state.levels.append({"price": swing.price, "points": [swing]})
            del state.levels[:-int(p["max_levels"])]  # the oldest levels go first
    atr = state.zigzag.last_atr
    close = bar["close"]
    events = []
    if atr != atr or close != close:
        return events
    for level in list(state.levels):
        touches = len(level["points"])
        if touches < p["min_touches"]:
            continue
        last = level["points"][-1]
        excess = (close - level["price"]) if last.high else (level["price"] - close)
        if index > last.index and excess >= p["breakout_atr"] * atr:
            state.levels.remove(level)
            confidence = touches / (touches + 1) * min(1.0, excess / (2 * atr))
            events.append(_event(state, index, BULLISH if last.high else BEARISH, confidence,
                                 [(w.index, w.price) for w in level["points"]] + [(index, close)],
                                 level=round(level["price"], 6), touches=touches,
                                 broke="resistance" if last.high else "support"))
    return events


# -- the same detectors over whole arrays ----------------------------------------------------------------


def swings_batch(name: str, params: Mapping[str, int | float], high: np.ndarray, low: np.ndarray, close: np.ndarray,
                 swings: list[tuple[int, Swing]], seen: np.ndarray) -> list[PatternEvent]:
    return [_event(name, i, BEARISH if w.high else BULLISH, 1.0, [(w.index, w.price)],
                   swing="peak" if w.high else "trough") for i, w in swings]


def _formations(swings: list[tuple[int, Swing]], size: int, form: Callable[[list[Swing]], dict[str, Any] | None]
                ) -> list[tuple[int, dict[str, Any]]]:
    """(bar, formation) for every swing confirmation that forms the pattern on the last `size` swings."""
    out = []
    points = [w for _, w in swings]
    for k in range(size - 1, len(swings)):
        formed = form(points[k - size + 1:k + 1])
        if formed is not None:
            out.append((swings[k][0], formed))
    return out


def _windows(formations: list[tuple[int, dict[str, Any]]], n: int) -> list[tuple[int, int, dict[str, Any]]]:
    """A formation waits for its confirmation until the next one replaces it."""
    ends = [bar for bar, _ in formations[1:]] + [n]
    return [(bar, end, formed) for (bar, formed), end in zip(formations, ends, strict=False)]


def double_batch(top: bool) -> BatchDetector:
    def detect(name: str, p: Mapping[str, int | float], high: np.ndarray, low: np.ndarray, close: np.ndarray,
               swings: list[tuple[int, Swing]], seen: np.ndarray) -> list[PatternEvent]:
        def form(last: list[Swing]) -> dict[str, Any] | None:
            first, middle, second = last
            if first.high != top or second.high != top:
                return None
            atr = second.atr
            gap = abs(first.price - second.price)
            depth = (min(first.price, second.price) - middle.price) if top else (middle.price - max(first.price,
                                                                                                     second.price))
            if gap > p["tolerance_atr"] * atr or depth < p["depth_atr"] * atr:
                return None
            legs = sorted([middle.index - first.index, second.index - middle.index])
            confidence = np.mean([1 - gap / (p["tolerance_atr"] * atr), min(1.0, depth / (3 * atr)),
                                  legs[0] / max(1, legs[1])])
            return {"points": last, "neck": middle.price, "confidence": float(confidence)}

        events = []
        for start, end, formed in _windows(_formations(swings, 3, form), len(close)):
            window = slice(start, end)
            if top:
                confirm, invalid = close[window] < formed["neck"], high[window] > max(w.price for w in formed["points"])
            else:
                confirm, invalid = close[window] > formed["neck"], low[window] < min(w.price for w in formed["points"])
            at = _confirmed(start, end, confirm, invalid)
            if at is not None:
                events.append(_event(name, at, BEARISH if top else BULLISH, formed["confidence"],
                                     [(w.index, w.price) for w in formed["points"]] + [(at, close[at])],
                                     neckline=formed["neck"]))
        return events
    return detect


def head_shoulders_batch(inverse: bool) -> BatchDetector:
    peak = not inverse

    def detect(name: str, p: Mapping[str, int | float], high: np.ndarray, low: np.ndarray, close: np.ndarray,
               swings: list[tuple[int, Swing]], seen: np.ndarray) -> list[PatternEvent]:
        def form(last: list[Swing]) -> dict[str, Any] | None:
            s1, n1, head, n2, s2 = last
            if s2.high != peak:
                return None
            atr = s2.atr
            prominence = (head.price - max(s1.price, s2.price)) if peak else (min(s1.price, s2.price) - head.price)
            shoulders = abs(s1.price - s2.price)
            if prominence < p["depth_atr"] * atr or shoulders > p["tolerance_atr"] * atr:
                return None
            slope = (n2.price - n1.price) / max(1, n2.index - n1.index)
            confidence = np.mean([1 - shoulders / (p["tolerance_atr"] * atr), min(1.0, prominence / (3 * atr)),
                                  max(0.0, 1 - abs(slope) * (n2.index - n1.index) / atr)])
            return {"points": last, "slope": slope, "n2": n2, "confidence": float(confidence)}

        events = []
        for start, end, formed in _windows(_formations(swings, 5, form), len(close)):
            bars = np.arange(start, end)
            n2 = formed["n2"]
            neck = n2.price + formed["slope"] * (bars - n2.index)
            head = formed["points"][2].price
            if peak:
                confirm, invalid = close[start:end] < neck, high[start:end] > head
            else:
                confirm, invalid = close[start:end] > neck, low[start:end] < head
            at = _confirmed(start, end, confirm, invalid)
            if at is not None:
                events.append(_event(name, at, BEARISH if peak else BULLISH, formed["confidence"],
                                     [(w.index, w.price) for w in formed["points"]] + [(at, close[at])],
                                     neckline_at_break=round(float(neck[at - start]), 6)))
        return events
    return detect


def breakouts_batch(name: str, p: Mapping[str, int | float], high: np.ndarray, low: np.ndarray, close: np.ndarray,
                    swings: list[tuple[int, Swing]], seen: np.ndarray) -> list[PatternEvent]:
    """`breakouts` over whole arrays: the level set changes only when a swing is confirmed, so each stretch
    between two confirmations is first bounded (its highest and lowest close, for all stretches at once),
    then searched for the few levels it can break (levels x bars). Levels live in parallel lists."""
    prices: list[float] = []
    points: list[list[Swing]] = []
    orders: list[int] = []
    min_touches, keep = int(p["min_touches"]), int(p["max_levels"])
    found: list[tuple[int, int, PatternEvent]] = []
    ends = [bar for bar, _ in swings[1:]] + [len(close)]
    starts = np.array([bar for bar, _ in swings], dtype=np.intp)
    if len(starts):
        reach_ups = np.fmax.reduceat(np.where(np.isnan(close), -np.inf, close), starts).tolist()
        reach_downs = np.fmin.reduceat(np.where(np.isnan(close), np.inf, close), starts).tolist()
        least_atr = np.fmin.reduceat(np.where(np.isnan(seen), np.inf, seen), starts).tolist()
    for number, ((start, swing), end) in enumerate(zip(swings, ends, strict=False)):  # ends: one longer when empty
        tolerance = p["tolerance_atr"] * swing.atr
        best, nearest = -1, tolerance
        for j, price in enumerate(prices):  # the nearest level within the tolerance (first of equals)
            gap = abs(price - swing.price)
            if gap <= nearest and (best < 0 or gap < nearest):
                best, nearest = j, gap
        if best >= 0:
            points[best].append(swing)
            prices[best] = math.fsum(w.price for w in points[best]) / len(points[best])
        else:
            prices.append(swing.price)
            points.append([swing])
            orders.append(number)
            if len(prices) > keep:  # the oldest levels go first
                del prices[:-keep], points[:-keep], orders[:-keep]
        if start >= end:
            continue
        reach_up, reach_down = reach_ups[number], reach_downs[number]
        need = p["breakout_atr"] * least_atr[number]
        eligible = [j for j, (price, touched) in enumerate(zip(prices, points, strict=True))
                    if len(touched) >= min_touches
                    and (reach_up - price >= need if touched[-1].high else price - reach_down >= need)]
        if not eligible:
            continue
        price = np.array([prices[j] for j in eligible])[:, None]
        above = np.array([points[j][-1].high for j in eligible])[:, None]
        after = np.array([points[j][-1].index for j in eligible])[:, None]
        window = close[start:end][None, :]
        excess = np.where(above, window - price, price - window)
        beyond = (np.arange(start, end)[None, :] > after) & (excess >= p["breakout_atr"] * seen[start:end][None, :])
        broken = []
        for row in np.flatnonzero(beyond.any(axis=1)).tolist():
            j = eligible[row]
            hit = int(beyond[row].argmax())
            at = start + hit
            touches, last = len(points[j]), points[j][-1]
            confidence = touches / (touches + 1) * min(1.0, excess[row, hit] / (2 * seen[at]))
            found.append((at, orders[j], _event(name, at, BULLISH if last.high else BEARISH, confidence,
                                                [(w.index, w.price) for w in points[j]] + [(at, close[at])],
                                                level=round(prices[j], 6), touches=touches,
                                                broke="resistance" if last.high else "support")))
            broken.append(j)
        for j in sorted(broken, reverse=True):
            del prices[j], points[j], orders[j]
    found.sort(key=lambda item: (item[0], item[1]))
    return [event for _, _, event in found]


# -- triangles and channels: two lines through the last two peaks and the last two troughs ---------------

SHAPES = ("TRIANGLE_ASCENDING", "TRIANGLE_DESCENDING", "TRIANGLE_SYMMETRIC", "CHANNEL")


def shape_of(last: list[Swing], p: Mapping[str, int | float]) -> dict[str, Any] | None:
    """The shape the last four swings draw (two peaks, two troughs), or None: the upper line through the
    peaks, the lower through the troughs; a line is flat when it moves less than ``tolerance_atr`` x ATR
    over the pattern, two lines parallel when their gap changes by less than that."""
    peaks = [w for w in last if w.high]
    troughs = [w for w in last if not w.high]
    if len(peaks) != 2 or len(troughs) != 2:
        return None
    atr = last[-1].atr
    span = last[-1].index - last[0].index
    if span <= 0 or atr != atr:
        return None

    def line(a: Swing, b: Swing) -> tuple[float, float]:  # (slope per bar, value at bar 0)
        slope = (b.price - a.price) / max(1, b.index - a.index)
        return slope, a.price - slope * a.index

    upper, lower = line(*peaks), line(*troughs)
    tolerance = p["tolerance_atr"] * atr
    up_move, low_move = upper[0] * span, lower[0] * span
    flat_up, flat_low = abs(up_move) <= tolerance, abs(low_move) <= tolerance
    parallel = abs(up_move - low_move) <= tolerance
    end = last[-1].index
    if upper[0] * end + upper[1] <= lower[0] * end + lower[1]:
        return None  # the lines have crossed already
    if flat_up and not flat_low and low_move > 0:
        name = "TRIANGLE_ASCENDING"
    elif flat_low and not flat_up and up_move < 0:
        name = "TRIANGLE_DESCENDING"
    elif up_move < -tolerance and low_move > tolerance:
        name = "TRIANGLE_SYMMETRIC"
    elif parallel:
        name = "CHANNEL"
    else:
        return None
    quality = 1 - abs(up_move - low_move) / (4 * tolerance) if name == "CHANNEL" else \
        min(1.0, abs(up_move - low_move) / (4 * tolerance))
    return {"shape": name, "upper": upper, "lower": lower, "points": last, "quality": max(0.0, quality),
            "atr": atr}


def _break(formed: dict[str, Any], index: int, close: float, atr: float) -> tuple[str, float] | None:
    top = formed["upper"][0] * index + formed["upper"][1]
    bottom = formed["lower"][0] * index + formed["lower"][1]
    if close > top:
        return BULLISH, (close - top) / atr
    if close < bottom:
        return BEARISH, (bottom - close) / atr
    return None


def _shape_event(name: str, formed: dict[str, Any], index: int, close: float, direction: str,
                 strength: float) -> PatternEvent:
    confidence = np.mean([formed["quality"], min(1.0, strength / 2)])
    return _event(name, index, direction, confidence,
                  [(w.index, w.price) for w in formed["points"]] + [(index, close)],
                  upper=[round(v, 6) for v in formed["upper"]], lower=[round(v, 6) for v in formed["lower"]])


def shapes(name: str) -> Detector:
    """Forms when the last four swings draw the shape; confirmed by a close beyond either line (a breakout)."""
    def detect(state: ChartState, index: int, bar: Mapping[str, float], swing: Swing | None) -> list[PatternEvent]:
        s = state.zigzag.swings
        if swing is not None and len(s) >= 4:
            formed = shape_of(s[-4:], state.params)
            state.pending = [formed] if formed is not None and formed["shape"] == name else []
        close = bar["close"]
        if not state.pending or close != close:
            return []
        formed = state.pending[0]
        broke = _break(formed, index, close, formed["atr"])
        if broke is None:
            return []
        state.pending = []
        return [_shape_event(name, formed, index, close, *broke)]
    return detect


def _shapes(swings: list[tuple[int, Swing]], p: Mapping[str, int | float]) -> list[dict[str, Any] | None]:
    """The shape at every swing (from the fourth on), computed once for the four shape patterns of a
    request (memoised on its swings)."""
    memo = swings.memo if isinstance(swings, Swings) else {}
    key = ("shapes", p["tolerance_atr"])
    if key not in memo:
        points = [w for _, w in swings]
        memo[key] = [None] * 3 + [shape_of(points[k - 3:k + 1], p) for k in range(3, len(swings))]
    shapes: list[dict[str, Any] | None] = memo[key]
    return shapes


def shapes_batch(name: str, p: Mapping[str, int | float], high: np.ndarray, low: np.ndarray, close: np.ndarray,
                 swings: list[tuple[int, Swing]], seen: np.ndarray) -> list[PatternEvent]:
    events = []
    bars = [bar for bar, _ in swings] + [len(close)]
    shapes = _shapes(swings, p)
    for k in range(3, len(swings)):
        formed = shapes[k]
        if formed is None or formed["shape"] != name:
            continue
        start, end = bars[k], bars[k + 1]
        index = np.arange(start, end)
        top = formed["upper"][0] * index + formed["upper"][1]
        bottom = formed["lower"][0] * index + formed["lower"][1]
        window = close[start:end]
        hit = _first((window > top) | (window < bottom))
        if hit is None:
            continue
        at = start + hit
        broke = _break(formed, at, float(close[at]), formed["atr"])
        assert broke is not None
        events.append(_shape_event(name, formed, at, float(close[at]), *broke))
    return events


def chart_patterns() -> list[Pattern]:
    return [
        ChartPattern("SWING_POINTS", "Swing points (zigzag with an ATR-scaled threshold)", swings, swings_batch),
        ChartPattern("DOUBLE_TOP", "Double top, confirmed by a close below the trough between the peaks",
                     double(True), double_batch(True)),
        ChartPattern("DOUBLE_BOTTOM", "Double bottom, confirmed by a close above the peak between the troughs",
                     double(False), double_batch(False)),
        ChartPattern("HEAD_SHOULDERS", "Head and shoulders, confirmed by a close below the neckline",
                     head_shoulders(False), head_shoulders_batch(False)),
        ChartPattern("INV_HEAD_SHOULDERS", "Inverse head and shoulders, confirmed by a close above the neckline",
                     head_shoulders(True), head_shoulders_batch(True)),
        ChartPattern("LEVEL_BREAKOUT", "Breakout of a support or resistance level (clustered swing points)",
                     breakouts, breakouts_batch, LEVEL_PARAMS),
        *(ChartPattern(shape, f"{shape.replace('_', ' ').lower().capitalize()}: formed by the last two peaks and "
                       "troughs, confirmed by a close beyond either line", shapes(shape), shapes_batch)
          for shape in SHAPES),
    ]
