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

from .base import ChartPattern, ChartState, Formation, chart_event, confirmed, formations, key_points, windows
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
        confidence = np.mean([1 - gap / (p["tolerance_atr"] * atr), min(1.0, depth / (3 * atr)),
                              legs[0] / max(1, legs[1])])
        extreme = max(first.price, second.price) if self.top else min(first.price, second.price)
        return {"points": list(last), "neck": middle.price, "extreme": extreme, "confidence": float(confidence)}

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

    def scan(self, series: SwingSeries, params: Mapping[str, int | float]) -> list[PatternEvent]:
        events = []
        close = series.close
        for start, end, formed in windows(formations(series.swings, 3, lambda last: self.form(last, params)),
                                          len(series)):
            if self.top:
                confirm, invalid = close[start:end] < formed["neck"], series.high[start:end] > formed["extreme"]
            else:
                confirm, invalid = close[start:end] > formed["neck"], series.low[start:end] < formed["extreme"]
            at = confirmed(start, confirm, invalid)
            if at is not None:
                events.append(self.event(formed, at, float(close[at])))
        return events
