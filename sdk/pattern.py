"""The pattern contract: candlestick and chart patterns, built-in or a third party's, as events.

Plugins register patterns through the ``register_patterns`` hook (``ctx.registries["patterns"]``). A
pattern declares its name, kind (``candlestick`` or ``chart``), inputs and parameters, and finds events in
``detect`` over whole arrays and, one bar at a time, through the `PatternStream` that ``stream`` returns.
The contract the test suite checks for every registered pattern: the events a stream reports over a
series are the events ``detect`` reports on it, whole (bar, ts, direction, strength, points and details):
a pattern is reported at the bar that confirms it and never withdrawn, so live and batch agree.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypedDict

import numpy as np

from .indicator import Param, resolve_params

BULLISH = "bullish"
BEARISH = "bearish"


class PatternInfo(TypedDict):
    """What `Pattern.describe` tells about a pattern (op ``list`` of the ``patterns`` service, docs)."""

    name: str
    kind: str
    inputs: list[str]
    params: list[dict[str, Any]]  # `Param.describe` of each parameter
    doc: str


@dataclass(slots=True)
class PatternEvent:
    pattern: str
    kind: str  # "candlestick" or "chart"
    index: int  # the bar that confirms it (0-based in the series; a stream counts the bars it was given)
    direction: str  # BULLISH or BEARISH
    strength: float  # TA-Lib's 100/200 for candlesticks; a confidence in [0, 1] for chart patterns
    ts: int | None = None
    points: tuple[tuple[int, float], ...] = ()  # key points (bar index, price) of a chart pattern
    details: dict[str, Any] = field(default_factory=dict)

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"pattern": self.pattern, "kind": self.kind, "index": self.index, "ts": self.ts,
                               "direction": self.direction, "strength": self.strength}
        if self.points:
            out["points"] = [list(p) for p in self.points]
        if self.details:
            out["details"] = self.details
        return out


class PatternStream(ABC):
    @abstractmethod
    def update(self, bar: Mapping[str, float]) -> list[PatternEvent]:
        """Commit one bar; the events it confirms (``index`` counts the bars given so far, from 0)."""


class Pattern(ABC):
    """Base of every pattern. Subclasses set the class attributes and implement the methods."""

    name: ClassVar[str]
    kind: ClassVar[str] = "chart"
    doc: ClassVar[str] = ""
    inputs: ClassVar[tuple[str, ...]] = ("open", "high", "low", "close")
    params: ClassVar[tuple[Param, ...]] = ()

    def resolve(self, given: Mapping[str, Any] | None) -> dict[str, int | float]:
        return resolve_params(self.name, self.params, given)

    @abstractmethod
    def detect(self, data: Mapping[str, np.ndarray], params: Mapping[str, int | float],
               ts: np.ndarray | None = None) -> list[PatternEvent]:
        """Every event in whole float64 arrays (one per name in `inputs`), in bar order."""

    @abstractmethod
    def stream(self, params: Mapping[str, int | float]) -> PatternStream:
        """A fresh streaming state."""

    def describe(self) -> PatternInfo:
        return {"name": self.name, "kind": self.kind, "inputs": list(self.inputs),
                "params": [p.describe() for p in self.params], "doc": self.doc}
