"""Every hook of ml-processing, in one place, grouped by lifecycle phase.

Hooks are synchronous and only *register* things; everything that waits happens in actors on the bus.
A plugin implements any subset with ``@hookimpl`` (from this module) and is found through the entry-point
group ``ml_processing``, a module path in ``[plugins] modules``, or the built-in list.

Order of calls at start-up: ``register_config_schemas`` (so the kernel can check ``[plugins.NAME]``),
then the registries (``register_indicators``, ``register_feature_extractors``, ``register_model_kinds``,
``register_patterns``, ``register_sentiment_analyzers``), then ``register_routes`` and ``register_actors``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from ml_processing.bus.edge.routes import Route

    from .actor import Actor
    from .config import Config
    from .feature import FeatureExtractor
    from .indicator import Indicator
    from .model import ModelKind
    from .pattern import Pattern
    from .sentiment import SentimentAnalyzer

PROJECT = "ml_processing"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# -- phase 1: configuration -----------------------------------------------------------------------------


@hookspec
def register_config_schemas() -> Mapping[str, type[Any]]:
    """Declare the frozen dataclass that checks a plugin's ``[plugins.NAME]`` section.

    :return: ``{NAME: ConfigClass}``. Keys of the section other than ``enabled`` are checked against the
        class exactly like the kernel's own sections (unknown key, wrong type, bad value: start-up
        stops with one line naming the key). Actors read the built object as ``self.config``.
    """
    raise NotImplementedError


# -- phase 2: shared registries ----------------------------------------------------------------------------


@hookspec
def register_indicators() -> Iterable[Indicator]:
    """Return indicators (instances of `ml_processing.core.indicator.Indicator` subclasses).

    :return: indicators; each is then available by name to every actor through
        ``ctx.registries["indicators"]`` (batch compute, live state, features), exactly like the built-in
        ones. A name already registered by an earlier plugin is refused and the plugin reported broken.
    """
    raise NotImplementedError


@hookspec
def register_feature_extractors() -> Iterable[FeatureExtractor]:
    """Return feature extractors (instances of `ml_processing.core.feature.FeatureExtractor` subclasses).

    :return: extractors; each is then usable by name as a ``{"feature": NAME}`` step of any feature
        pipeline, through ``ctx.registries["features"]``. A name already registered is refused and the
        plugin reported broken.
    """
    raise NotImplementedError


@hookspec
def register_model_kinds() -> Iterable[ModelKind]:
    """Return model kinds (instances of `ml_processing.core.model.ModelKind` subclasses).

    :return: kinds; the ``models`` service then accepts, stores, loads and serves models of each kind by
        name (``ctx.registries["model_kinds"]``). A name already registered is refused and the plugin
        reported broken.
    """
    raise NotImplementedError


@hookspec
def register_patterns() -> Iterable[Pattern]:
    """Return patterns (instances of `ml_processing.core.pattern.Pattern` subclasses): candlestick or chart.

    :return: patterns; each is then detected by name in batch and live by the ``patterns`` service
        (``ctx.registries["patterns"]``), exactly like the built-in ones. A name already registered is
        refused and the plugin reported broken.
    """
    raise NotImplementedError


@hookspec
def register_sentiment_analyzers() -> Iterable[SentimentAnalyzer]:
    """Return sentiment analysers (`ml_processing.core.sentiment.TextAnalyzer` or `MarketAnalyzer`).

    :return: analysers; each is then usable by name in ``POST /api/v1/sentiment/analyze`` and live by the
        ``sentiment`` service (``ctx.registries["sentiment"]``). A name already registered is refused and
        the plugin reported broken.
    """
    raise NotImplementedError


# -- phase 3: what runs -----------------------------------------------------------------------------------


@hookspec
def register_actors(settings: Config) -> Iterable[type[Actor]]:
    """Return the actor classes this plugin runs; each becomes the bus service ``Actor.name``.

    :param settings: the whole configuration (read-only), for plugins that register actors conditionally.
    :return: actor classes (subclasses of `ml_processing.core.actor.Actor`), constructed and supervised
        by the kernel, one instance per process.
    """
    raise NotImplementedError


@hookspec
def register_routes() -> Iterable[Route]:
    """Return REST routes (`ml_processing.bus.edge.routes.Route`) that translate to this plugin's ops.

    :return: routes; each is one bus request, documented in the OpenAPI document automatically. A route
        whose method and path are already taken is refused and the plugin reported as broken.
    """
    raise NotImplementedError
