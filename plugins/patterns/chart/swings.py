"""``SWING_POINTS``: every confirmed swing point of the zigzag, as an event at the bar that confirms it.

The event's one key point is the extreme (bar, price); a peak is bearish, a trough bullish; the confidence
is 1; ``details.swing`` is ``peak`` or ``trough``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ml_processing.sdk.pattern import BEARISH, BULLISH, PatternEvent

from .base import ChartPattern, ChartState, Found, chart_event
from .zigzag import Swing, SwingSeries


class SwingPoints(ChartPattern):
    def __init__(self) -> None:
        super().__init__("SWING_POINTS", "Swing points (zigzag with an ATR-scaled threshold)")

    def event(self, index: int, swing: Swing) -> PatternEvent:
        return chart_event(self.name, index, BEARISH if swing.high else BULLISH, 1.0, [(swing.index, swing.price)],
                           swing="peak" if swing.high else "trough")

    def update(self, state: ChartState, index: int, bar: Mapping[str, float],
               swing: Swing | None) -> list[PatternEvent]:
        return [] if swing is None else [self.event(index, swing)]

    def scan(self, series: SwingSeries, params: Mapping[str, int | float]) -> Found:
        w = series.swings
        kinds = [{"swing": "peak" if peak else "trough"} for peak in w.peak.tolist()]
        points = [(pair,) for pair in w.pairs]
        return Found.of(w.at, ~w.peak, np.ones(len(w)), points, kinds)
