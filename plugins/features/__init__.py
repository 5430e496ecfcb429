"""Features: named, versioned pipelines from raw bars to model-ready rows (docs/FEATURES.md).

Registered exactly as a third-party plugin would be: ``register_feature_extractors`` fills the shared
extractor registry (the contract is `ml_processing.sdk.feature.FeatureExtractor`), ``register_actors`` runs
the ``features`` service, ``register_routes`` adds the REST routes. Indicators come from the shared
indicator registry, never from the indicators plugin itself.
"""

from __future__ import annotations

from ml_processing.sdk import Actor, Config, Route, hookimpl
from ml_processing.sdk.feature import FeatureExtractor

from .actor import Features, FeaturesConfig
from .extractors import builtin_extractors


@hookimpl
def register_config_schemas() -> dict[str, type]:
    return {"features": FeaturesConfig}


@hookimpl
def register_feature_extractors() -> list[FeatureExtractor]:
    return builtin_extractors()


@hookimpl
def register_actors(settings: Config) -> list[type[Actor]]:
    return [Features]


@hookimpl
def register_routes() -> list[Route]:
    """The REST routes; their bodies, query parameters and replies come from the ops' declarations."""
    return [
        Route("POST", "/api/v1/features/extract", "features", "extract", "Extract features from OHLCV", "features"),
        Route("POST", "/api/v1/features/transform", "features", "transform", "Transform feature rows", "features"),
        Route("GET", "/api/v1/features/pipeline", "features", "pipelines",
              "Feature pipelines: versions, steps, features, fitted", "features"),
        Route("POST", "/api/v1/features/pipeline", "features", "create",
              "Create a pipeline version from steps (the latest is returned when the steps are the same)", "features"),
        Route("POST", "/api/v1/features/fit", "features", "fit",
              "Fit a pipeline's transforms on OHLCV columns or feature rows: the fitted pipeline is a new version",
              "features"),
        Route("DELETE", "/api/v1/features/pipeline", "features", "delete",
              "Delete a pipeline (every version) or one version", "features"),
        Route("GET", "/api/v1/features/extractors", "features", "extractors",
              "Registered feature extractors and transforms", "features"),
        Route("POST", "/api/v1/features/stream", "features", "stream",
              "Push bars through a series' live pipeline state: one feature row per committed bar", "features"),
        Route("GET", "/api/v1/features/row", "features", "row",
              "The latest live feature row of a symbol/timeframe", "features"),
    ]
