"""The ``sentiment`` service: text and market sentiment on request, news on ``news.SYMBOL``, live scores.

Texts: each is scored by the configured text analyser; per symbol, scores are aggregated over time with an
exponential decay (half-life ``half_life_s``): the aggregate is the decayed sum of scores over the decayed
count, updated in O(1) per text. Each news text updates its symbol and publishes ``sentiment.SYMBOL``.
Market: from posted OHLCV columns, or (``symbol`` + ``timeframe``) from the bars the live market state
holds, with breadth across every series the service tracks.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ml_processing.bus import topics
from ml_processing.sdk import Actor, BadRequest, MlpError, TooLarge, get_logger
from ml_processing.sdk.bars import read_columns
from ml_processing.sdk.sentiment import MarketAnalyzer, TextAnalyzer

from .market import MIN_BARS, above_average, combine
from .text import label

log = get_logger(__name__)

MAX_TEXTS = 10_000
MAX_TEXT_CHARS = 10_000


@dataclass(frozen=True)
class SentimentConfig:
    """``[plugins.sentiment]``."""

    text: str = "vader_finance"  # the text analyser (docs/SENTIMENT.md: chosen by accuracy)
    market: str = "price_volume"  # the market analyser
    half_life_s: float = 21_600.0  # per-symbol text sentiment: a text's weight halves every 6 hours
    live_market: bool = True  # publish market sentiment on sentiment.SYMBOL after each committed bar
    breadth_refresh_s: float = 5.0  # breadth across tracked series is recomputed at most this often

    def __post_init__(self) -> None:
        if self.half_life_s <= 0:
            raise ValueError("half_life_s: must be positive")


@dataclass
class _Aggregate:
    """Decayed sum and count of one symbol's text scores."""

    total: float = 0.0
    weight: float = 0.0
    at: float = 0.0
    texts: int = 0

    def add(self, score: float, now: float, half_life: float) -> None:
        decay = 0.5 ** ((now - self.at) / half_life) if self.weight else 0.0
        self.total = self.total * decay + score
        self.weight = self.weight * decay + 1.0
        self.at = now
        self.texts += 1

    def value(self, now: float, half_life: float) -> dict[str, Any]:
        decay = 0.5 ** ((now - self.at) / half_life)
        return {"score": round(self.total / self.weight, 4) if self.weight else 0.0, "texts": self.texts,
                "effective_texts": round(self.weight * decay, 3)}


