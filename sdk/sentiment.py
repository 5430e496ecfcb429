"""The sentiment-analyser contract: scores in [-1, 1] from texts or from bars, built-in or a third party's.

Plugins register analysers through the ``register_sentiment_analyzers`` hook
(``ctx.registries["sentiment"]``). A ``text`` analyser scores headlines and news; a ``market`` analyser
scores a price and volume history, with the components behind the score and their weights.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, TypedDict

import numpy as np


class AnalyzerInfo(TypedDict):
    """What `SentimentAnalyzer.describe` tells about an analyser (op ``analyzers`` of ``sentiment``)."""

    name: str
    kind: str
    doc: str


class SentimentAnalyzer(ABC):
    name: ClassVar[str]
    kind: ClassVar[str] = "text"  # "text" or "market"
    doc: ClassVar[str] = ""

    def describe(self) -> AnalyzerInfo:
        return {"name": self.name, "kind": self.kind, "doc": self.doc}


class TextAnalyzer(SentimentAnalyzer):
    kind = "text"

    @abstractmethod
    def score(self, texts: Sequence[str]) -> list[float]:
        """One score in [-1, 1] per text (negative to positive; 0 neutral or no sentiment words)."""


class MarketAnalyzer(SentimentAnalyzer):
    kind = "market"

    @abstractmethod
    def score(self, data: Mapping[str, np.ndarray]) -> dict[str, Any]:
        """``{"score", "components": {name: value in [-1, 1]}, "weights": {name: weight}}`` of the last bar of
        OHLCV arrays."""
