"""Indicators: every TA-Lib indicator from TA-Lib's metadata, computed in batch by the ``indicators`` service.

Registered exactly as a third-party plugin would be: ``register_indicators`` fills the shared registry
(the contract is `ml_processing.core.indicator.Indicator`), ``register_actors`` runs the service.
Streaming, the live market state and multi-timeframe analysis build on this.
"""

from __future__ import annotations

from ml_processing.core.actor import Actor
from ml_processing.core.config import Config
from ml_processing.core.hookspecs import hookimpl
from ml_processing.core.indicator import Indicator

from .actor import Indicators
from .talib_indicators import talib_indicators


@hookimpl
def register_indicators() -> list[Indicator]:
    return talib_indicators()


@hookimpl
def register_actors(settings: Config) -> list[type[Actor]]:
    return [Indicators]
