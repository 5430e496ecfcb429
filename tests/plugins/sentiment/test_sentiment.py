"""Sentiment: text analysers against a labelled sample (the default is the more accurate), negation, market
sentiment components, news over real pub/sub aggregated with decay, REST, bad input, a third party's
analyser."""

from __future__ import annotations

import csv
import textwrap
from pathlib import Path
from typing import Any

import aiohttp
import msgpack
import numpy as np
import pytest
import zmq
import zmq.asyncio

from ml_processing.core.config import PluginSection
from ml_processing.core.errors import BadRequest
from ml_processing.core.kernel import Kernel
from ml_processing.plugins.sentiment.actor import Sentiment, SentimentConfig, _Aggregate
from ml_processing.plugins.sentiment.market import PriceVolume
from ml_processing.plugins.sentiment.text import LoughranMcDonald, VaderFinance, label, text_analyzers
from tests.conftest import make_config
from tests.support.feed import pubsub
from tests.support.kernels import running
from tests.support.series import ohlcv
from tests.support.thirdparty import plugin_module

SAMPLE = [(row["label"], row["text"]) for row in
          csv.DictReader((Path(__file__).resolve().parents[2] / "data" / "headlines.csv").open(encoding="utf-8"))]


def accuracy(analyzer: Any) -> float:
    scores = analyzer.score([text for _, text in SAMPLE])
    return sum(label(s) == truth for s, (truth, _) in zip(scores, SAMPLE, strict=True)) / len(SAMPLE)


def test_the_default_text_analyzer_is_the_more_accurate_on_the_labelled_sample() -> None:
    measured = {a.name: accuracy(a) for a in text_analyzers()}
    assert len(SAMPLE) == 60 and {t for t, _ in SAMPLE} == {"positive", "negative", "neutral"}
    assert max(measured, key=measured.get) == SentimentConfig().text  # type: ignore[arg-type]
    assert measured["vader_finance"] >= 0.85 and measured["loughran_mcdonald"] >= 0.6  # docs/SENTIMENT.md


def test_finance_words_and_negation() -> None:
    vader, lm = VaderFinance(), LoughranMcDonald()
    (plunge,) = vader.score(["Shares plunge after profit warning"])
    assert plunge < -0.3  # plain VADER reads this as positive ("profit")
    good, negated = lm.score(["The results were strong and profitable", "The results were not strong"])
    assert good > 0 > negated
    assert lm.score(["The company held a meeting"]) == [0.0]


def test_decayed_aggregate_weighs_recent_news_more() -> None:
    aggregate = _Aggregate()
    aggregate.add(-1.0, 0.0, 3600.0)
    aggregate.add(1.0, 3600.0, 3600.0)  # an hour later: the first text counts half
    assert aggregate.value(3600.0, 3600.0)["score"] == pytest.approx((1.0 - 0.5) / 1.5, abs=1e-4)


def test_market_components_follow_the_market() -> None:
    up = ohlcv(300, seed=3)
    trend = np.linspace(0, 1.5, 300)  # +-50% over the last 100 bars: far beyond the noise
    rising = {k: (v * np.exp(trend) if k in ("open", "high", "low", "close") else v) for k, v in up.items()}
    falling = {k: (v * np.exp(-trend) if k in ("open", "high", "low", "close") else v) for k, v in up.items()}
    analyzer = PriceVolume()
    bull, bear = analyzer.score(rising), analyzer.score(falling)
    assert bull["score"] > 0 > bear["score"]
    assert bull["components"]["trend"] > 0 > bear["components"]["trend"]
    assert sum(bull["weights"].values()) == pytest.approx(1.0) and "breadth" not in bull["weights"]
    assert all(-1 <= v <= 1 for v in bull["components"].values())
    with pytest.raises(BadRequest, match="at least 60"):
        analyzer.score({k: v[:30] for k, v in up.items()})


async def test_news_over_pubsub_rest_analysis_and_market_state(tmp_path: Path) -> None:
    # breadth refreshed on every bar: the first live scores (while the first symbol was ingested) had none
    sections = {"sentiment": PluginSection(True, {"breadth_refresh_s": 0.0})}
    kernel = Kernel(make_config(tmp_path, modules=(), sections=sections))
    await kernel.start()
    try:
        async with pubsub(kernel, b"sentiment.ACME") as (pub, sub):
            await news_rest_and_market(kernel, pub, sub)
    finally:
        await kernel.stop()


