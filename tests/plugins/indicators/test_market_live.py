"""Live market state: bars in over pub/sub and REST, indicator updates out, the bar rule, restarts."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import msgpack
import numpy as np
import pytest
import talib
import zmq
import zmq.asyncio

from ml_processing.bus import codec, mdp
from ml_processing.core.config import PluginSection
from ml_processing.core.errors import BadRequest, NotFound, TooLarge
from ml_processing.core.kernel import Kernel
from ml_processing.plugins.indicators import builtin_indicators, persist
from ml_processing.plugins.indicators.actor import IndicatorsConfig
from ml_processing.plugins.indicators.market import Live, Series
from ml_processing.sdk.bars import check_bar
from ml_processing.sdk.synthetic import market, rows
from ml_processing.sdk.timeframes import to_ms
from tests.conftest import make_config
from tests.support.feed import pubsub
from tests.support.kernels import running
from tests.support.series import ohlcv
from tests.support.waiting import wait_until

LIVE = {"live": ["SMA(timeperiod=5)", "RSI(timeperiod=14)", "BBANDS(timeperiod=10)"], "buffer": 500}


def bars(n: int, seed: int = 11) -> list[dict[str, Any]]:
    data = ohlcv(n, seed)
    return [{"ts": 60_000 * (i + 1), **{c: float(data[c][i]) for c in ("open", "high", "low", "close", "volume")}}
            for i in range(n)]


def closes(items: list[dict[str, Any]]) -> np.ndarray:
    return np.array([b["close"] for b in items])


def config(tmp_path: Path, **options: Any) -> Any:
    return make_config(tmp_path, modules=(), sections={"indicators": PluginSection(True, {**LIVE, **options})})


@pytest.fixture(params=["loop", "thread"])
async def live(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Kernel]:
    """The service on one process, its pub/sub proxy on the event loop or on a thread (``[bus] proxy``)."""
    base = config(tmp_path)
    async with running(dataclasses.replace(base, bus=dataclasses.replace(base.bus, proxy=request.param))) as kernel:
        assert kernel.proxy_status()["runs"] == request.param
        yield kernel


async def ask(kernel: Kernel, op: str, args: dict[str, Any]) -> Any:
    return await kernel.request("indicators", op, args)


async def test_bars_published_in_become_indicator_updates_out(live: Kernel) -> None:
    ctx = zmq.asyncio.Context()
    pub, sub = ctx.socket(zmq.PUB), ctx.socket(zmq.SUB)
    try:
        pub.connect(live.endpoints["pub_in"][0])
        sub.connect(live.endpoints["pub_out"][0])
        sub.setsockopt(zmq.SUBSCRIBE, b"indicator.AAPL.1m")
        series = bars(40)
        # slow joiner: publish a stale probe until the first update round-trips, bounded
        probe = msgpack.packb({**series[0]})
        for _ in range(100):
            await pub.send_multipart([b"bar.AAPL.1m", probe])
            if await sub.poll(50):
                break
        else:
            pytest.fail("no indicator update came back within 5 s")
        updates = [msgpack.unpackb((await sub.recv_multipart())[1])]
        for bar in series[1:]:
            await pub.send_multipart([b"bar.AAPL.1m", msgpack.packb(bar)])
        while len(updates) < len(series):
            assert await sub.poll(3000), f"only {len(updates)} updates arrived"
            updates.append(msgpack.unpackb((await sub.recv_multipart())[1]))
    finally:
        pub.close(0)
        sub.close(0)
        ctx.term()
    assert [u["ts"] for u in updates] == [b["ts"] for b in series]
    sma = talib.SMA(closes(series), timeperiod=5)
    upper = talib.BBANDS(closes(series), timeperiod=10)[0]
    for i, update in enumerate(updates):
        got = update["values"]["SMA_5"]
        assert (got is None) == bool(np.isnan(sma[i])) and (got is None or got == pytest.approx(sma[i], rel=1e-12))
        assert update["warm"]["SMA_5"] == (i >= 4) and update["warm"]["RSI_14"] == (i >= 14)
    assert updates[-1]["values"]["BBANDS_10_2_2_0.upperband"] == pytest.approx(upper[-1], rel=1e-12)


def test_encoded_updates_equal_the_snapshot_through_warm_up_gaps_and_changes() -> None:
    """Once every indicator is warm, the per-bar update goes out encoded by a template: it decodes to exactly
    the snapshot, a bar with a NaN output goes out as the snapshot itself (NaN as null), and adding or
    removing an indicator changes the update's shape at once."""
    registry = {i.name: i for i in builtin_indicators()}
    series = Series("ES", "1m", 200)
    for spec in ("SMA(timeperiod=3)", "MACD", "OBV"):
        series.add(Live.parse(spec, registry))
    items = bars(80)
    items[50]["volume"] = float("nan")  # a gap: OBV has no value at that bar
    kinds, obv = [], []
    for i, bar in enumerate(items):
        if i == 60:
            series.add(Live.parse("RSI(timeperiod=5)", registry))
        if i == 70:
            assert series.remove("OBV")
        update = series.on_bar(check_bar(bar))
        kinds.append(type(update).__name__)
        decoded = codec.unpackb(update) if isinstance(update, codec.Packed) else update
        assert decoded == series.snapshot(), i
        assert ("RSI_5" in decoded["values"]) == (i >= 60) and ("OBV" in decoded["values"]) == (i < 70)
        obv.append(decoded["values"].get("OBV"))
    assert kinds[:34] == ["dict"] * 34  # MACD's first value comes with the 34th bar, then the flags are fixed
    assert kinds[50] == "dict" and obv[50] is None and None not in obv[51:70]  # null for the gap alone
    assert kinds[60:62] == ["dict", "Packed"] and kinds[70:72] == ["dict", "Packed"]  # a new shape at once
    assert kinds.count("Packed") == len(items) - 34 - 3


