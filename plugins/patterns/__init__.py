"""Patterns: TA-Lib's 61 candlestick patterns and our chart patterns, in batch and live, as events
(docs/PATTERNS.md).

Registered exactly as a third-party plugin would be: ``register_patterns`` fills the shared pattern
registry (the contract is `ml_processing.sdk.pattern.Pattern`), ``register_actors`` runs the
``patterns`` service behind ``POST /api/v1/patterns/detect``.
"""

from __future__ import annotations

from ml_processing.sdk import Actor, Config, Route, get_logger, hookimpl
from ml_processing.sdk.feature import FeatureExtractor
from ml_processing.sdk.pattern import Pattern

from .actor import Patterns, PatternsConfig
from .candles import apply_candle_settings, candle_flags, candlesticks
from .chart import chart_patterns

log = get_logger(__name__)


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
    """The ``patterns`` actor; and TA-Lib's candle settings put in force now, before any actor of the kernel
    opens a TA-Lib stream (TA-Lib refuses to change them while one is open; see `apply_candle_settings`)."""
    section = settings.plugins.sections.get("patterns")
    wanted = section.options.get("candle_settings", {}) if section is not None else {}
    try:
        apply_candle_settings(wanted)
    except RuntimeError as exc:  # streams of an earlier kernel in this process: the actor tries again at start
        log.warning("candle_settings_deferred", error=str(exc))
    return [Patterns]


@hookimpl
def register_routes() -> list[Route]:
    return [
        Route("POST", "/api/v1/patterns/detect", "patterns", "detect", "Detect candlestick and chart patterns",
              "patterns"),
    ]
