"""The contract checks ml-processing ships: one suite per plugin kind, run over what a real kernel registers.

The project's own tests run these, and a third party runs exactly the same over its plugin (the template's
test does, ``plugins/_template/tests``): build the registries a kernel builds with your package installed
(`registries`: built-in plugins, entry points, ``[plugins] modules``), then check each entry:

* `indicators.check_indicator`: streaming equals batch (peeks included), the declared lookback, bad
  parameters named, gaps, flat bars and zero volume survived;
* `features.check_feature_extractor`: streaming equals batch (also after NaN inputs), the lookback, bad
  parameters named, odd rows survived;
* `patterns.check_pattern`: live events equal batch events, well-formed events, odd bars survived, bad
  parameters named;
* `models.check_model_kind`: garbage refused without being executed, check / compile / load / predict
  round trip, native and fast paths agree;
* `sentiment.check_sentiment_analyzer`: scores in [-1, 1], deterministic, odd input handled;
* `actors.check_actor_declarations` and `actors.check_actor_answers`: every op declared (arguments, reply,
  role, doc), and garbage arguments answered without ``internal`` or a restart.

Each raises `AssertionError` saying what is wrong. With pytest::

    from ml_processing import checks

    FOUND = checks.registries()

    @pytest.mark.parametrize("item", checks.pytest_cases(FOUND, modules=("my_package",)))
    def test_contract(item):
        checks.check(item, FOUND)

`check` picks the suite by the entry's contract class.

>>> from ml_processing.sdk import Indicator
>>> class Typical(Indicator):
...     name = "TYPICAL"; inputs = ("high", "low", "close")
...     def lookback(self, params): return 0
...     def batch(self, data, params): return ((data["high"] + data["low"] + data["close"]) / 3,)
>>> check(Typical(), None)
"""

from __future__ import annotations

from typing import Any

from ml_processing.core.actor import Actor
from ml_processing.sdk.feature import FeatureExtractor
from ml_processing.sdk.indicator import Indicator
from ml_processing.sdk.model import ModelKind
from ml_processing.sdk.pattern import Pattern
from ml_processing.sdk.sentiment import SentimentAnalyzer

from . import actors, features, indicators, models, patterns, sentiment
from .discovery import KINDS, Discovered, local_config, pytest_cases, registries, running

__all__ = ["KINDS", "Discovered", "actors", "check", "features", "indicators", "local_config", "models",
           "patterns", "pytest_cases", "registries", "running", "sentiment"]


def check(item: Any, found: Discovered | None) -> Any:
    """Run the suite of `item`'s kind: an indicator, feature extractor, pattern, model kind, sentiment
    analyser or actor class. `found` gives feature extractors the registries they may build on. Returns
    the model kind's `models.KindReport`; None otherwise."""
    if isinstance(item, Indicator):
        indicators.check_indicator(item)
    elif isinstance(item, FeatureExtractor):
        features.check_feature_extractor(item, found.registries if found is not None else {})
    elif isinstance(item, Pattern):
        patterns.check_pattern(item)
    elif isinstance(item, ModelKind):
        return models.check_model_kind(item)
    elif isinstance(item, SentimentAnalyzer):
        sentiment.check_sentiment_analyzer(item)
    elif isinstance(item, type) and issubclass(item, Actor):
        actors.check_actor_declarations(item)
    else:
        raise TypeError(f"no contract check for {item!r:.80}")
    return None
