"""The sentiment-analyser contract over every analyser a real kernel registers (entry points included),
through the checks ml-processing ships (`ml_processing.checks.sentiment`): scores in [-1, 1],
deterministic, odd texts and odd histories handled."""

from __future__ import annotations

import pytest

from ml_processing import checks
from ml_processing.sdk.sentiment import SentimentAnalyzer
from tests.support.registries import FOUND


def test_the_registry_holds_the_builtin_analyzers() -> None:
    assert {"vader_finance", "loughran_mcdonald", "price_volume"} <= set(FOUND["sentiment"])


@pytest.mark.parametrize("analyzer", checks.pytest_cases(FOUND, "sentiment"))
def test_every_analyzer_meets_the_contract(analyzer: SentimentAnalyzer) -> None:
    checks.sentiment.check_sentiment_analyzer(analyzer)