async def test_the_bar_rule_forming_stale_duplicate(live: Kernel) -> None:
    series = bars(30)
    counts = await ask(live, "ingest", {"symbol": "MSFT", "timeframe": "5m", "bars": series})
    assert counts["committed"] == 30 and counts["stale"] == 0
    before = await ask(live, "state", {"symbol": "MSFT", "timeframe": "5m"})
    late = [series[-1], {**series[10], "close": 1e6}, {**series[-1], "close": 1e6}]  # duplicate, late, replayed
    counts = await ask(live, "ingest", {"symbol": "MSFT", "timeframe": "5m", "bars": late})
    assert counts["stale"] == 3 and counts["committed"] == 0
    after = await ask(live, "state", {"symbol": "MSFT", "timeframe": "5m"})
    assert after["values"] == before["values"] and after["bars"] == 30
    forming = {**bars(31)[-1], "final": False}
    await ask(live, "ingest", {"symbol": "MSFT", "timeframe": "5m", "bars": [forming]})
    state = await ask(live, "state", {"symbol": "MSFT", "timeframe": "5m"})
    expected = talib.SMA(np.append(closes(series), forming["close"]), timeperiod=5)[-1]
    assert state["bars"] == 30 and state["values"] == before["values"]  # previewed, not committed
    assert state["peek"]["values"]["SMA_5"] == pytest.approx(expected, rel=1e-12)
    await ask(live, "ingest", {"symbol": "MSFT", "timeframe": "5m", "bars": [{**forming, "final": True}]})
    state = await ask(live, "state", {"symbol": "MSFT", "timeframe": "5m"})
    assert state["bars"] == 31 and state["values"]["SMA_5"] == pytest.approx(expected, rel=1e-12)
    assert "peek" not in state


async def test_state_survives_a_restart(tmp_path: Path) -> None:
    series = bars(120)
    first = Kernel(config(tmp_path))
    await first.start()
    try:
        await ask(first, "ingest", {"symbol": "ES", "timeframe": "1m", "bars": series[:100]})
        await ask(first, "subscribe", {"symbol": "ES", "timeframe": "1m", "indicators": ["EMA(timeperiod=7)"]})
    finally:
        await first.stop()
    assert (tmp_path / "var" / "market" / "state.msgpack").exists()
    second = Kernel(config(tmp_path))
    await second.start()
    try:
        await ask(second, "ingest", {"symbol": "ES", "timeframe": "1m", "bars": series[100:]})
        state = await ask(second, "state", {"symbol": "ES", "timeframe": "1m"})
    finally:
        await second.stop()
    c = closes(series)
    assert state["bars"] == 120
    assert state["values"]["SMA_5"] == pytest.approx(talib.SMA(c, timeperiod=5)[-1], rel=1e-12)
    assert state["values"]["RSI_14"] == pytest.approx(talib.RSI(c, timeperiod=14)[-1], rel=1e-9)
    assert state["values"]["EMA_7"] == pytest.approx(talib.EMA(c, timeperiod=7)[-1], rel=1e-9)


