"""The plugin SDK: everything a plugin imports, from one module.

A plugin (built-in or third-party) imports from ``ml_processing.sdk`` (and its submodules) and
``ml_processing.bus.topics`` only; the kernel (``ml_processing.core``) and the transport
(``ml_processing.bus``) stay behind this surface. Layers, bottom up: ``bus`` (transport, wire errors)
-> ``core`` (the kernel: config, plugin host, actors, supervision, system service, CLI) -> ``sdk`` (the
contract of each plugin kind, bars and columns, timeframes, the TA-Lib adapter, typed clients of the
built-in services, the contract checks) -> ``plugins``.

>>> from ml_processing import sdk
>>> sorted(set(sdk.__all__) - set(dir(sdk)))
[]
"""

from __future__ import annotations

from ml_processing.bus import codec, topics
from ml_processing.bus.edge.routes import Route
from ml_processing.core.actor import Actor, ActorContext
from ml_processing.core.clock import Clock, ManualClock
from ml_processing.core.commands import Command
from ml_processing.core.config import Config
from ml_processing.core.errors import (
    BadRequest,
    CodecError,
    InternalError,
    MlpError,
    NotFound,
    Timeout,
    TooLarge,
    Unavailable,
)
from ml_processing.core.hookspecs import hookimpl, hookspec
from ml_processing.core.kernel import VERSION
from ml_processing.core.log import get_logger
from ml_processing.core.ops import Args, Int32, Int64, NoArgs, NonNegInt, OpenArgs, PositiveInt, op
from ml_processing.core.storage import atomic_write

from . import services
from .bars import FIELDS, check_bar, check_bars
from .columns import Bars, Column, Columns, OptionalColumn
from .feature import FeatureExtractor, FeatureStream, MapStream
from .indicator import Indicator, IndicatorStream, Param, resolve_params
from .model import CLASSIFICATION, REGRESSION, Described, ModelKind, Prediction, Predictor
from .pattern import BEARISH, BULLISH, Pattern, PatternEvent, PatternStream
from .sentiment import MarketAnalyzer, SentimentAnalyzer, TextAnalyzer
from .timeframes import Symbol, Timeframe, to_ms

__all__ = [
    "BEARISH",
    "BULLISH",
    "CLASSIFICATION",
    "FIELDS",
    "REGRESSION",
    "VERSION",
    "Actor",
    "ActorContext",
    "Args",
    "BadRequest",
    "Bars",
    "Clock",
    "CodecError",
    "Column",
    "Columns",
    "Command",
    "Config",
    "Described",
    "FeatureExtractor",
    "FeatureStream",
    "Indicator",
    "IndicatorStream",
    "Int32",
    "Int64",
    "InternalError",
    "ManualClock",
    "MapStream",
    "MarketAnalyzer",
    "MlpError",
    "ModelKind",
    "NoArgs",
    "NonNegInt",
    "NotFound",
    "OpenArgs",
    "OptionalColumn",
    "Param",
    "Pattern",
    "PatternEvent",
    "PatternStream",
    "PositiveInt",
    "Prediction",
    "Predictor",
    "Route",
    "SentimentAnalyzer",
    "Symbol",
    "TextAnalyzer",
    "Timeframe",
    "Timeout",
    "TooLarge",
    "Unavailable",
    "atomic_write",
    "check_bar",
    "check_bars",
    "codec",
    "get_logger",
    "hookimpl",
    "hookspec",
    "op",
    "resolve_params",
    "services",
    "to_ms",
    "topics",
]
