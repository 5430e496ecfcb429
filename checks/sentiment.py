"""The sentiment-analyser contract (`ml_processing.sdk.sentiment`), checked on one analyser.

A text analyser (``kind = "text"``):

* gives one score per text, each a finite number in [-1, 1], for ordinary headlines and for odd ones (empty,
  blank, punctuation, digits, emoji, other scripts, a very long text);
* is deterministic: the same texts score the same twice, and a text scores the same alone as in a batch;
* answers an empty batch with no scores (or refuses it with `BadRequest`).

A market analyser (``kind = "market"``):

* gives ``{"score", "components", "weights"}`` for a price and volume history: the score and every
  component a finite number in [-1, 1], the weights finite and not negative;
* is deterministic;
* on a short history, gaps (NaN), flat bars or zero volume either answers as above or refuses with
  `BadRequest`, never anything else.

Each check raises `AssertionError` with what was wrong.

>>> from ml_processing.sdk import TextAnalyzer
>>> class Exclaims(TextAnalyzer):
...     name = "exclaims"
...     def score(self, texts): return [min(1.0, t.count("!") / 3) for t in texts]
>>> check_sentiment_analyzer(Exclaims())
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from ml_processing.core.errors import BadRequest
from ml_processing.sdk.bars import FIELDS
from ml_processing.sdk.sentiment import MarketAnalyzer, SentimentAnalyzer, TextAnalyzer

from .data import series

__all__ = ["ODD_TEXTS", "TEXTS", "check_market_analyzer", "check_sentiment_analyzer", "check_text_analyzer"]

TEXTS = (
    "Shares surge after record quarterly profit beats expectations",
    "Stock plunges as regulator opens fraud investigation",
    "Company to hold annual meeting on Tuesday",
    "Bank cuts guidance, warns of weak demand and rising losses",
    "Upgrade: analysts raise target on strong growth and robust margins",
)
ODD_TEXTS = ("", "   ", "!!! ??? ...", "1234 5678 9.99%", "📈🚀💸", "株価が上昇した", "Ünïcödé déjà vu",
             "no no no not bad not good", "buy " * 5000)


def check_sentiment_analyzer(analyzer: SentimentAnalyzer) -> None:
    """The checks of the analyser's kind (``text`` or ``market``)."""
    if isinstance(analyzer, TextAnalyzer):
        check_text_analyzer(analyzer)
    elif isinstance(analyzer, MarketAnalyzer):
        check_market_analyzer(analyzer)
    else:
        raise AssertionError(f"{analyzer.name}: neither a TextAnalyzer nor a MarketAnalyzer ({type(analyzer).__name__})")


def _in_range(value: Any, what: str) -> None:
    assert isinstance(value, (int, float)) and not isinstance(value, bool), f"{what}: {value!r:.60} is not a number"
    assert math.isfinite(value) and -1.0 <= value <= 1.0, f"{what}: {value!r} is not a finite number in [-1, 1]"


def _scores(analyzer: TextAnalyzer, texts: list[str]) -> list[float]:
    scores = list(analyzer.score(texts))
    assert len(scores) == len(texts), f"{analyzer.name}: {len(scores)} scores for {len(texts)} texts"
    for text, value in zip(texts, scores, strict=True):
        _in_range(value, f"{analyzer.name}: score of {text!r:.40}")
    return scores


def check_text_analyzer(analyzer: TextAnalyzer) -> None:
    """Scores in range for ordinary and odd texts, deterministic, the same alone as in a batch."""
    texts = [*TEXTS, *ODD_TEXTS]
    first = _scores(analyzer, texts)
    again = _scores(analyzer, texts)
    assert first == again, f"{analyzer.name}: the same texts scored {first} then {again}"
    for text, batched in zip(texts, first, strict=True):
        (alone,) = _scores(analyzer, [text])
        assert alone == batched, f"{analyzer.name}: {text!r:.40} scores {alone} alone, {batched} in a batch"
    try:
        empty = list(analyzer.score([]))
    except BadRequest:
        return
    assert empty == [], f"{analyzer.name}: an empty batch scored {empty!r:.60}"


def _market(analyzer: MarketAnalyzer, data: dict[str, np.ndarray], what: str) -> dict[str, Any]:
    where = f"{analyzer.name} ({what})"
    result = analyzer.score(data)
    assert isinstance(result, dict) and {"score", "components", "weights"} <= set(result), (
        f"{where}: {result!r:.120} is not a map of score, components and weights")
    _in_range(result["score"], f"{where}: score")
    for name, value in dict(result["components"]).items():
        _in_range(value, f"{where}: component {name!r}")
    for name, weight in dict(result["weights"]).items():
        assert isinstance(weight, (int, float)) and math.isfinite(weight) and weight >= 0, (
            f"{where}: weight of {name!r} is {weight!r}")
    return result


def check_market_analyzer(analyzer: MarketAnalyzer) -> None:
    """Score, components and weights in range, deterministic; short histories, gaps, flat bars and zero
    volume answered or refused with `BadRequest`."""
    data = {k: v for k, v in series(300).items() if k in FIELDS}
    first = _market(analyzer, {k: v.copy() for k, v in data.items()}, "300 bars")
    again = _market(analyzer, {k: v.copy() for k, v in data.items()}, "300 bars")
    assert first == again, f"{analyzer.name}: the same bars scored {first!r:.100} then {again!r:.100}"

    def gaps(d: dict[str, np.ndarray]) -> None:
        d["close"][[100, 101, 299]] = np.nan

    def flat(d: dict[str, np.ndarray]) -> None:
        for name in ("open", "high", "low", "close"):
            d[name][200:] = 50.0

    def silent(d: dict[str, np.ndarray]) -> None:
        d["volume"][:] = 0.0

    odd: list[tuple[str, int, Callable[[dict[str, np.ndarray]], None] | None]] = [
        ("1 bar", 1, None), ("2 bars", 2, None), ("20 bars", 20, None), ("gaps", 300, gaps),
        ("flat bars at the end", 300, flat), ("no volume", 300, silent)]
    for what, n, spoil in odd:
        case = {k: v[-n:].copy() for k, v in data.items()}
        if spoil is not None:
            spoil(case)
        try:
            _market(analyzer, case, what)
        except BadRequest:
            continue
        except AssertionError:
            raise
        except Exception as exc:
            raise AssertionError(f"{analyzer.name} ({what}) raised {type(exc).__name__}: {exc!s:.200}; a history "
                                 "it cannot score is a BadRequest") from exc
