"""Candlestick patterns: every registered pattern's live events equal its batch events, the batch equals
TA-Lib on the same data, candle settings change TA-Lib's answers, and the service detects over REST and
live over real pub/sub."""

from __future__ import annotations

import textwrap
import threading
from pathlib import Path
from typing import Any

import aiohttp
import msgpack
import numpy as np
import pytest
import talib

from ml_processing.core.config import PluginSection
from ml_processing.core.errors import BadRequest
from ml_processing.core.kernel import Kernel
from ml_processing.plugins.patterns.actor import INLINE_WORK, Patterns
from ml_processing.plugins.patterns.candles import apply_candle_settings, candlesticks
from tests.conftest import make_config
from tests.support.feed import pubsub
from tests.support.kernels import running
from tests.support.series import ohlcv
from tests.support.thirdparty import plugin_module

PATTERNS = {p.name: p for p in candlesticks()}


def series(n: int = 1500, seed: int = 13) -> dict[str, np.ndarray]:
    data = ohlcv(n, seed)
    return {k: data[k] for k in ("open", "high", "low", "close")}


def test_all_61_candlestick_functions_are_registered_from_talib() -> None:
    assert sorted(PATTERNS) == sorted(talib.get_function_groups()["Pattern Recognition"]) and len(PATTERNS) == 61
    assert PATTERNS["CDLMORNINGSTAR"].params[0].name == "penetration"


@pytest.mark.parametrize("name", sorted(PATTERNS))
def test_live_events_equal_batch_events_and_batch_equals_talib(name: str) -> None:
    pattern, data = PATTERNS[name], series()
    params = pattern.resolve({})
    events = pattern.detect(data, params)
    raw = getattr(talib, name)(data["open"], data["high"], data["low"], data["close"], **params)
    assert [(e.index, e.strength if e.direction == "bullish" else -e.strength) for e in events] == \
        [(int(i), float(raw[i])) for i in np.flatnonzero(raw)]
    stream = pattern.stream(params)
    live = [e for i in range(len(data["close"])) for e in stream.update({k: float(v[i]) for k, v in data.items()})]
    assert [e.to_wire() for e in live] == [e.to_wire() for e in events]


def test_every_op_is_declared_with_its_role() -> None:
    declared = {name: spec.role for name, spec in Patterns.declarations().items() if spec.args is not None}
    assert declared == {"detect": "compute", "list": "read", "series": "read"}


def test_a_series_with_gaps_and_flat_bars_does_not_crash_any_pattern() -> None:
    data = series(300)
    data["close"][[10, 11, 120]] = np.nan
    for column in data.values():
        column[200:230] = 50.0
    for pattern in PATTERNS.values():
        stream = pattern.stream(pattern.resolve({}))
        pattern.detect(data, pattern.resolve({}))
        for i in range(300):
            stream.update({k: float(v[i]) for k, v in data.items()})


def test_candle_settings_change_what_talib_sees() -> None:
    data = series(2000)
    doji = PATTERNS["CDLDOJI"]
    try:
        default = len(doji.detect(data, {}))
        apply_candle_settings({"BodyDoji": {"range": "HighLow", "period": 10, "factor": 0.5}})
        wider = len(doji.detect(data, {}))
        assert wider > default  # a body up to half the range now counts as a doji
        with pytest.raises(BadRequest, match="unknown candle setting"):
            apply_candle_settings({"BodyHuge": {}})
        with pytest.raises(BadRequest, match="period"):
            apply_candle_settings({"BodyDoji": {"period": -1}})
    finally:
        apply_candle_settings({})
    assert len(doji.detect(data, {})) == default