async def test_indicators_added_at_run_time_are_warm_at_once(live: Kernel) -> None:
    series = bars(60)
    await ask(live, "ingest", {"symbol": "EURUSD", "timeframe": "1h", "bars": series})
    reply = await ask(live, "subscribe", {"symbol": "EURUSD", "timeframe": "1h", "indicators": ["CCI", "ATR"]})
    assert reply["indicators"] == ["CCI_14", "ATR_14"]
    state = await ask(live, "state", {"symbol": "EURUSD", "timeframe": "1h"})
    high, low, close = (np.array([b[k] for b in series]) for k in ("high", "low", "close"))
    assert state["warm"]["CCI_14"] and state["values"]["CCI_14"] == pytest.approx(talib.CCI(high, low, close)[-1], rel=1e-9)
    assert (await ask(live, "unsubscribe", {"symbol": "EURUSD", "timeframe": "1h", "indicators": ["CCI_14"]}))["removed"] == 1
    assert "CCI_14" not in (await ask(live, "state", {"symbol": "EURUSD", "timeframe": "1h"}))["values"]


async def test_bars_ingested_as_columns_equal_bars_ingested_as_maps(live: Kernel) -> None:
    series = bars(300)
    columns = {name: np.array([b[name] for b in series]) for name in ("open", "high", "low", "close", "volume")}
    columns["ts"] = np.array([b["ts"] for b in series], dtype=np.int64)
    client = mdp.AsyncClient(live.endpoints["broker"][0], timeout=10.0)  # ndarrays over the wire, as a feed sends
    try:
        as_columns = await client.request("indicators", "ingest", {"symbol": "COLS", "timeframe": "1h", **columns})
    finally:
        client.close()
    as_maps = await ask(live, "ingest", {"symbol": "MAPS", "timeframe": "1h", "bars": series})
    assert as_columns == {**as_maps, "last_ts": as_maps["last_ts"]} and as_columns["committed"] == 300
    by_columns = await ask(live, "state", {"symbol": "COLS", "timeframe": "1h"})
    by_maps = await ask(live, "state", {"symbol": "MAPS", "timeframe": "1h"})
    assert by_columns["values"] == by_maps["values"] and by_columns["bars"] == by_maps["bars"] == 300
    for wrong, field in (({"bars": series, **columns}, "bars"), ({"close": columns["close"]}, "ts"), ({}, "bars")):
        with pytest.raises(BadRequest) as refused:
            await ask(live, "ingest", {"symbol": "BAD", "timeframe": "1h", **wrong})
        assert refused.value.field == field
    with pytest.raises(TooLarge):  # the declaration bounds a list of bars as it bounds columns
        await ask(live, "ingest", {"symbol": "BAD", "timeframe": "1h", "bars": [series[0]] * 1_000_001})


async def test_rest_ingest_state_and_errors(live: Kernel) -> None:
    async with aiohttp.ClientSession() as http:
        url = live.edge_url
        async with http.post(f"{url}/api/v1/market/bars", json={"symbol": "BTC-USD", "timeframe": "1m",
                                                                  "bars": bars(20)}) as r:
            assert r.status == 200 and (await r.json())["committed"] == 20
        async with http.get(f"{url}/api/v1/market/state", params={"symbol": "BTC-USD", "timeframe": "1m"}) as r:
            body = await r.json()
            assert r.status == 200 and body["warm"]["SMA_5"] is True and body["warm"]["RSI_14"] is True
        async with http.get(f"{url}/api/v1/market/state", params={"symbol": "NOPE", "timeframe": "1m"}) as r:
            assert r.status == 404 and "NOPE" in (await r.json())["error"]["message"]
        bad = [{"ts": 1, "open": 1, "high": 1, "low": 1, "close": "x", "volume": 1}]
        async with http.post(f"{url}/api/v1/market/bars", json={"symbol": "BTC-USD", "timeframe": "1m",
                                                                  "bars": bad}) as r:
            assert r.status == 400 and (await r.json())["error"]["field"] == "bars[0].close"
        async with http.post(f"{url}/api/v1/market/bars", json={"symbol": "BTC.USD", "timeframe": "1m",
                                                                  "bars": bars(1)}) as r:
            assert r.status == 400 and (await r.json())["error"]["field"] == "symbol"