async def news_rest_and_market(kernel: Kernel, pub: zmq.asyncio.Socket, sub: zmq.asyncio.Socket) -> None:
    for text in ("Acme shares plunge after profit warning", "Acme beats estimates and raises guidance"):
        await pub.send_multipart([b"news.ACME", msgpack.packb({"text": text, "ts": 1_700_000_000_000})])
    received = []
    while len(received) < 2 and await sub.poll(3000):
        message = msgpack.unpackb((await sub.recv_multipart())[1])
        if message["kind"] == "news":
            received.append(message)
    assert [r["label"] for r in received] == ["negative", "positive"] and received[1]["texts"] == 2
    assert received[1]["score"] == pytest.approx((received[0]["text_score"] + received[1]["text_score"]) / 2,
                                                 abs=1e-4)  # same timestamp: no decay between them
    for symbol, seed in (("ACME", 1), ("INIT", 2), ("XYZ", 3)):
        data = ohlcv(120, seed)
        bars = [{"ts": 60_000 * (i + 1), **{c: float(data[c][i]) for c in ("open", "high", "low", "close",
                                                                            "volume")}} for i in range(120)]
        await kernel.request("indicators", "ingest", {"symbol": symbol, "timeframe": "1m", "bars": bars})
    async with aiohttp.ClientSession() as http:
        body = {"texts": ["Bank reports record profit", "Bank fined over fraud"], "symbol": "ACME",
                "timeframe": "1m"}
        async with http.post(kernel.edge_url + "/api/v1/sentiment/analyze", json=body) as resp:
            out = await resp.json()
        assert resp.status == 200, out
        assert out["texts"]["labels"] == ["positive", "negative"] and out["texts"]["analyzer"] == "vader_finance"
        market = out["market"]
        assert set(market["components"]) == {"trend", "momentum", "volatility", "volume", "breadth"}
        assert -1 <= market["score"] <= 1 and market["news"]["texts"] == 2
        columns = {c: [1.0] * 80 for c in ("open", "high", "low", "close", "volume")}
        for bad, field in (({"texts": "hello"}, "texts"), ({"texts": ["x"], "analyzer": "nope"}, "analyzer"),
                           ({"bars": {"close": [1.0]}}, "bars.high"), ({}, "texts"),
                           ({"texts": [1]}, "texts[0]"), ({"texts": ["x" * 10_001]}, "texts[0]"),
                           ({"bars": {**columns, "close": [1.0, True, *[1.0] * 78]}}, "bars.close[1]"),
                           ({"bars": {**columns, "volume": [-1.0] * 80}}, "bars.volume[0]"),
                           ({"bars": {**columns, "high": []}}, "bars.high"),
                           ({"bars": {**columns, "low": [1.0] * 79}}, "bars.low"),
                           ({"bars": {**columns, "vwap": [1.0] * 80}}, "bars.vwap"),
                           ({"symbol": "ACME"}, "timeframe"), ({"symbol": "ACME", "timeframe": "1x"}, "timeframe"),
                           ({"symbol": "AC.ME", "timeframe": "1m"}, "symbol"), ({"texts": ["x"], "mood": 1}, "mood")):
            async with http.post(kernel.edge_url + "/api/v1/sentiment/analyze", json=bad) as resp:
                assert resp.status == 400, (bad, await resp.text())
                assert (await resp.json())["error"]["field"] == field, bad
        async with http.post(kernel.edge_url + "/api/v1/sentiment/analyze", json={"texts": ["x"] * 10_001}) as resp:
            assert resp.status == 413 and (await resp.json())["error"]["field"] == "texts"
        async with http.post(kernel.edge_url + "/api/v1/sentiment/analyze", json={"bars": columns}) as resp:
            posted = await resp.json()
        assert resp.status == 200 and posted["market"]["source"] == "bars" and "news" not in posted["market"]
        async with http.get(kernel.edge_url + "/api/v1/sentiment/symbol", params={"symbol": "NONE"}) as resp:
            assert resp.status == 400 and (await resp.json())["error"]["field"] == "symbol"
        async with http.get(kernel.edge_url + "/api/v1/sentiment/symbol", params={"symbol": "ACME"}) as resp:
            assert (await resp.json())["texts"] == 2
    bar = {"ts": 60_000 * 500, "open": 100.0, "high": 101.0, "low": 99.0, "close": 100.5, "volume": 10.0}
    await pub.send_multipart([b"bar.ACME.1m", msgpack.packb(bar)])  # committed -> live market sentiment
    live = None
    while live is None and await sub.poll(3000):  # earlier bars' scores (from the ingest) come first
        message = msgpack.unpackb((await sub.recv_multipart())[1])
        live = message if message["kind"] == "market" and message["ts"] == bar["ts"] else None
    assert live is not None and "breadth" in live["components"] and -1 <= live["score"] <= 1


def test_every_op_is_declared_with_its_role() -> None:
    declared = {name: spec.role for name, spec in Sentiment.declarations().items() if spec.args is not None}
    assert declared == {"analyze": "compute", "analyzers": "read", "symbol": "read"}


THIRD_PARTY = textwrap.dedent('''
    from ml_processing.sdk import hookimpl
    from ml_processing.sdk.sentiment import TextAnalyzer

    class Shouting(TextAnalyzer):
        name = "shouting"

        def score(self, texts):
            return [1.0 if t.isupper() else -1.0 for t in texts]

    @hookimpl
    def register_sentiment_analyzers():
        return [Shouting()]
''')


async def test_a_third_party_analyzer_is_usable_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with plugin_module(monkeypatch, tmp_path / "plugins", "acme_sentiment", THIRD_PARTY):
        async with running(make_config(tmp_path, modules=("acme_sentiment",))) as kernel:
            out = await kernel.request("sentiment", "analyze", {"texts": ["BUY NOW", "meh"], "analyzer": "shouting"})
            assert out["texts"]["scores"] == [1.0, -1.0]
            names = {a["name"] for a in (await kernel.request("sentiment", "analyzers", {}))["analyzers"]}
            assert names == {"vader_finance", "loughran_mcdonald", "price_volume", "shouting"}
