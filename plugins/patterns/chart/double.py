"""``DOUBLE_TOP`` and ``DOUBLE_BOTTOM`` (the bottom mirrors the top).

**Forms** when a swing confirms peaks P1 and P2 around a trough T: P2 within ``tolerance_atr`` x ATR of P1,
T at least ``depth_atr`` x ATR below the lower peak (ATR as at P2's confirmation). **Confirmed** at the
first close below T; a high above both peaks first cancels it, and a newer formation replaces it.
**Confidence**: the mean of the peaks' similarity (1 - |P1 - P2| / tolerance), the trough's depth
(depth / (3 x ATR), capped at 1) and the time symmetry (shorter leg / longer leg). The event's points are
P1, T, P2 and the confirming close; ``details.neckline`` is T's price.
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
    at_most_one,
    chart_event,
    confirmations,
    key_points,
    mean3,
)
from .search import stretches
from .zigzag import Swing, SwingSeries


class Double(ChartPattern):
    def __init__(self, top: bool) -> None:
        if top:
            super().__init__("DOUBLE_TOP", "Double top, confirmed by a close below the trough between the peaks")
        else:
            super().__init__("DOUBLE_BOTTOM", "Double bottom, confirmed by a close above the peak between the troughs")
        self.top = top

    def form(self, last: Sequence[Swing], p: Mapping[str, int | float]) -> Formation | None:
        """The formation the last three swings make, or None."""
        first, middle, second = last
        if first.high != self.top or second.high != self.top:
            return None
        atr = second.atr
        gap = abs(first.price - second.price)
        depth = (min(first.price, second.price) - middle.price) if self.top else \
            (middle.price - max(first.price, second.price))
        if gap > p["tolerance_atr"] * atr or depth < p["depth_atr"] * atr:
            return None
        legs = sorted([middle.index - first.index, second.index - middle.index])
        confidence = mean3(1 - gap / (p["tolerance_atr"] * atr), min(1.0, depth / (3 * atr)), legs[0] / max(1, legs[1]))
        extreme = max(first.price, second.price) if self.top else min(first.price, second.price)
        return {"points": list(last), "neck": middle.price, "extreme": extreme, "confidence": confidence}

    def event(self, formed: Formation, index: int, close: float) -> PatternEvent:
        return chart_event(self.name, index, BEARISH if self.top else BULLISH, formed["confidence"],
                           key_points(formed["points"], index, close), neckline=formed["neck"])

    def update(self, state: ChartState, index: int, bar: Mapping[str, float],
               swing: Swing | None) -> list[PatternEvent]:
        swings = state.zigzag.swings
        if swing is not None and len(swings) >= 3:
            formed = self.form(swings[-3:], state.params)
            if formed is not None:
                state.pending = formed
        formed = state.pending
        if formed is None:
            return []
        close = bar["close"]
        if (close < formed["neck"]) if self.top else (close > formed["neck"]):
            state.pending = None
            return [self.event(formed, index, close)]
        if (bar["high"] > formed["extreme"]) if self.top else (bar["low"] < formed["extreme"]):
            state.pending = None  # a new extreme beyond both: not this pattern
        return []

    def scan(self, series: SwingSeries, params: Mapping[str, int | float]) -> Found:
        """`form` on every three swings at once; then, over the bars, each formation's confirmation in the
        stretch until the next formation."""
        w, p = series.swings, params
        if len(w) < 3:
            return Found.none()
        a, m, b = np.arange(len(w) - 2), np.arange(1, len(w) - 1), np.arange(2, len(w))
        atr, first, middle, second = w.atr[b], w.price[a], w.price[m], w.price[b]
        gap = np.abs(first - second)
        depth = (np.minimum(first, second) - middle) if self.top else (middle - np.maximum(first, second))
        formed = (w.peak[a] == self.top) & (w.peak[b] == self.top) & \
            ~(gap > p["tolerance_atr"] * atr) & ~(depth < p["depth_atr"] * atr)
        if not formed.any():
            return Found.none()
        a, m, b, atr, gap, depth = a[formed], m[formed], b[formed], atr[formed], gap[formed], depth[formed]
        legs = np.stack([w.index[m] - w.index[a], w.index[b] - w.index[m]])
        confidence = mean3(1 - gap / (p["tolerance_atr"] * atr), at_most_one(depth / (3 * atr)),
                           legs.min(axis=0) / np.maximum(1, legs.max(axis=0)))
        neck = w.price[m]
        extreme = np.maximum(w.price[a], w.price[b]) if self.top else np.minimum(w.price[a], w.price[b])
        owner = stretches(w.at[b], len(series))
        if self.top:
            confirm, invalid = series.close < neck[owner], series.high > extreme[owner]
        else:
            confirm, invalid = series.close > neck[owner], series.low < extreme[owner]
        at = confirmations(owner, len(b), confirm, invalid)
        hit = at >= 0
        at, a, m, b = at[hit], a[hit], m[hit], b[hit]
        close = series.close[at]
        pairs = w.pairs
        points = [(pairs[i], pairs[j], pairs[k], (bar, c))
                  for i, j, k, bar, c in zip(a.tolist(), m.tolist(), b.tolist(), at.tolist(), close.tolist(), strict=True)]
        details = [{"neckline": pairs[j][1]} for j in m.tolist()]
        return Found.of(at, np.full(len(at), not self.top), confidence[hit], points, details)
