"""The declarations of the ``sentiment`` service's ops: their arguments and their replies.

Every field is checked before a handler runs (`ml_processing.sdk.op`): texts are strings of bounded
length, bars are `Columns` (empty, booleans, infinities, unequal lengths, negative volume: one answer each,
as on every endpoint that takes bars), symbols and timeframes follow the one grammar. What depends on the
registry (an analyser's name) is checked by the actor.

>>> from ml_processing.core.ops import convert
>>> convert({"texts": ["Acme beats estimates"]}, AnalyzeArgs).texts
['Acme beats estimates']
>>> convert({"bars": {"close": [1.0]}}, AnalyzeArgs)
Traceback (most recent call last):
...
ml_processing.bus.errors.BadRequest: bars.high: 'high' is required
>>> convert({"symbol": "ACME"}, AnalyzeArgs)
Traceback (most recent call last):
...
ml_processing.bus.errors.BadRequest: timeframe: the market sentiment of a series needs 'symbol' and 'timeframe'
"""

from __future__ import annotations

from typing import Annotated, NotRequired, TypedDict

import msgspec

from ml_processing.sdk import Args, Column, Columns, Symbol, Timeframe, TooLarge
from ml_processing.sdk.sentiment import AnalyzerInfo

#: Texts per request, and characters per text, at most.
MAX_TEXTS = 10_000
MAX_TEXT_CHARS = 10_000

Text = Annotated[str, msgspec.Meta(max_length=MAX_TEXT_CHARS, description="a headline or a news text")]
AnalyzerName = Annotated[str, msgspec.Meta(min_length=1, max_length=64,
                                           description="a text analyser, as op `analyzers` names them")]


class MarketBars(Columns, kw_only=True):
    """OHLCV columns of the bars to score: ``high``, ``low``, ``close`` and ``volume``; ``open`` optional (the
    previous close when absent)."""

    high: Column
    low: Column
    close: Column
    volume: Column


class AnalyzeArgs(Args):
    """``texts`` to score (with the configured text analyser, or ``analyzer``), and/or a market to score:
    posted ``bars``, or a series the service tracks (``symbol`` and ``timeframe``: adds breadth and the
    symbol's news)."""

    texts: list[Text] | None = None
    analyzer: AnalyzerName | None = None
    bars: MarketBars | None = None
    symbol: Symbol | None = None
    timeframe: Timeframe | None = None

    def __post_init__(self) -> None:
        if self.texts is not None and len(self.texts) > MAX_TEXTS:
            raise TooLarge(f"{len(self.texts):,} texts; at most {MAX_TEXTS:,} per request", field="texts")
        if self.bars is None and (self.symbol is None) != (self.timeframe is None):
            missing = "timeframe" if self.timeframe is None else "symbol"
            raise ValueError(f"{missing}: the market sentiment of a series needs 'symbol' and 'timeframe'")
        if self.texts is None and self.bars is None and self.symbol is None:
            raise ValueError("texts: send 'texts', 'bars' (OHLCV columns), or 'symbol' and 'timeframe'")


class SymbolArgs(Args):
    """A symbol whose news the service has seen."""

    symbol: Symbol


class TextScores(TypedDict):
    """One score in [-1, 1] and one label per text, their mean (null without texts), the analyser used."""

    analyzer: str
    scores: list[float]
    labels: list[str]
    mean: float | None


class NewsSentiment(TypedDict):
    """A symbol's news sentiment now: the decayed mean score, texts seen, their decayed weight."""

    score: float
    texts: int
    effective_texts: float


class MarketSentiment(TypedDict):
    """The market's score in [-1, 1], its components and their weights, what was scored (``bars``, or the
    series ``SYMBOL TIMEFRAME``) and, for a series, the symbol's news sentiment (null without news)."""

    score: float
    components: dict[str, float]
    weights: dict[str, float]
    source: str
    news: NotRequired[NewsSentiment | None]


class AnalyzeReply(TypedDict, total=False):
    """``texts`` when texts were sent, ``market`` when bars or a series were."""

    texts: TextScores
    market: MarketSentiment


class AnalyzersReply(TypedDict):
    """Every registered analyser, and the configured text and market analysers."""

    analyzers: list[AnalyzerInfo]
    text: str
    market: str


class SymbolSentiment(NewsSentiment):
    """A symbol's news sentiment now (`NewsSentiment`), with the symbol."""

    symbol: str