async def test_detect_over_rest_with_names_params_and_timestamps(tmp_path: Path) -> None:
    kernel = Kernel(make_config(tmp_path, modules=()))
    await kernel.start()
    try:
        data = series(500)
        ts = (1_700_000_000_000 + 60_000 * np.arange(500)).tolist()
        body = {**{k: v.tolist() for k, v in data.items()}, "ts": ts,
                "patterns": ["CDLENGULFING", {"name": "CDLMORNINGSTAR", "params": {"penetration": 0.5}}]}
        async with aiohttp.ClientSession() as http:
            async with http.post(kernel.edge_url + "/api/v1/patterns/detect", json=body) as resp:
                out = await resp.json()
            assert resp.status == 200
            engulfing = talib.CDLENGULFING(*data.values())
            group = out["events"]["CDLENGULFING"]
            got = group["index"]
            assert got == np.flatnonzero(engulfing).tolist() and group["kind"] == "candlestick"
            assert group["ts"] == [ts[i] for i in got]
            assert [d * s for d, s in zip(group["direction"], group["strength"], strict=True)] == \
                engulfing[got].tolist()
            assert out["counts"]["CDLENGULFING"] == len(got) and out["bars"] == 500
            everything = {k: v.tolist() for k, v in data.items()}
            async with http.post(kernel.edge_url + "/api/v1/patterns/detect", json=everything) as resp:
                assert resp.status == 200 and (await resp.json())["patterns"] == 61 + 10
            flagged = [*everything["close"][:3], True, *everything["close"][4:]]
            for bad, field in (({"patterns": ["NOPE"], **everything}, "patterns[0]"),
                               ({"patterns": [{"name": "CDLMORNINGSTAR", "params": {"penetration": "x"}}],
                                 **everything}, "patterns[0].params.penetration"),
                               ({**everything, "close": everything["close"][:-1]}, "close"),
                               ({"open": [1.0]}, "high"), ({**everything, "patterns": "all"}, "patterns"),
                               ({**everything, "patterns": []}, "patterns"), ({**everything, "kind": "nope"}, "kind"),
                               ({**everything, "close": flagged}, "close[3]"),
                               ({"open": [], "high": [], "low": [], "close": []}, "open"),
                               ({**everything, "volume": [1.0, -1.0] + [1.0] * 498}, "volume[1]"),
                               ({**everything, "patterns": [{"name": "CDLDOJI", "extra": 1}]}, "patterns[0].extra"),
                               ({**everything, "color": "red"}, "color")):
                async with http.post(kernel.edge_url + "/api/v1/patterns/detect", json=bad) as resp:
                    assert resp.status == 400, (bad.keys(), await resp.text())
                    assert (await resp.json())["error"]["field"] == field
            async with http.post(kernel.edge_url + "/api/v1/patterns/detect",
                                 json={**everything, "kind": "chart"}) as resp:
                chart_only = await resp.json()
            assert resp.status == 200 and chart_only["patterns"] == 10
            assert {g["kind"] for g in chart_only["events"].values()} == {"chart"}
            assert all(len(g["details"]) == len(g["index"]) for g in chart_only["events"].values())
            async with http.get(kernel.edge_url + "/health") as resp:
                health = await resp.json()
            assert health["technical_analysis"]["patterns_detected"] >= len(got)
    finally:
        await kernel.stop()


async def test_live_events_and_signals_over_pubsub(tmp_path: Path) -> None:
    options = {"live": ["CDLENGULFING", "CDLHARAMI"], "signals": True, "signal_strength": 100.0}
    kernel = Kernel(make_config(tmp_path, modules=(), sections={"patterns": PluginSection(True, options)}))
    await kernel.start()
    try:
        data = series(400)
        bars = [{"ts": 60_000 * (i + 1), **{k: float(v[i]) for k, v in data.items()}, "volume": 1.0}
                for i in range(400)]
        received: list[tuple[bytes, Any]] = []
        async with pubsub(kernel, b"pattern.EUR", b"signal.EUR") as (pub, sub):
            for bar in bars:
                await pub.send_multipart([b"bar.EUR.1m", msgpack.packb(bar)])
            await pub.send_multipart([b"bar.EUR.1m", msgpack.packb(bars[5])])  # stale: nothing
            while await sub.poll(1000):
                topic, body = await sub.recv_multipart()
                received.append((topic, msgpack.unpackb(body)))
        events = [e for t, b in received if t == b"pattern.EUR.1m" for e in b["events"]]
        expected = sorted([(int(i), "CDLENGULFING") for i in np.flatnonzero(talib.CDLENGULFING(*data.values()))] +
                          [(int(i), "CDLHARAMI") for i in np.flatnonzero(talib.CDLHARAMI(*data.values()))])
        assert sorted((e["index"], e["pattern"]) for e in events) == expected
        signals = [b for t, b in received if t == b"signal.EUR"]
        assert len(signals) == len(events) and {s["side"] for s in signals} <= {"buy", "sell"}
        health = await kernel.request("kernel", "health", {})
        assert health["technical_analysis"]["signals_generated"] == len(signals)
    finally:
        await kernel.stop()