async def test_malformed_bars_on_pubsub_are_dropped_and_counted(live: Kernel) -> None:
    client = mdp.AsyncClient(live.endpoints["broker"][0], timeout=3.0)
    ctx = zmq.asyncio.Context()
    pub = ctx.socket(zmq.PUB)
    try:
        pub.connect(live.endpoints["pub_in"][0])
        actor = live.cells["indicators"].instance

        async def rejected() -> bool:
            await pub.send_multipart([b"bar.BAD.1m", msgpack.packb({"ts": "soon", "close": 1.0})])
            await asyncio.sleep(0.02)
            return actor is not None and actor.rejected > 0  # type: ignore[attr-defined]

        await wait_until(rejected, timeout=5.0, what="a malformed bar to be rejected")
        assert live.cells["indicators"].state == "running"
        assert (await client.request("indicators", "ingest", {"symbol": "OK", "timeframe": "1m",
                                                              "bars": bars(3)}))["committed"] == 3
    finally:
        client.close()
        pub.close(0)
        ctx.term()


async def test_negative_volume_is_refused_in_ingest_and_on_pubsub(live: Kernel) -> None:
    series = bars(5)
    series[3]["volume"] = -1.0
    with pytest.raises(BadRequest) as caught:
        await ask(live, "ingest", {"symbol": "VOL", "timeframe": "1m", "bars": series})
    assert caught.value.field == "bars[3].volume"
    with pytest.raises(NotFound):  # nothing of a refused ingest is kept
        await ask(live, "state", {"symbol": "VOL", "timeframe": "1m"})
    actor: Any = live.cells["indicators"].instance
    async with pubsub(live) as (pub, _):
        await pub.send_multipart([b"bar.VOL.1m", msgpack.packb(series[3])])
        await wait_until(lambda: actor.rejected > 0, what="the bar with a negative volume to be rejected")
    assert ("VOL", "1m") not in actor.series


@pytest.mark.parametrize(("bar", "field"), [
    ({"ts": 2**63, "close": 1.0}, "bars[0].ts"),
    ({"ts": 2**53 + 1, "close": 1.0}, "bars[0].ts"),  # held as float64: beyond this it is no longer exact
    ({"ts": 1.5, "close": 1.0}, "bars[0].ts"),
    ({"ts": 1, "close": True}, "bars[0].close"),
    ({"ts": 1, "close": 1.0, "final": "no"}, "bars[0].final"),
    ({"ts": 1, "close": [[[[[[[[[[1.0]]]]]]]]]]}, "bars[0].close"),
    ("a bar", "bars[0]"),
])
async def test_bad_bars_are_named(live: Kernel, bar: Any, field: str) -> None:
    with pytest.raises(BadRequest) as caught:
        await ask(live, "ingest", {"symbol": "BAD", "timeframe": "1m", "bars": [bar]})
    assert caught.value.field == field


@pytest.mark.parametrize(("args", "field"), [
    ({"symbol": "X", "timeframe": "1m"}, "bars"),
    ({"symbol": "X", "timeframe": "1m", "bars": {"ts": 1}}, "bars"),
    ({"symbol": "X", "timeframe": "tick", "bars": []}, "timeframe"),
    ({"symbol": "X.Y", "timeframe": "1m", "bars": []}, "symbol"),
])
async def test_ingest_arguments_are_declared(live: Kernel, args: dict[str, Any], field: str) -> None:
    with pytest.raises(BadRequest) as caught:
        await ask(live, "ingest", args)
    assert caught.value.field == field


def _slow_config(tmp_path: Path, **options: Any) -> Any:
    """A kernel whose requests may take a while (a large ingest), with sentiment not following every update."""
    base = make_config(tmp_path, modules=(), sections={
        "indicators": PluginSection(True, {**LIVE, "persist": False, **options}),
        "sentiment": PluginSection(True, {"live_market": False})})
    return dataclasses.replace(base, bus=dataclasses.replace(base.bus, request_timeout_ms=120_000))


