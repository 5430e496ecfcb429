"""Indicators: every TA-Lib indicator from TA-Lib's metadata, computed in batch by the ``indicators`` service.

Registered exactly as a third-party plugin would be: ``register_indicators`` fills the shared registry
(the contract is `ml_processing.sdk.indicator.Indicator`), ``register_actors`` runs the service.
Live: bars on ``bar.SYMBOL.TIMEFRAME`` (or ``POST /api/v1/market/bars``) update each series' indicators
through their streams and publish ``indicator.SYMBOL.TIMEFRAME``; the state is saved at shutdown.
"""

from __future__ import annotations

from ml_processing.sdk import Actor, Config, Route, hookimpl
from ml_processing.sdk.indicator import Indicator

from .actor import Indicators, IndicatorsConfig
from .custom import custom_indicators
from .talib_indicators import talib_indicators


def builtin_indicators() -> list[Indicator]:
    """TA-Lib's indicators and the ones TA-Lib lacks (`custom`)."""
    return [*talib_indicators(), *custom_indicators()]


@hookimpl
def register_config_schemas() -> dict[str, type]:
    return {"indicators": IndicatorsConfig}


@hookimpl
def register_indicators() -> list[Indicator]:
    return builtin_indicators()


@hookimpl
def register_actors(settings: Config) -> list[type[Actor]]:
    return [Indicators]


@hookimpl
def register_routes() -> list[Route]:
    """The REST routes; their bodies, query parameters and replies come from the ops' declarations."""
    return [
        Route("POST", "/api/v1/indicators", "indicators", "compute", "Compute technical indicators", "indicators"),
        Route("GET", "/api/v1/analysis/timeframes", "indicators", "timeframes", "Multi-timeframe analysis",
              "indicators"),
        Route("POST", "/api/v1/market/bars", "indicators", "ingest",
              "Ingest bars of one symbol/timeframe into the live market state", "indicators"),
        Route("GET", "/api/v1/market/state", "indicators", "state",
              "Latest indicator values and warm flags of a symbol/timeframe", "indicators"),
        Route("GET", "/api/v1/market/series", "indicators", "series", "Tracked symbols and timeframes",
              "indicators"),
    ]
