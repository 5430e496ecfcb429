"""``HEAD_SHOULDERS`` and ``INV_HEAD_SHOULDERS`` (the inverse mirrors it).

**Forms** when a swing confirms peaks S1, H, S2 with troughs N1, N2 between them: H above both shoulders by
at least ``depth_atr`` x ATR, the shoulders within ``tolerance_atr`` x ATR of each other (ATR as at S2's
confirmation). **Confirmed** at the first close below the neckline, the line through N1 and N2, at that
bar; a high above the head first cancels it, and a newer formation replaces it. **Confidence**: the mean of
the shoulders' similarity, the head's prominence (capped at 1 for 3 x ATR) and the neckline's flatness
(1 - |slope| x span / ATR, floored at 0). The event's points are S1, N1, H, N2, S2 and the confirming close;
``details.neckline_at_break`` is the neckline's price at the confirming bar.
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
    confirmations,
    key_points,
    mean3,
    rounded,
)
from .search import stretches
from .zigzag import Swing, SwingSeries


class HeadShoulders(ChartPattern):
    def __init__(self, inverse: bool) -> None:
        if inverse:
            super().__init__("INV_HEAD_SHOULDERS",
                             "Inverse head and shoulders, confirmed by a close above the neckline")
        else:
            super().__init__("HEAD_SHOULDERS", "Head and shoulders, confirmed by a close below the neckline")
        self.peak = not inverse

    def form(self, last: Sequence[Swing], p: Mapping[str, int | float]) -> Formation | None:
        """The formation the last five swings make, or None."""
        s1, n1, head, n2, s2 = last
        if s2.high != self.peak:
            return None
        atr = s2.atr
        prominence = (head.price - max(s1.price, s2.price)) if self.peak else (min(s1.price, s2.price) - head.price)
        shoulders = abs(s1.price - s2.price)
        if prominence < p["depth_atr"] * atr or shoulders > p["tolerance_atr"] * atr:
            return None
        slope = (n2.price - n1.price) / max(1, n2.index - n1.index)
        confidence = mean3(1 - shoulders / (p["tolerance_atr"] * atr), min(1.0, prominence / (3 * atr)),
                           max(0.0, 1 - abs(slope) * (n2.index - n1.index) / atr))
        return {"points": list(last), "slope": slope, "n2": n2, "head": head.price, "confidence": confidence}

    def event(self, formed: Formation, index: int, close: float, neck: float) -> PatternEvent:
        return chart_event(self.name, index, BEARISH if self.peak else BULLISH, formed["confidence"],
                           key_points(formed["points"], index, close), neckline_at_break=round(neck, 6))

    def update(self, state: ChartState, index: int, bar: Mapping[str, float],
               swing: Swing | None) -> list[PatternEvent]:
        swings = state.zigzag.swings
        if swing is not None and len(swings) >= 5:
            formed = self.form(swings[-5:], state.params)
            if formed is not None:
                state.pending = formed
        formed = state.pending
        if formed is None:
            return []
        close = bar["close"]
        n2 = formed["n2"]
        neck = n2.price + formed["slope"] * (index - n2.index)
        if (close < neck) if self.peak else (close > neck):
            state.pending = None
            return [self.event(formed, index, close, neck)]
        if (bar["high"] > formed["head"]) if self.peak else (bar["low"] < formed["head"]):
            state.pending = None  # beyond the head: not this pattern
        return []

    def scan(self, series: SwingSeries, params: Mapping[str, int | float]) -> Found:
        """`form` on every five swings at once; then, over the bars, each formation's confirmation in the
        stretch until the next formation, against its neckline at each bar."""
        w, p = series.swings, params
        if len(w) < 5:
            return Found.none()
        s1, n1, head, n2, s2 = (np.arange(k, len(w) - 4 + k) for k in range(5))
        atr = w.atr[s2]
        if self.peak:
            prominence = w.price[head] - np.maximum(w.price[s1], w.price[s2])
        else:
            prominence = np.minimum(w.price[s1], w.price[s2]) - w.price[head]
        shoulders = np.abs(w.price[s1] - w.price[s2])
        formed = (w.peak[s2] == self.peak) & ~(prominence < p["depth_atr"] * atr) & \
            ~(shoulders > p["tolerance_atr"] * atr)
        if not formed.any():
            return Found.none()
        s1, n1, head, n2, s2 = s1[formed], n1[formed], head[formed], n2[formed], s2[formed]
        atr, prominence, shoulders = atr[formed], prominence[formed], shoulders[formed]
        span = w.index[n2] - w.index[n1]
        slope = (w.price[n2] - w.price[n1]) / np.maximum(1, span)
        confidence = mean3(1 - shoulders / (p["tolerance_atr"] * atr), at_most_one(prominence / (3 * atr)),
                           at_least_zero(1 - np.abs(slope) * span / atr))
        owner = stretches(w.at[s2], len(series))
        neck = w.price[n2][owner] + slope[owner] * (np.arange(len(series)) - w.index[n2][owner])
        if self.peak:
            confirm, invalid = series.close < neck, series.high > w.price[head][owner]
        else:
            confirm, invalid = series.close > neck, series.low < w.price[head][owner]
        at = confirmations(owner, len(s2), confirm, invalid)
        hit = at >= 0
        at, rows = at[hit], np.stack([s1, n1, head, n2, s2], axis=1)[hit]
        pairs = w.pairs
        points = [(pairs[s1], pairs[n1], pairs[head], pairs[n2], pairs[s2], (bar, c))
                  for (s1, n1, head, n2, s2), bar, c in zip(rows.tolist(), at.tolist(), series.close[at].tolist(),
                                                            strict=True)]
        details = [{"neckline_at_break": line} for line in rounded(neck[at], 6).tolist()]
        return Found.of(at, np.full(len(at), not self.peak), confidence[hit], points, details)