async def test_rest_ping_keeps_answering_during_a_large_ingest(tmp_path: Path) -> None:
    """200,000 bars in one MDP ingest (it froze REST for 11 to 16 s): the loop keeps serving while it runs."""
    n = 200_000
    data = ohlcv(n, seed=5)
    body = [{"ts": 60_000 * (i + 1), **{c: float(data[c][i]) for c in ("open", "high", "low", "close", "volume")}}
            for i in range(n)]
    async with running(_slow_config(tmp_path, live=["SMA(timeperiod=20)"], timeframes=["5m"])) as kernel:
        client = mdp.AsyncClient(kernel.endpoints["broker"][0], timeout=120.0)
        pings: list[float] = []
        try:
            ingest = asyncio.ensure_future(client.request("indicators", "ingest",
                                                          {"symbol": "BIG", "timeframe": "1m", "bars": body}))
            async with aiohttp.ClientSession() as http:
                while not ingest.done():
                    started = time.perf_counter()
                    async with http.get(f"{kernel.edge_url}/api/v1/ping") as r:
                        assert r.status == 200
                    pings.append(time.perf_counter() - started)
                    await asyncio.sleep(0.01)
            reply = await ingest
        finally:
            client.close()
    assert reply["committed"] == n and reply["stale"] == 0
    assert len(pings) >= 10, f"the ingest ended before the pings could overlap it ({len(pings)} pings)"
    assert max(pings) < 1.0, f"a ping took {max(pings):.2f} s during the ingest"


async def test_ingests_of_one_series_never_interleave_and_live_bars_wait_their_turn(tmp_path: Path) -> None:
    series = bars(40_001, seed=9)
    first, second, live_bar = series[:20_000], series[20_000:40_000], series[40_000]
    async with running(_slow_config(tmp_path)) as kernel:
        actor: Any = kernel.cells["indicators"].instance
        async with pubsub(kernel) as (pub, _):
            a = asyncio.ensure_future(ask(kernel, "ingest", {"symbol": "ORD", "timeframe": "1m", "bars": first}))
            b = asyncio.ensure_future(ask(kernel, "ingest", {"symbol": "ORD", "timeframe": "1m", "bars": second}))
            await wait_until(lambda: actor.turns.busy(("ORD", "1m")), what="the first ingest to start")
            await pub.send_multipart([b"bar.ORD.1m", msgpack.packb(live_bar)])
            replies = await asyncio.gather(a, b)
            state = await wait_until(lambda: _state_at(kernel, live_bar["ts"]), timeout=10.0,
                                     what="the live bar to be committed")
    assert [r["committed"] for r in replies] == [20_000, 20_000] and [r["stale"] for r in replies] == [0, 0]
    assert state["bars"] == LIVE["buffer"]  # every bar in order: none was stale
    assert state["values"]["SMA_5"] == pytest.approx(talib.SMA(closes(series), timeperiod=5)[-1], rel=1e-9)


async def _state_at(kernel: Kernel, ts: int) -> Any:
    state = await ask(kernel, "state", {"symbol": "ORD", "timeframe": "1m"})
    return state if state["ts"] == ts else None


