"""What every chart pattern shares: the parameters, the live driver, batch detection over a request's
swings, and the event a pattern reports.

A chart pattern (`ChartPattern`) writes its rule twice, side by side in its own module: ``update`` takes
one bar live (after the zigzag has seen it), ``scan`` takes a whole series at once (its swings computed in
one pass, each formed pattern's confirmation searched with numpy). Both report a pattern only at the bar
that confirms it and never withdraw one, so the same bars give the same events, details included; the
chart contract test compares them, event for event, on every pattern.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ml_processing.sdk.indicator import Param
from ml_processing.sdk.pattern import Pattern, PatternEvent, PatternStream

from .zigzag import Swing, SwingSeries, Zigzag, Zigzags

PARAMS = (Param("atr_period", int, 14, minimum=2, maximum=1000, doc="ATR window"),
          Param("swing_atr", float, 2.0, minimum=0.1, maximum=50, doc="zigzag threshold, in ATRs"),
          Param("tolerance_atr", float, 0.75, minimum=0.01, maximum=20, doc="equal prices, in ATRs"),
          Param("depth_atr", float, 1.0, minimum=0.0, maximum=50, doc="minimum depth or prominence, in ATRs"))

#: A formation: a pattern formed by the last swings, waiting for the bar that confirms it.
Formation = dict[str, Any]


@dataclass
class ChartState:
    """One series' live state for one chart pattern: its zigzag and what the pattern remembers between bars."""

    params: Mapping[str, int | float]
    zigzag: Zigzag
    pending: Formation | None = None  # the formation waiting for its confirmation
    levels: Any = None  # a pattern's own longer-lived state (support and resistance levels)


class ChartPattern(Pattern):
    """A chart pattern: a rule over swing points, run live (`update`) and over whole arrays (`scan`)."""

    kind = "chart"
    inputs = ("high", "low", "close")
    params = PARAMS

    def __init__(self, name: str, doc: str) -> None:
        self.name = name  # type: ignore[misc]
        self.doc = doc  # type: ignore[misc]

    @abstractmethod
    def update(self, state: ChartState, index: int, bar: Mapping[str, float],
               swing: Swing | None) -> list[PatternEvent]:
        """Live: the events bar `index` confirms (the zigzag has taken the bar; `swing` is the swing point
        it confirmed, if any)."""

    @abstractmethod
    def scan(self, series: SwingSeries, params: Mapping[str, int | float]) -> list[PatternEvent]:
        """Batch: every event over the series, in bar order (without ``ts``)."""

    def stream(self, params: Mapping[str, int | float]) -> PatternStream:
        return ChartStream(self, params)

    def detect(self, data: Mapping[str, np.ndarray], params: Mapping[str, int | float],
               ts: np.ndarray | None = None) -> list[PatternEvent]:
        return self.detect_with(Zigzags(data), params, ts)

    def detect_with(self, zigzags: Zigzags, params: Mapping[str, int | float],
                    ts: np.ndarray | None = None) -> list[PatternEvent]:
        """`detect`, reusing the swings other chart patterns of the same request already found."""
        events = self.scan(zigzags.get(params), params)
        if ts is not None:
            for event in events:
                event.ts = int(ts[event.index])
        return events


class ChartStream(PatternStream):
    """Live detection of one chart pattern on one series: the zigzag, then the pattern's `update`."""

    def __init__(self, pattern: ChartPattern, params: Mapping[str, int | float]) -> None:
        self.pattern = pattern
        self.state = ChartState(params, Zigzag.open(params))
        self.index = -1

    def update(self, bar: Mapping[str, float]) -> list[PatternEvent]:
        self.index += 1
        swing = self.state.zigzag.update(self.index, bar)
        events = self.pattern.update(self.state, self.index, bar, swing)
        ts = bar.get("ts")
        if ts is not None:
            for event in events:
                event.ts = int(ts)
        return events


def chart_event(name: str, index: int, direction: str, confidence: float, points: Sequence[tuple[int, float]],
                **details: Any) -> PatternEvent:
    """A chart pattern's event: confidence clipped to [0, 1] and rounded, key points as (int, float)."""
    return PatternEvent(name, "chart", index, direction, round(max(0.0, min(1.0, float(confidence))), 4),
                        None, tuple((int(i), float(p)) for i, p in points), details)


def key_points(swings: Sequence[Swing], index: int, close: float) -> list[tuple[int, float]]:
    """The points an event carries: its swing points, then the confirming bar and its close."""
    return [(w.index, w.price) for w in swings] + [(index, close)]


# -- batch helpers: formations and the stretch each one waits in -----------------------------------------


def formations(swings: Sequence[tuple[int, Swing]], size: int,
               form: Callable[[Sequence[Swing]], Formation | None]) -> list[tuple[int, Formation]]:
    """(bar, formation) for every swing confirmation that forms the pattern on the last `size` swings."""
    out = []
    points = [w for _, w in swings]
    for k in range(size - 1, len(swings)):
        formed = form(points[k - size + 1:k + 1])
        if formed is not None:
            out.append((swings[k][0], formed))
    return out


def windows(formed: list[tuple[int, Formation]], n: int) -> list[tuple[int, int, Formation]]:
    """(start, end, formation): a formation waits for its confirmation until the next one replaces it."""
    ends = [bar for bar, _ in formed[1:]] + [n]
    return [(bar, end, formation) for (bar, formation), end in zip(formed, ends, strict=False)]


def first(mask: np.ndarray) -> int | None:
    """The first True of `mask`, or None."""
    return int(mask.argmax()) if mask.any() else None


def confirmed(start: int, confirm: np.ndarray, invalid: np.ndarray) -> int | None:
    """The bar (from `start`) where a formation is confirmed: the first confirming bar, unless an
    invalidating bar comes strictly before it (on the same bar, confirmation wins, as live)."""
    hit = first(confirm)
    if hit is None:
        return None
    miss = first(invalid)
    return start + hit if miss is None or hit <= miss else None

