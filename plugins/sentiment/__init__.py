"""Sentiment: finance-aware text sentiment and market sentiment from price and volume (docs/SENTIMENT.md).

Registered exactly as a third-party plugin would be: ``register_sentiment_analyzers`` fills the shared
registry (contracts in `ml_processing.sdk.sentiment`), ``register_actors`` runs the ``sentiment`` service
behind ``POST /api/v1/sentiment/analyze``. Market state comes over the bus (service ``indicators``).
"""

from __future__ import annotations

from ml_processing.sdk import Actor, Config, Route, hookimpl
from ml_processing.sdk.sentiment import SentimentAnalyzer

from .actor import Sentiment, SentimentConfig
from .market import PriceVolume
from .text import text_analyzers


@hookimpl
def register_config_schemas() -> dict[str, type]:
    return {"sentiment": SentimentConfig}


@hookimpl
def register_sentiment_analyzers() -> list[SentimentAnalyzer]:
    return [*text_analyzers(), PriceVolume()]


@hookimpl
def register_actors(settings: Config) -> list[type[Actor]]:
    return [Sentiment]


@hookimpl
def register_routes() -> list[Route]:
    return [
        Route("POST", "/api/v1/sentiment/analyze", "sentiment", "analyze", "Market and text sentiment", "sentiment"),
        Route("GET", "/api/v1/sentiment/symbol", "sentiment", "symbol", "A symbol's aggregated news sentiment",
              "sentiment", query=(("symbol", "string", "symbol"),)),
        Route("GET", "/api/v1/sentiment/analyzers", "sentiment", "analyzers", "Registered sentiment analysers",
              "sentiment"),
    ]