async def test_a_restart_on_a_large_saved_state(tmp_path: Path) -> None:
    """24 symbols x 6 timeframes x 3,000 bars (144 series, the saved state that failed a start): the actor
    starts on it, serves what it saved, and saves and loads it again through a second restart."""
    registry = {i.name: i for i in builtin_indicators()}
    defaults = [Live.parse(spec, registry) for spec in IndicatorsConfig().live]
    timeframes = ("1m", "5m", "15m", "1h", "4h", "1d")
    saved, derived, columns = [], set(), {}
    for k in range(24):
        for tf in timeframes:
            data = market(3_000, seed=k, step_ms=to_ms(tf))
            series = Series(f"S{k:02d}", tf, 5_000)
            series.ring.load(np.column_stack([data["ts"].astype(np.float64),
                                              *(data[c] for c in ("open", "high", "low", "close", "volume"))]))
            series.last_ts, series.committed = int(data["ts"][-1]), 3_000
            for live in defaults:
                series.add(live)
            saved.append(series)
            columns[(series.symbol, tf)] = data
            if tf != "1m":
                derived.add((series.symbol, tf))
    persist.save(tmp_path / "var" / "market" / "state.msgpack", saved, derived)
    config = make_config(tmp_path, modules=())
    extra = market(1, seed=99, start_ms=int(columns[("S07", "1m")]["ts"][-1]) + 60_000)
    for restart in range(2):
        async with running(config) as kernel:
            health = await kernel.request("kernel", "health", {})
            assert health["actors"]["indicators"]["state"] == "running", health["actors"]["indicators"]
            assert health["actors"]["indicators"]["restarts"] == 0
            held = {(s["symbol"], s["timeframe"]): s["bars"] for s in await ask(kernel, "series", {})}
            assert len(held) == 144
            assert held.pop(("S07", "1m")) == 3_000 + restart and set(held.values()) == {3_000}
            for key in (("S00", "1m"), ("S23", "1d"), ("S11", "4h")):
                state = await ask(kernel, "state", {"symbol": key[0], "timeframe": key[1]})
                high, low, close = (columns[key][c] for c in ("high", "low", "close"))
                assert state["values"]["SMA_20"] == pytest.approx(talib.SMA(close, 20)[-1], rel=1e-12)
                assert state["values"]["RSI_14"] == pytest.approx(talib.RSI(close, 14)[-1], rel=1e-9)
                assert state["values"]["ATR_14"] == pytest.approx(talib.ATR(high, low, close, 14)[-1], rel=1e-9)
                assert all(state["warm"].values())
            if restart == 0:  # the live state carries on from the saved one
                await ask(kernel, "ingest", {"symbol": "S07", "timeframe": "1m", "bars": rows(extra)})
            state = await ask(kernel, "state", {"symbol": "S07", "timeframe": "1m"})
            close = np.append(columns[("S07", "1m")]["close"], extra["close"])
            assert state["ts"] == int(extra["ts"][0])
            assert state["values"]["EMA_20"] == pytest.approx(talib.EMA(close, 20)[-1], rel=1e-9)


@pytest.mark.parametrize(("op", "args", "field"), [
    ("subscribe", {"symbol": "EURUSD", "indicators": ["CCI"]}, "timeframe"),
    ("subscribe", {"timeframe": "1h", "indicators": ["CCI"]}, "symbol"),
    ("subscribe", {"indicators": []}, "indicators"),
    ("subscribe", {"indicators": ["CCI(timeperiod=2147483648)"]}, "indicators[0].params.timeperiod"),
    ("subscribe", {"indicators": ["CCI", {"name": "NOPE"}]}, "indicators[1].name"),
    ("subscribe", {"indicators": ["CCI(timeperiod=x)"]}, "indicators[0]"),
    ("unsubscribe", {"indicators": [7]}, "indicators[0]"),
    ("state", {"symbol": "EURUSD", "timeframe": "1h", "peek": {"ts": 1, "close": "x"}}, "peek.close"),
    ("state", {"symbol": "EURUSD"}, "timeframe"),
    ("bars", {"symbol": "EURUSD", "timeframe": "1h", "limit": -1}, "limit"),
    ("list", {"group": 3}, "group"),
])
async def test_live_ops_name_what_they_refuse(live: Kernel, op: str, args: dict[str, Any], field: str) -> None:
    await ask(live, "ingest", {"symbol": "EURUSD", "timeframe": "1h", "bars": bars(3)})
    with pytest.raises(BadRequest) as caught:
        await ask(live, op, args)
    assert caught.value.field == field


async def test_list_a_group_and_held_bars(live: Kernel) -> None:
    listed = await ask(live, "list", {"group": "Math Transform"})
    assert {i["name"] for i in listed} >= {"SIN", "COS", "LN", "LOG10", "SQRT", "EXP"}
    assert {i["group"] for i in listed} == {"Math Transform"}
    sma = next(i for i in await ask(live, "list", {"group": "Overlap Studies"}) if i["name"] == "SMA")
    assert sma["params"][0] | {"doc": ""} == {"name": "timeperiod", "type": "int", "default": 30, "minimum": 1,
                                              "maximum": 100_000, "doc": ""}
    series = bars(30)
    await ask(live, "ingest", {"symbol": "HELD", "timeframe": "1m", "bars": series})
    held = await ask(live, "bars", {"symbol": "HELD", "timeframe": "1m", "limit": 4})
    assert held["ts"].tolist() == [b["ts"] for b in series[-4:]]
    np.testing.assert_array_equal(held["close"], closes(series[-4:]))
    assert len((await ask(live, "bars", {"symbol": "HELD", "timeframe": "1m", "limit": 0}))["close"]) == 0
    assert len((await ask(live, "bars", {"symbol": "HELD", "timeframe": "1m"}))["close"]) == 30
