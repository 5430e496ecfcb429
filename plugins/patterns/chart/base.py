"""What every chart pattern shares: the parameters, the live driver, batch detection over a request's
swings, and the event a pattern reports.

A chart pattern (`ChartPattern`) writes its rule twice, side by side in its own module: ``update`` takes
one bar live (after the zigzag has seen it), ``scan`` takes a whole series at once, in numpy: its swings as
columns (`zigzag.Swings`), every formation tested on them at once, every formation's confirmation found in
one pass over the bars (`search.first_in_stretches`), and its events as columns (`Found`), which is what
the ``detect`` reply carries. Both report a pattern only at the bar that confirms it and never withdraw
one, so the same bars give the same events, details included; the chart contract test compares them, event
for event, on every pattern, and recorded events pin the batch results (tests/plugins/patterns).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ml_processing.sdk.indicator import Param
from ml_processing.sdk.pattern import BEARISH, BULLISH, Pattern, PatternEvent, PatternStream

from .search import first_in_stretches
from .zigzag import Swing, SwingSeries, Zigzag, Zigzags

Points = list[tuple[int, float]]  # an event's key points as (bar, price) pairs
#: The key points of an event found in batch: a tuple of (bar, price) pairs, which the collector stops tracking
#: at its first pass (its items are numbers), where it walks a list at every pass until the list is freed; a
#: ``detect`` reply holds a few thousand while it is written (docs/PATTERNS.md, where a request's time goes).
KeyPoints = Sequence[tuple[int, float]]

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
    def scan(self, series: SwingSeries, params: Mapping[str, int | float]) -> Found:
        """Batch: every event over the series, in bar order, as columns."""

    def stream(self, params: Mapping[str, int | float]) -> PatternStream:
        return ChartStream(self, params)

    def detect(self, data: Mapping[str, np.ndarray], params: Mapping[str, int | float],
               ts: np.ndarray | None = None) -> list[PatternEvent]:
        return self.detect_with(Zigzags(data), params, ts)

    def scan_with(self, zigzags: Zigzags, params: Mapping[str, int | float]) -> Found:
        """`scan`, reusing the swings other chart patterns of the same request already found."""
        return self.scan(zigzags.get(params), params)

    def detect_with(self, zigzags: Zigzags, params: Mapping[str, int | float],
                    ts: np.ndarray | None = None) -> list[PatternEvent]:
        """`detect`, reusing the swings other chart patterns of the same request already found."""
        events = self.scan_with(zigzags, params).events(self.name)
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


# -- batch: events as columns --------------------------------------------------------------------------


@dataclass
class Found:
    """A chart pattern's events over a series, as columns in bar order: the confirming bars, bullish or not,
    the strength (the confidence clipped to [0, 1] and rounded to 4 places, as `chart_event`), each event's
    key points and details. The ``detect`` reply carries these as they are; `events` makes the events
    `ChartPattern.detect` returns, equal to those `chart_event` makes live.

    >>> found = Found.of(np.array([7]), np.array([True]), np.array([1.25]), [[(3, 99.5), (7, 101.0)]], [{}])
    >>> found.events("X")[0].strength, found.events("X")[0].points
    (1.0, ((3, 99.5), (7, 101.0)))
    """

    index: np.ndarray
    bullish: np.ndarray
    strength: np.ndarray
    points: Sequence[KeyPoints]
    details: list[dict[str, Any]]

    @classmethod
    def of(cls, index: np.ndarray, bullish: np.ndarray, confidence: np.ndarray, points: Sequence[KeyPoints],
           details: list[dict[str, Any]]) -> Found:
        return cls(index.astype(np.int64), bullish.astype(bool), strengths(confidence), points, details)

    @classmethod
    def none(cls) -> Found:
        return cls(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool), np.zeros(0), [], [])

    def __len__(self) -> int:
        return len(self.index)

    def events(self, name: str) -> list[PatternEvent]:
        return [PatternEvent(name, "chart", i, BULLISH if up else BEARISH, strength, None, tuple(points), details)
                for i, up, strength, points, details in zip(self.index.tolist(), self.bullish.tolist(),
                                                            self.strength.tolist(), self.points, self.details,
                                                            strict=True)]


def strengths(confidence: np.ndarray) -> np.ndarray:
    """``round(max(0.0, min(1.0, c)), 4)`` for each confidence, as `chart_event` computes it.

    >>> strengths(np.array([0.12345, 0.98765432, 1.5, -0.2, np.nan])).tolist()
    [0.1235, 0.9877, 1.0, 0.0, 1.0]
    """
    clipped = np.where(confidence < 1.0, confidence, 1.0)
    return rounded(np.where(clipped > 0.0, clipped, 0.0), 4)


def rounded(values: np.ndarray, digits: int) -> np.ndarray:
    """Python's ``round(v, digits)`` for each value (the decimal rounding of its exact value, half to even),
    in numpy: scaled by 10^digits to the nearest integer and divided back, which is the same number except
    where the scaled value lies within its rounding error of a half (the scaling may have rounded across
    it) or is too large to carry a fraction: those few are rounded by Python.

    >>> rounded(np.array([0.12345, 2.5e-7, -1.23456789, 1e300]), 4).tolist()
    [0.1235, 0.0, -1.2346, 1e+300]
    >>> [round(0.12345, 4), np.round(0.12345, 4).item()]
    [0.1235, 0.1234]
    """
    scale = 10.0 ** digits
    scaled = values * scale
    out = np.rint(scaled) / scale
    with np.errstate(invalid="ignore"):
        doubt = (np.abs(scaled - np.floor(scaled) - 0.5) <= 4 * np.abs(np.spacing(scaled)) + 1e-9) | \
            (np.abs(scaled) >= 2.0 ** 52)
    near = np.flatnonzero(doubt)
    if near.size:
        out[near] = [round(v, digits) for v in values[near].tolist()]
    return out


def mean3(a: Any, b: Any, c: Any) -> Any:
    """The mean of three numbers or arrays, summed left to right (as ``np.mean`` of three numbers is; written
    out so that live and batch, numbers and arrays, add in the same order)."""
    return (a + b + c) / 3


def at_most_one(x: np.ndarray) -> np.ndarray:
    """``min(1.0, x)`` for each element, as Python computes it."""
    return np.where(x < 1.0, x, 1.0)


def at_least_zero(x: np.ndarray) -> np.ndarray:
    """``max(0.0, x)`` for each element, as Python computes it."""
    return np.where(x > 0.0, x, 0.0)


def confirmations(owner: np.ndarray, count: int, confirm: np.ndarray, invalid: np.ndarray) -> np.ndarray:
    """For `count` formations, each waiting over its stretch of bars (`owner`, `search.stretches`): the bar that
    confirms it (the first confirming bar, unless an invalidating bar comes strictly before it: on the same
    bar, confirmation wins, as live), or -1."""
    decisive = first_in_stretches(confirm | invalid, owner, count)
    return np.where((decisive >= 0) & confirm[decisive], decisive, -1)