class Sentiment(Actor):
    """Ops: ``analyzers``, ``analyze``, ``symbol``."""

    name = "sentiment"

    async def on_start(self) -> None:
        self.text = self._analyzer(self.config.text, TextAnalyzer)
        self.market = self._analyzer(self.config.market, MarketAnalyzer)
        self.aggregates: dict[str, _Aggregate] = {}
        self.scored = 0
        self.breadth: dict[str, tuple[float, float | None]] = {}  # timeframe -> (computed at, value)
        self.busy: set[tuple[str, str]] = set()  # series whose market sentiment is being computed
        self.subscribe(topics.NEWS + ".", self.on_news)
        if self.config.live_market:
            self.subscribe(topics.INDICATOR + ".", self.on_indicator)

    def _analyzer(self, name: str, kind: type) -> Any:
        analyzer = self.registries.get("sentiment", {}).get(name)
        if not isinstance(analyzer, kind):
            raise RuntimeError(f"[plugins.sentiment]: no {kind.__name__} named {name!r} is registered")
        return analyzer

    def handle_analyzers(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"analyzers": [a.describe() for a in self.registries.get("sentiment", {}).values()],
                "text": self.config.text, "market": self.config.market}

    async def handle_analyze(self, args: dict[str, Any]) -> dict[str, Any]:
        """``{texts?: [...], analyzer?, bars?: {OHLCV columns}, symbol?, timeframe?}``: text scores, market
        sentiment of the bars (or of a tracked series), or both."""
        out: dict[str, Any] = {}
        if "texts" in args:
            analyzer = self.text if args.get("analyzer") is None else self._named_text(args["analyzer"])
            texts = _texts(args["texts"])
            scores = analyzer.score(texts) if len(texts) < 500 else await self.run_in_thread(analyzer.score, texts)
            self.scored += len(texts)
            out["texts"] = {"analyzer": analyzer.name, "scores": scores, "labels": [label(s) for s in scores],
                            "mean": round(float(np.mean(scores)), 4) if scores else None}
        if "bars" in args or "symbol" in args:
            out["market"] = await self._market(args)
        if not out:
            raise BadRequest("send 'texts', 'bars' (OHLCV columns), or 'symbol' and 'timeframe'", field="texts")
        return out

    def _named_text(self, name: Any) -> TextAnalyzer:
        analyzer = self.registries.get("sentiment", {}).get(name)
        if not isinstance(analyzer, TextAnalyzer):
            raise BadRequest(f"no text analyser {name!r:.40} (op analyzers lists them)", field="analyzer")
        return analyzer

    async def _market(self, args: Mapping[str, Any]) -> dict[str, Any]:
        if "bars" in args:
            data = _columns(args["bars"])
            result = self.market.score(data)
            return {**result, "source": "bars"}
        symbol, timeframe = args.get("symbol"), args.get("timeframe")
        if not isinstance(symbol, str) or not isinstance(timeframe, str):
            raise BadRequest("market sentiment of a series needs 'symbol' and 'timeframe'", field="symbol")
        held = await self.request("indicators", "bars", {"symbol": symbol, "timeframe": timeframe})
        components = self.market.components(held) if hasattr(self.market, "components") else {}
        breadth = await self._breadth(timeframe)
        if breadth is not None:
            components["breadth"] = breadth
        result = combine(components) if components else self.market.score(held)
        text = self.aggregates.get(symbol)
        return {**result, "source": f"{symbol} {timeframe}",
                "news": text.value(time.time(), self.config.half_life_s) if text else None}

    def on_indicator(self, topic: str, body: Any) -> None:
        """After each committed bar (the indicators' update): the series' market sentiment, published."""
        parsed = topics.parse(topic)
        key = (parsed.symbol or "", parsed.timeframe or "")
        if parsed.symbol is None or parsed.timeframe is None or key in self.busy:
            return  # one computation per series at a time: a burst skips bars, never queues them
        self.busy.add(key)
        self.spawn(self._publish_market(*key, body.get("ts") if isinstance(body, Mapping) else None), "market")

    async def _publish_market(self, symbol: str, timeframe: str, ts: Any) -> None:
        try:
            held = await self.request("indicators", "bars", {"symbol": symbol, "timeframe": timeframe,
                                                              "limit": 200})
            if len(held["close"]) < MIN_BARS:
                return
            components = self.market.components(held) if hasattr(self.market, "components") else {}
            now = time.monotonic()
            last = self.breadth.get(timeframe)
            if last is None or now - last[0] > self.config.breadth_refresh_s:
                self.breadth[timeframe] = last = (now, await self._breadth(timeframe))
            if last[1] is not None:
                components["breadth"] = last[1]
            result = combine(components) if components else self.market.score(held)
            self.publish(topics.sentiment(symbol), {"symbol": symbol, "timeframe": timeframe, "ts": ts,
                                                    "kind": "market", **result})
        except MlpError as exc:
            log.warning("market_sentiment_failed", symbol=symbol, timeframe=timeframe, error=exc.message)
        finally:
            self.busy.discard((symbol, timeframe))

    async def _breadth(self, timeframe: str) -> float | None:
        """2 x (share of tracked series of `timeframe` above their SMA(50)) - 1; None below two series."""
        try:
            series = [s for s in await self.request("indicators", "series") if s["timeframe"] == timeframe]
        except MlpError as exc:
            log.info("breadth_unavailable", error=exc.message)
            return None
        above = []
        for item in series:
            held = await self.request("indicators", "bars", {"symbol": item["symbol"], "timeframe": timeframe})
            flag = above_average(np.asarray(held["close"], dtype=np.float64))
            if flag is not None:
                above.append(flag)
        return 2 * sum(above) / len(above) - 1 if len(above) >= 2 else None

    def on_news(self, topic: str, body: Any) -> None:
        """``news.SYMBOL``: ``{"text", "ts"?}`` (ts in epoch ms; default now)."""
        parsed = topics.parse(topic)
        if parsed.symbol is None or not isinstance(body, Mapping):
            raise BadRequest("news is {text, ts?} on news.SYMBOL", field="news")
        (text,) = _texts([body.get("text")])
        ts = body.get("ts")
        now = ts / 1000 if isinstance(ts, (int, float)) and not isinstance(ts, bool) else time.time()
        (score,) = self.text.score([text])
        self.scored += 1
        aggregate = self.aggregates.setdefault(parsed.symbol, _Aggregate())
        aggregate.add(score, now, self.config.half_life_s)
        self.publish(topics.sentiment(parsed.symbol), {
            "symbol": parsed.symbol, "ts": int(now * 1000), "kind": "news", "text_score": round(score, 4),
            "label": label(score),
            "analyzer": self.text.name, **aggregate.value(now, self.config.half_life_s)})

    def handle_symbol(self, args: dict[str, Any]) -> dict[str, Any]:
        """The aggregated text sentiment of ``symbol`` now."""
        symbol = args.get("symbol")
        aggregate = self.aggregates.get(symbol) if isinstance(symbol, str) else None
        if aggregate is None:
            raise BadRequest(f"no news seen for {symbol!r:.40}", field="symbol")
        return {"symbol": symbol, **aggregate.value(time.time(), self.config.half_life_s)}

    def metrics(self) -> dict[str, Any]:
        return {"sentiment": {"texts_scored": self.scored, "symbols": len(self.aggregates)}}


def _texts(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise BadRequest("'texts' must be a list of strings", field="texts")
    if len(value) > MAX_TEXTS:
        raise TooLarge(f"{len(value):,} texts; at most {MAX_TEXTS:,} per request", field="texts")
    too_long = next((i for i, t in enumerate(value) if len(t) > MAX_TEXT_CHARS), None)
    if too_long is not None:
        raise BadRequest(f"texts[{too_long}] is longer than {MAX_TEXT_CHARS:,} characters", field=f"texts[{too_long}]")
    return value


def _columns(bars: Any) -> dict[str, np.ndarray]:
    if not isinstance(bars, Mapping):
        raise BadRequest("'bars' must be a map of OHLCV columns", field="bars")
    return read_columns(bars, ("high", "low", "close", "volume", "open"), optional=("open",), prefix="bars.")[0]
