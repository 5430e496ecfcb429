"""Multi-timeframe: incremental resampling equals a reference aggregation, survives restarts, and the
analysis across timeframes reads the live state."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
import talib

from ml_processing.core.config import PluginSection
from ml_processing.core.kernel import Kernel
from tests.conftest import make_config

MINUTE = 60_000
T0 = 1_700_000_000_000 // 86_400_000 * 86_400_000  # a UTC midnight


def minute_bars(n: int, drift: float = 0.0, seed: int = 3) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(drift, 0.001, n)))
    out = []
    for i, c in enumerate(close):
        o = float(close[i - 1]) if i else float(c)
        out.append({"ts": T0 + i * MINUTE, "open": o, "high": max(o, float(c)) * 1.0005,
                    "low": min(o, float(c)) * 0.9995, "close": float(c), "volume": float(rng.uniform(1, 100))})
    return out


def reference(bars: list[dict[str, Any]], period_ms: int) -> list[dict[str, Any]]:
    """Aggregation written independently: group by UTC period, first/max/min/last/sum."""
    groups: dict[int, list[dict[str, Any]]] = {}
    for bar in bars:
        groups.setdefault(bar["ts"] - bar["ts"] % period_ms, []).append(bar)
    return [{"ts": ts, "open": g[0]["open"], "high": max(b["high"] for b in g), "low": min(b["low"] for b in g),
             "close": g[-1]["close"], "volume": sum(b["volume"] for b in g)} for ts, g in sorted(groups.items())]


def config(tmp_path: Path) -> Any:
    return make_config(tmp_path, modules=(), sections={"indicators": PluginSection(True, {
        "live": ["SMA(timeperiod=3)"], "timeframes": ["5m", "15m", "1h"]})})


async def ask(kernel: Kernel, op: str, args: dict[str, Any]) -> Any:
    return await kernel.request("indicators", op, args)


async def test_resampled_bars_and_their_indicators_equal_a_reference(tmp_path: Path) -> None:
    bars = minute_bars(183)  # 3 h and 3 min: the last 5m, 15m and 1h bars are still forming
    kernel = Kernel(config(tmp_path))
    await kernel.start()
    try:
        await ask(kernel, "ingest", {"symbol": "SPX", "timeframe": "1m", "bars": bars})
        actor: Any = kernel.cells["indicators"].instance
        for timeframe, period in (("5m", 5 * MINUTE), ("15m", 15 * MINUTE), ("1h", 60 * MINUTE)):
            expected = reference(bars, period)
            complete, forming = expected[:-1], expected[-1]
            rows = actor.series[("SPX", timeframe)].ring.rows()
            assert rows[:, 0].astype(np.int64).tolist() == [b["ts"] for b in complete], timeframe
            for column, name in enumerate(("open", "high", "low", "close", "volume"), 1):
                np.testing.assert_allclose(rows[:, column], [b[name] for b in complete], rtol=1e-12)
            state = await ask(kernel, "state", {"symbol": "SPX", "timeframe": timeframe})
            sma = talib.SMA(np.array([b["close"] for b in complete]), timeperiod=3)[-1]
            assert state["values"]["SMA_3"] == pytest.approx(sma, rel=1e-12)
            assert state["peek"]["ts"] == forming["ts"]  # the forming higher bar is previewed
            preview = talib.SMA(np.array([b["close"] for b in expected]), timeperiod=3)[-1]
            assert state["peek"]["values"]["SMA_3"] == pytest.approx(preview, rel=1e-12)
    finally:
        await kernel.stop()


async def test_a_restart_in_the_middle_of_a_period_loses_nothing(tmp_path: Path) -> None:
    bars = minute_bars(130)
    first = Kernel(config(tmp_path))
    await first.start()
    try:
        await ask(first, "ingest", {"symbol": "NQ", "timeframe": "1m", "bars": bars[:67]})  # mid 5m/15m/1h
    finally:
        await first.stop()
    second = Kernel(config(tmp_path))
    await second.start()
    try:
        await ask(second, "ingest", {"symbol": "NQ", "timeframe": "1m", "bars": bars[67:]})
        actor: Any = second.cells["indicators"].instance
        for timeframe, period in (("5m", 5 * MINUTE), ("15m", 15 * MINUTE), ("1h", 60 * MINUTE)):
            complete = reference(bars, period)
            complete = complete if bars[-1]["ts"] + MINUTE == complete[-1]["ts"] + period else complete[:-1]
            rows = actor.series[("NQ", timeframe)].ring.rows()
            np.testing.assert_allclose(rows[:, 5], [b["volume"] for b in complete], rtol=1e-12, err_msg=timeframe)
            np.testing.assert_allclose(rows[:, 1], [b["open"] for b in complete], rtol=1e-12, err_msg=timeframe)
    finally:
        await second.stop()


async def test_timeframe_analysis_reads_the_live_state(tmp_path: Path) -> None:
    kernel = Kernel(config(tmp_path))
    await kernel.start()
    try:
        await ask(kernel, "ingest", {"symbol": "UP", "timeframe": "1m", "bars": minute_bars(400, drift=0.0015)})
        async with aiohttp.ClientSession() as http:
            url = f"{kernel.edge_url}/api/v1/analysis/timeframes"
            async with http.get(url, params={"symbol": "UP", "timeframes": "1m,5m"}) as r:
                body = await r.json()
                assert r.status == 200, body
            for timeframe in ("1m", "5m"):
                analysis = body["timeframes"][timeframe]
                assert analysis["ready"] and analysis["trend"]["direction"] == "up"
                assert 0 < analysis["trend"]["strength"] <= 1 and -1 <= analysis["momentum"] <= 1
                assert analysis["volatility"]["regime"] in ("low", "normal", "high")
                assert set(analysis["indicators"]) >= {"EMA_20", "EMA_50", "ADX_14", "RSI_14", "NATR_14"}
            assert body["alignment"]["direction"] == "up" and body["alignment"]["score"] == pytest.approx(1.0)
            async with http.get(url, params={"symbol": "UP"}) as r:  # default: every tracked timeframe
                body = await r.json()
                assert list(body["timeframes"]) == ["1m", "5m", "15m", "1h"]
                assert body["timeframes"]["1h"]["ready"] is False  # 6 bars: not enough, said so
            async with http.get(url, params={"symbol": "NONE"}) as r:
                assert r.status == 404 and "NONE" in (await r.json())["error"]["message"]
            async with http.get(url, params={"symbol": "UP", "timeframes": "1m,3m"}) as r:
                assert r.status == 404 and (await r.json())["error"]["field"] == "timeframes"
            async with http.get(url, params={"symbol": "UP", "timeframes": "1m,tick"}) as r:
                assert r.status == 400 and (await r.json())["error"]["field"] == "timeframes"
            async with http.get(url) as r:
                assert r.status == 400 and (await r.json())["error"]["field"] == "symbol"
            async with http.get(url, params={"symbol": "U.P"}) as r:
                assert r.status == 400 and (await r.json())["error"]["field"] == "symbol"
    finally:
        await kernel.stop()
