"""Patterns: TA-Lib's 61 candlestick patterns and our chart patterns, in batch and live, as events
(docs/PATTERNS.md).

Registered exactly as a third-party plugin would be: ``register_patterns`` fills the shared pattern
registry (the contract is `ml_processing.sdk.pattern.Pattern`), ``register_actors`` runs the
``patterns`` service behind ``POST /api/v1/patterns/detect``.
"""

from __future__ import annotations

from ml_processing.sdk import Actor, Config, Route, hookimpl
from ml_processing.sdk.feature import FeatureExtractor
from ml_processing.sdk.pattern import Pattern

from .actor import Patterns, PatternsConfig
from .candles import candle_flags, candlesticks
from .chart import chart_patterns


@hookimpl
def register_config_schemas() -> dict[str, type]:
    return {"patterns": PatternsConfig}


@hookimpl
def register_patterns() -> list[Pattern]:
    return [*candlesticks(), *chart_patterns()]


@hookimpl
def register_feature_extractors() -> list[FeatureExtractor]:
    """Candlestick patterns as feature columns (``{"feature": "pattern_cdlengulfing"}``), for pipelines."""
    return candle_flags()


@hookimpl
def register_actors(settings: Config) -> list[type[Actor]]:
    return [Patterns]


@hookimpl
def register_routes() -> list[Route]:
    return [
        Route("POST", "/api/v1/patterns/detect", "patterns", "detect", "Detect candlestick and chart patterns",
              "patterns"),
    ]
