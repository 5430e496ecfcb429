"""The SDK's built-in plugin: declares the registry hooks and the registries they fill.

Registered first, like any plugin, so every later plugin may implement ``register_indicators`` and the
other registry hooks (`ml_processing.sdk.hookspecs`).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import ModuleType
from typing import Any

from ml_processing.core.hookspecs import hookimpl

from . import hookspecs
from .feature import FeatureExtractor
from .indicator import Indicator
from .model import ModelKind
from .pattern import Pattern
from .sentiment import SentimentAnalyzer

#: kind -> (the hook that fills it, the class every entry must be an instance of)
REGISTRIES: dict[str, tuple[str, type[Any]]] = {
    "indicators": ("register_indicators", Indicator),
    "features": ("register_feature_extractors", FeatureExtractor),
    "model_kinds": ("register_model_kinds", ModelKind),
    "patterns": ("register_patterns", Pattern),
    "sentiment": ("register_sentiment_analyzers", SentimentAnalyzer),
}


@hookimpl
def register_hookspecs() -> list[ModuleType]:
    return [hookspecs]


@hookimpl
def register_registries() -> Mapping[str, tuple[str, type[Any]]]:
    return REGISTRIES
