"""Typed clients of the built-in services, and the declarations of the ops other plugins call.

A plugin never imports another plugin; when it needs another service it calls it over the bus through
the small client declared here (as `ml_processing.bus.topics` holds every topic), so the service name,
op name, arguments and reply shape are written once. The serving plugin declares those ops with the
same `Args` and reply types. An actor that asks a service while it starts lists it in ``needs``.

>>> from ml_processing.sdk.services import indicators
>>> indicators.BarsArgs(symbol="EURUSD", timeframe="1h").limit is None
True
"""

from __future__ import annotations

from . import features, indicators, models

__all__ = ["features", "indicators", "models"]