THIRD_PARTY = textwrap.dedent('''
    from ml_processing.sdk import hookimpl
    from ml_processing.sdk.pattern import BULLISH, Pattern, PatternEvent, PatternStream

    class Gap(Pattern):
        name = "GAP_UP"
        kind = "chart"
        inputs = ("open", "close")

        def detect(self, data, params, ts=None):
            o, c = data["open"], data["close"]
            return [PatternEvent(self.name, self.kind, i, BULLISH, 1.0) for i in range(1, len(o)) if o[i] > c[i - 1] * 1.01]

        def stream(self, params):
            return GapStream()

    class GapStream(PatternStream):
        def __init__(self):
            self.index, self.last = -1, None

        def update(self, bar):
            self.index += 1
            hit = self.last is not None and bar["open"] > self.last * 1.01
            self.last = bar["close"]
            return [PatternEvent("GAP_UP", "chart", self.index, BULLISH, 1.0)] if hit else []

    @hookimpl
    def register_patterns():
        return [Gap()]
''')


PROBE = textwrap.dedent('''
    import threading

    from ml_processing.sdk import hookimpl
    from ml_processing.sdk.pattern import BULLISH, Pattern, PatternEvent, PatternStream

    class ThreadProbe(Pattern):
        """One event at the last bar, whose details name the thread that detected it."""

        name = "THREAD_PROBE"
        inputs = ("close",)

        def detect(self, data, params, ts=None):
            return [PatternEvent(self.name, self.kind, len(data["close"]) - 1, BULLISH, 1.0,
                                 details={"thread": threading.current_thread().name})]

        def stream(self, params):
            raise NotImplementedError

    @hookimpl
    def register_patterns():
        return [ThreadProbe()]
''')


async def test_a_large_detect_runs_on_the_thread_pool_and_a_small_one_inline(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The event loop is not held by a large request: above the actor's work estimate, detection moves to the
    kernel's thread pool (the probe pattern reports the thread it ran on)."""
    sections = {"patterns": PluginSection(True, {"live": ["CDLDOJI"]})}
    with plugin_module(monkeypatch, tmp_path / "plugins", "thread_probe", PROBE):
        async with running(make_config(tmp_path, modules=("thread_probe",), sections=sections)) as kernel:
            where = {}
            for n in (10, INLINE_WORK):
                out = await kernel.request("patterns", "detect", {"close": [1.0] * n, "patterns": ["THREAD_PROBE"]})
                (where[n],) = [d["thread"] for d in out["events"]["THREAD_PROBE"]["details"]]
            assert where[10] == threading.current_thread().name  # the event loop's thread
            assert where[INLINE_WORK].startswith("mlp-work")  # the kernel's thread pool


async def test_a_third_party_pattern_is_detected_like_a_builtin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with plugin_module(monkeypatch, tmp_path / "plugins", "acme_patterns", THIRD_PARTY):
        async with running(make_config(tmp_path, modules=("acme_patterns",))) as kernel:
            listed = {p["name"]: p for p in await kernel.request("patterns", "list", {})}
            assert listed["GAP_UP"]["kind"] == "chart" and len(listed) == 61 + 10 + 1
            out = await kernel.request("patterns", "detect", {"open": [1.0, 1.05, 1.0], "close": [1.0, 1.04, 1.0],
                                                              "patterns": ["GAP_UP"]})
            assert out["events"]["GAP_UP"]["index"].tolist() == [1] and out["counts"] == {"GAP_UP": 1}
