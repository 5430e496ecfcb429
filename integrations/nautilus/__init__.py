"""NautilusTrader integration (the ``nautilus`` extra: ``pip install "ml-processing[nautilus]"``).

`MlProcessing` (an actor, configured by `MlProcessingConfig`) streams the bars it subscribes to into
ml-processing and publishes the service's predictions and signals as Nautilus data (`MlPrediction`,
`MlSignal`; subscribe with `prediction_type` / `signal_type`); `SignalFollower` is an example strategy that
trades the signals. docs/NAUTILUS.md shows a backtest and a live node. Everything here is a client of the
service's documented protocol (``ml_processing.bus``): it runs in the trader's process, beside Nautilus.
"""

from __future__ import annotations

try:
    import nautilus_trader  # noqa: F401
except ImportError as exc:  # pragma: no cover - the extra is missing
    raise ImportError('the NautilusTrader integration needs the extra: pip install "ml-processing[nautilus]"') from exc

from .actor import MlProcessing, MlProcessingConfig
from .data import MlPrediction, MlSignal, prediction_type, signal_type
from .strategy import SignalFollower, SignalFollowerConfig

__all__ = [
    "MlPrediction",
    "MlProcessing",
    "MlProcessingConfig",
    "MlSignal",
    "SignalFollower",
    "SignalFollowerConfig",
    "prediction_type",
    "signal_type",
]
