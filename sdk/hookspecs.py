"""The hooks that fill the shared registries of plugin kinds: indicators, feature extractors, model kinds,
patterns, sentiment analysers.

They are declared by the SDK, not the kernel (which knows no plugin kind): the SDK's own built-in plugin
(`ml_processing.sdk.registries`) adds this module to the plugin manager through the kernel's
``register_hookspecs`` hook and names each registry through ``register_registries``. A plugin implements
them with ``@hookimpl`` exactly like the kernel's hooks.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from ml_processing.core.hookspecs import hookspec

if TYPE_CHECKING:
    from .feature import FeatureExtractor
    from .indicator import Indicator
    from .model import ModelKind
    from .pattern import Pattern
    from .sentiment import SentimentAnalyzer


@hookspec
def register_indicators() -> Iterable[Indicator]:
    """Return indicators (instances of `ml_processing.sdk.indicator.Indicator` subclasses).

    :return: indicators; each is then available by name to every actor through
        ``ctx.registries["indicators"]`` (batch compute, live state, features), exactly like the built-in
        ones. A name already registered by an earlier plugin is refused and the plugin reported broken.
    """
    raise NotImplementedError


@hookspec
def register_feature_extractors() -> Iterable[FeatureExtractor]:
    """Return feature extractors (instances of `ml_processing.sdk.feature.FeatureExtractor` subclasses).

    :return: extractors; each is then usable by name as a ``{"feature": NAME}`` step of any feature
        pipeline, through ``ctx.registries["features"]``. A name already registered is refused and the
        plugin reported broken.
    """
    raise NotImplementedError


@hookspec
def register_model_kinds() -> Iterable[ModelKind]:
    """Return model kinds (instances of `ml_processing.sdk.model.ModelKind` subclasses).

    :return: kinds; the ``models`` service then accepts, stores, loads and serves models of each kind by
        name (``ctx.registries["model_kinds"]``). A name already registered is refused and the plugin
        reported broken.
    """
    raise NotImplementedError


@hookspec
def register_patterns() -> Iterable[Pattern]:
    """Return patterns (instances of `ml_processing.sdk.pattern.Pattern` subclasses): candlestick or chart.

    :return: patterns; each is then detected by name in batch and live by the ``patterns`` service
        (``ctx.registries["patterns"]``), exactly like the built-in ones. A name already registered is
        refused and the plugin reported broken.
    """
    raise NotImplementedError


@hookspec
def register_sentiment_analyzers() -> Iterable[SentimentAnalyzer]:
    """Return sentiment analysers (`ml_processing.sdk.sentiment.TextAnalyzer` or `MarketAnalyzer`).

    :return: analysers; each is then usable by name in ``POST /api/v1/sentiment/analyze`` and live by the
        ``sentiment`` service (``ctx.registries["sentiment"]``). A name already registered is refused and
        the plugin reported broken.
    """
    raise NotImplementedError
