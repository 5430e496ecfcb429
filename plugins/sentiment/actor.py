"""The ``sentiment`` service: text and market sentiment on request, news on ``news.SYMBOL``, live scores.

Texts: each is scored by the configured text analyser; per symbol, scores are aggregated over time with an
exponential decay (half-life ``half_life_s``): the aggregate is the decayed sum of scores over the decayed
count, updated in O(1) per text. Each news text updates its symbol and publishes ``sentiment.SYMBOL``.
Market: from posted OHLCV columns, or (``symbol`` + ``timeframe``) from the bars the live market state
holds, with breadth across every series the service tracks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ml_processing.bus import topics
from ml_processing.sdk import FIELDS, Actor, BadRequest, MlpError, NoArgs, get_logger, op
from ml_processing.sdk.sentiment import MarketAnalyzer, TextAnalyzer
from ml_processing.sdk.services.indicators import HeldBars, Indicators

from .market import MIN_BARS, above_average, combine
from .ops import (
    MAX_TEXT_CHARS,
    AnalyzeArgs,
    AnalyzeReply,
    AnalyzersReply,
    MarketSentiment,
    NewsSentiment,
    SymbolArgs,
    SymbolSentiment,
)
from .text import label

log = get_logger(__name__)

#: Texts scored on the event loop; more go to the thread pool.
INLINE_TEXTS = 500
#: Bars scored on the event loop (a few TA-Lib passes, well under a millisecond); more go to the thread pool.
INLINE_BARS = 20_000
#: Bars of a series read for its live market sentiment, and for its place in the breadth (its SMA(50)).
LIVE_BARS, BREADTH_BARS = 200, 50


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
        if self.breadth_refresh_s < 0:
            raise ValueError("breadth_refresh_s: must not be negative")


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

    def value(self, now: float, half_life: float) -> NewsSentiment:
        decay = 0.5 ** ((now - self.at) / half_life)
        return {"score": round(self.total / self.weight, 4) if self.weight else 0.0, "texts": self.texts,
                "effective_texts": round(self.weight * decay, 3)}


class Sentiment(Actor):
    """Ops: ``analyzers``, ``analyze``, ``symbol``."""

    name = "sentiment"

    async def on_start(self) -> None:
        self.text = self._analyzer(self.config.text, TextAnalyzer)
        self.market = self._analyzer(self.config.market, MarketAnalyzer)
        self.indicators = Indicators(self.request)  # the live market state, asked only once bars arrive
        self.aggregates: dict[str, _Aggregate] = {}
        self.scored = 0
        self.breadth: dict[str, tuple[float, float | None]] = {}  # timeframe -> (computed at, value)
        self.busy: set[tuple[str, str]] = set()  # series whose market sentiment is being computed
        self.subscribe(topics.NEWS + ".", self.on_news)
        if self.config.live_market:
            self.subscribe(topics.INDICATOR + ".", self.on_indicator)

    # -- a symbol's news sentiment moving between processes (`ml_processing.core.shards`) ------------------

    def shard_symbols(self) -> set[str]:
        return set(self.aggregates)

    def shard_state(self, symbols: Sequence[str]) -> dict[str, list[float]]:
        return {s: [a.total, a.weight, a.at, a.texts] for s in symbols if (a := self.aggregates.get(s)) is not None}

    def shard_drop(self, symbols: Sequence[str]) -> None:
        for symbol in symbols:
            self.aggregates.pop(symbol, None)

    async def shard_load(self, states: Mapping[str, Any]) -> None:
        for symbol, state in states.items():
            self.aggregates.pop(symbol, None)
            if state is not None:
                total, weight, at, texts = state
                self.aggregates[symbol] = _Aggregate(float(total), float(weight), float(at), int(texts))

    def _analyzer(self, name: str, kind: type) -> Any:
        analyzer = self.registries.get("sentiment", {}).get(name)
        if not isinstance(analyzer, kind):
            raise RuntimeError(f"[plugins.sentiment]: no {kind.__name__} named {name!r} is registered")
        return analyzer

    @op(NoArgs, reply=AnalyzersReply, role="read")
    def handle_analyzers(self, args: NoArgs) -> AnalyzersReply:
        """Every registered sentiment analyser, and the configured text and market analysers."""
        return {"analyzers": [a.describe() for a in self.registries.get("sentiment", {}).values()],
                "text": self.config.text, "market": self.config.market}

    @op(AnalyzeArgs, reply=AnalyzeReply, role="compute", spread=True)
    async def handle_analyze(self, args: AnalyzeArgs) -> AnalyzeReply:
        """Score texts, and/or the market of posted bars or of a tracked series, in [-1, 1]."""
        out: AnalyzeReply = {}
        if args.texts is not None:
            analyzer = self.text if args.analyzer is None else self._named_text(args.analyzer)
            texts = args.texts
            scores = analyzer.score(texts) if len(texts) <= INLINE_TEXTS else \
                await self.run_in_thread(analyzer.score, texts)
            self.scored += len(texts)
            out["texts"] = {"analyzer": analyzer.name, "scores": scores, "labels": [label(s) for s in scores],
                            "mean": round(float(np.mean(scores)), 4) if scores else None}
        if args.bars is not None:
            out["market"] = {**await self._score(args.bars.columns()), "source": "bars"}  # type: ignore[typeddict-item]
        elif args.symbol is not None and args.timeframe is not None:
            out["market"] = await self._series_market(args.symbol, args.timeframe)
        return out

    def _named_text(self, name: str) -> TextAnalyzer:
        analyzer = self.registries.get("sentiment", {}).get(name)
        if not isinstance(analyzer, TextAnalyzer):
            raise BadRequest(f"no text analyser {name!r:.40} (op analyzers lists them)", field="analyzer")
        return analyzer

    async def _score(self, data: Mapping[str, np.ndarray], breadth: float | None = None) -> dict[str, Any]:
        """The market analyser's score of `data` (with `breadth` when the analyser reports its components),
        on the thread pool above `INLINE_BARS` bars."""
        if len(data["close"]) <= INLINE_BARS:
            return self._scored(data, breadth)
        return await self.run_in_thread(self._scored, data, breadth)

    def _scored(self, data: Mapping[str, np.ndarray], breadth: float | None) -> dict[str, Any]:
        components = getattr(self.market, "components", None)
        if components is None:  # another plugin's analyser: its own score, without breadth
            result: dict[str, Any] = self.market.score(data)
            return result
        parts = components(data)
        if breadth is not None:
            parts["breadth"] = breadth
        return combine(parts)

    async def _series_market(self, symbol: str, timeframe: str) -> MarketSentiment:
        held = await self.indicators.bars(symbol, timeframe)
        result = await self._score(_ohlcv(held), await self._breadth(timeframe))
        text = self.aggregates.get(symbol)
        return {**result, "source": f"{symbol} {timeframe}",  # type: ignore[typeddict-item]
                "news": text.value(self.clock.time(), self.config.half_life_s) if text else None}

    def on_indicator(self, topic: str, body: Any) -> None:
        """After each committed bar (the indicators' update): the series' market sentiment, published."""
        parsed = topics.parse(topic)
        key = (parsed.symbol or "", parsed.timeframe or "")
        if parsed.symbol is None or parsed.timeframe is None or key in self.busy:
            return  # one computation per series at a time: a burst skips bars, never queues them
        self.busy.add(key)
        self.spawn(self._publish_market(*key, body.get("ts") if isinstance(body, Mapping) else None), "market",
                   for_message=True)

    async def _publish_market(self, symbol: str, timeframe: str, ts: Any) -> None:
        try:
            held = await self.indicators.bars(symbol, timeframe, limit=LIVE_BARS)
            if len(held["close"]) < MIN_BARS:
                return
            now = self.clock.monotonic()
            last = self.breadth.get(timeframe)
            if last is None or now - last[0] > self.config.breadth_refresh_s:
                self.breadth[timeframe] = last = (now, await self._breadth(timeframe))
            result = self._scored(_ohlcv(held), last[1])
            self.publish(topics.sentiment(symbol), {"symbol": symbol, "timeframe": timeframe, "ts": ts,
                                                    "kind": "market", **result})
        except MlpError as exc:
            log.warning("market_sentiment_failed", symbol=symbol, timeframe=timeframe, error=exc.message)
        finally:
            self.busy.discard((symbol, timeframe))

    async def _breadth(self, timeframe: str) -> float | None:
        """2 x (share of tracked series of `timeframe` above their SMA(50)) - 1; None below two series."""
        try:
            series = [s for s in await self.indicators.series() if s["timeframe"] == timeframe]
        except MlpError as exc:
            log.info("breadth_unavailable", error=exc.message)
            return None
        above = []
        for item in series:
            held = await self.indicators.bars(item["symbol"], timeframe, limit=BREADTH_BARS)
            flag = above_average(np.asarray(held["close"], dtype=np.float64))
            if flag is not None:
                above.append(flag)
        return 2 * sum(above) / len(above) - 1 if len(above) >= 2 else None

    def on_news(self, topic: str, body: Any) -> None:
        """``news.SYMBOL``: ``{"text", "ts"?}`` (ts in epoch ms; default now)."""
        parsed = topics.parse(topic)
        text = body.get("text") if isinstance(body, Mapping) else None
        if parsed.symbol is None or not isinstance(text, str):
            raise BadRequest("news is {text, ts?} on news.SYMBOL", field="news")
        if len(text) > MAX_TEXT_CHARS:
            raise BadRequest(f"a news text is at most {MAX_TEXT_CHARS:,} characters", field="text")
        ts = body.get("ts")
        now = ts / 1000 if isinstance(ts, (int, float)) and not isinstance(ts, bool) else self.clock.time()
        (score,) = self.text.score([text])
        self.scored += 1
        aggregate = self.aggregates.setdefault(parsed.symbol, _Aggregate())
        aggregate.add(score, now, self.config.half_life_s)
        self.publish(topics.sentiment(parsed.symbol), {
            "symbol": parsed.symbol, "ts": int(now * 1000), "kind": "news", "text_score": round(score, 4),
            "label": label(score),
            "analyzer": self.text.name, **aggregate.value(now, self.config.half_life_s)})

    @op(SymbolArgs, reply=SymbolSentiment, role="read", shard="symbol")
    def handle_symbol(self, args: SymbolArgs) -> SymbolSentiment:
        """The aggregated news sentiment of a symbol now."""
        aggregate = self.aggregates.get(args.symbol)
        if aggregate is None:
            raise BadRequest(f"no news seen for {args.symbol!r:.40}", field="symbol")
        return {"symbol": args.symbol, **aggregate.value(self.clock.time(), self.config.half_life_s)}

    def metrics(self) -> dict[str, Any]:
        return {"sentiment": {"texts_scored": self.scored, "symbols": len(self.aggregates)}}


def _ohlcv(held: HeldBars) -> dict[str, np.ndarray]:
    """The OHLCV columns of held bars, as an analyser reads them."""
    return {name: held[name] for name in FIELDS}  # type: ignore[literal-required]
