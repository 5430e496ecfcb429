"""Chart patterns on series built to hold them (and near misses that must not match): detection, key points,
confirmation bars, confidence; live == batch, whole events (details included), for every registered pattern,
in the detectors and through the service (REST detect against live pub/sub); gaps and flat bars survive."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import aiohttp
import msgpack
import numpy as np
import pytest

from ml_processing.core.config import PluginSection
from ml_processing.plugins.patterns.candles import candlesticks
from ml_processing.plugins.patterns.chart import chart_patterns
from tests.conftest import make_config
from tests.support.feed import pubsub
from tests.support.kernels import running
from tests.support.series import ohlcv

CHART = {p.name: p for p in chart_patterns()}


def path(points: list[tuple[int, float]], wick: float = 0.3) -> dict[str, np.ndarray]:
    """Bars along straight lines through (bar, close) waypoints: open = previous close, high/low +- wick."""
    closes: list[float] = []
    for (a_i, a), (b_i, b) in itertools.pairwise(points):
        closes += list(np.linspace(a, b, b_i - a_i + 1))[:-1]
    closes.append(points[-1][1])
    close = np.array(closes)
    open_ = np.r_[close[0], close[:-1]]
    return {"open": open_, "high": np.maximum(open_, close) + wick, "low": np.minimum(open_, close) - wick,
            "close": close}


def found(name: str, data: dict[str, np.ndarray], **params: Any) -> list[Any]:
    pattern = CHART[name]
    return pattern.detect(data, pattern.resolve(params))


def first_close_beyond(data: dict[str, np.ndarray], start: int, level: float, below: bool) -> int:
    close = data["close"]
    return next(i for i in range(start, len(close)) if (close[i] < level if below else close[i] > level))


DOUBLE_TOP = [(0, 100), (30, 100.5), (50, 120), (62, 110), (74, 120.2), (100, 104)]


def test_double_top_is_found_at_the_close_below_its_trough_with_its_key_points() -> None:
    data = path(DOUBLE_TOP)
    (event,) = found("DOUBLE_TOP", data)
    (p1, p1_price), (t, t_price), (p2, p2_price), (at, _) = event.points
    assert (p1, t, p2) == (50, 62, 74) and p1_price == pytest.approx(120.3) and p2_price == pytest.approx(120.5)
    assert event.index == at == first_close_beyond(data, p2, t_price, below=True)
    assert event.direction == "bearish" and 0.8 < event.strength <= 1.0
    assert found("DOUBLE_BOTTOM", data) == []


def test_double_top_near_misses() -> None:
    uneven = [(0, 100), (30, 100.5), (50, 120), (62, 110), (74, 123), (100, 104)]  # second peak 3 higher
    assert found("DOUBLE_TOP", path(uneven)) == []
    shallow = [(0, 100), (30, 100.5), (50, 120), (56, 119.3), (62, 120.1), (90, 104)]  # no real trough between
    assert found("DOUBLE_TOP", path(shallow)) == []
    never_confirmed = [(0, 100), (30, 100.5), (50, 120), (62, 110), (74, 120.2), (86, 112)]  # stays above 110
    assert found("DOUBLE_TOP", path(never_confirmed)) == []


def test_double_bottom_mirrors_the_top() -> None:
    mirrored = [(i, 200 - p) for i, p in DOUBLE_TOP]
    data = path(mirrored)
    (event,) = found("DOUBLE_BOTTOM", data)
    assert event.direction == "bullish" and [p[0] for p in event.points[:3]] == [50, 62, 74]
    assert event.index == first_close_beyond(data, 74, event.points[1][1], below=False)


HS = [(0, 100), (20, 100.2), (35, 112), (45, 105), (60, 118), (70, 105.5), (82, 112.3), (105, 96)]


def test_head_and_shoulders_and_its_inverse() -> None:
    data = path(HS)
    (event,) = found("HEAD_SHOULDERS", data)
    assert [p[0] for p in event.points[:5]] == [35, 45, 60, 70, 82] and event.direction == "bearish"
    (n1, n1p), (n2, n2p) = event.points[1], event.points[3]
    neck = n2p + (n2p - n1p) / (n2 - n1) * (event.index - n2)
    assert data["close"][event.index] < neck <= data["close"][event.index - 1] + 1e-9  # the first close below
    inverse = path([(i, 200 - p) for i, p in HS])
    (event,) = found("INV_HEAD_SHOULDERS", inverse)
    assert event.direction == "bullish" and [p[0] for p in event.points[:5]] == [35, 45, 60, 70, 82]
    lopsided = [(0, 100), (20, 100.2), (35, 112), (45, 105), (60, 118), (70, 105.5), (82, 116), (105, 96)]
    assert found("HEAD_SHOULDERS", path(lopsided)) == []  # shoulders 4 apart: not a head and shoulders
    no_head = [(0, 100), (20, 100.2), (35, 112), (45, 105), (60, 112.4), (70, 105.5), (82, 112.3), (105, 96)]
    assert found("HEAD_SHOULDERS", path(no_head)) == []


def test_a_level_touched_twice_breaks_out_once() -> None:
    data = path([(0, 100), (20, 110), (32, 102), (44, 110.2), (56, 102.5), (70, 116), (80, 116)])
    (event,) = found("LEVEL_BREAKOUT", data)
    assert event.direction == "bullish" and event.details["broke"] == "resistance" and event.details["touches"] == 2
    assert event.details["level"] == pytest.approx((110.3 + 110.5) / 2)
    assert data["close"][event.index] >= event.details["level"] + 0.25 * 1.0 - 1e-9
    assert found("LEVEL_BREAKOUT", data, min_touches=3) == []


@pytest.mark.parametrize(("waypoints", "shape", "direction"), [
    ([(0, 100), (15, 110), (27, 100), (39, 110.1), (51, 104), (63, 110.2), (75, 120)], "TRIANGLE_ASCENDING",
     "bullish"),
    ([(0, 120), (15, 110), (27, 120), (39, 110.1), (51, 116), (63, 109.9), (75, 100)], "TRIANGLE_DESCENDING",
     "bearish"),
    ([(0, 100), (15, 120), (30, 100), (45, 116), (60, 104), (70, 112), (90, 90)], "TRIANGLE_SYMMETRIC", "bearish"),
    ([(0, 100), (15, 110), (27, 104), (42, 114), (54, 108), (69, 118), (90, 95)], "CHANNEL", "bearish"),
])
def test_triangles_and_channels_break_out(waypoints: list[tuple[int, float]], shape: str, direction: str) -> None:
    data = path(waypoints)
    events = found(shape, data)
    assert events and events[-1].direction == direction, [(e.pattern, e.index) for e in events]
    event = events[-1]
    slope, at0 = event.details["upper"] if direction == "bullish" else event.details["lower"]
    line = slope * event.index + at0
    assert (data["close"][event.index] > line) if direction == "bullish" else (data["close"][event.index] < line)
    others = set(SHAPES_ALL) - {shape}
    assert all(not [e for e in found(other, data) if e.index == event.index] for other in others)


SHAPES_ALL = ("TRIANGLE_ASCENDING", "TRIANGLE_DESCENDING", "TRIANGLE_SYMMETRIC", "CHANNEL")


def test_swing_points_alternate_and_are_confirmed_after_their_extreme() -> None:
    events = found("SWING_POINTS", path(HS))
    kinds = [e.details["swing"] for e in events]
    assert all(a != b for a, b in itertools.pairwise(kinds))
    assert all(e.points[0][0] < e.index for e in events)


@pytest.mark.parametrize("gaps", [False, True], ids=["clean", "gaps-and-flat-bars"])
@pytest.mark.parametrize("name", sorted({*CHART, "CDLENGULFING"}))
def test_live_events_equal_batch_events_on_real_looking_data(name: str, gaps: bool) -> None:
    """Batch runs over whole arrays, live bar by bar: the same events, even across gaps and flat bars."""
    pattern = CHART.get(name) or {p.name: p for p in candlesticks()}[name]
    data = {k: v for k, v in ohlcv(3000, seed=21).items() if k in ("open", "high", "low", "close")}
    if gaps:
        data["high"][[5, 6, 2000]] = np.nan
        data["close"][[300, 301]] = np.nan
        for column in data.values():
            column[1000:1040] = 100.0
    ts = 1_700_000_000_000 + 60_000 * np.arange(3000)
    params = pattern.resolve({} if not gaps else {k: v for k, v in {"swing_atr": 1.0, "tolerance_atr": 1.5}.items()
                                                  if k in {p.name for p in pattern.params}})
    batch = pattern.detect(data, params, ts)
    stream = pattern.stream(params)
    live = [e for i in range(3000) for e in stream.update({**{k: float(v[i]) for k, v in data.items()},
                                                           "ts": int(ts[i])})]
    assert live == batch  # whole events: index, ts, direction, strength, points and details
    assert all(plain(e.to_wire()) for e in batch)  # what travels is plain data, so equal on the wire too
    if name in ("SWING_POINTS", "LEVEL_BREAKOUT") and not gaps:
        assert batch, "real-looking data has swings and breakouts"
    if name in CHART and not gaps and name != "SWING_POINTS":
        assert all(e.details for e in batch), "every chart event carries details"


def plain(value: Any) -> bool:
    """Is `value` built of Python's own str, int, float, list, tuple and dict only (no numpy scalars)?"""
    if isinstance(value, dict):
        return all(type(k) is str and plain(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return all(plain(v) for v in value)
    return value is None or type(value) in (str, int, float)


async def test_the_service_reports_the_same_chart_events_in_batch_and_live(tmp_path: Path) -> None:
    """``detect`` over REST and live detection over pub/sub, on the same bars: the same events, whole."""
    names = sorted(CHART)
    sections = {"patterns": PluginSection(True, {"live": names}), "sentiment": PluginSection(True, {"live_market": False})}
    data = {k: v for k, v in ohlcv(1000, seed=5).items() if k in ("open", "high", "low", "close")}
    ts = [1_700_000_000_000 + 60_000 * i for i in range(1000)]
    async with running(make_config(tmp_path, modules=(), sections=sections)) as kernel:
        body = {**{k: v.tolist() for k, v in data.items()}, "ts": ts, "patterns": names}
        async with aiohttp.ClientSession() as http:
            async with http.post(kernel.edge_url + "/api/v1/patterns/detect", json=body) as resp:
                assert resp.status == 200, await resp.text()
                grouped = (await resp.json())["events"]
        live = []
        async with pubsub(kernel, b"pattern.CHART.1m") as (pub, sub):
            for i in range(1000):
                bar = {"ts": ts[i], **{k: float(v[i]) for k, v in data.items()}, "volume": 1.0}
                await pub.send_multipart([b"bar.CHART.1m", msgpack.packb(bar)])
            while await sub.poll(1500):
                live += msgpack.unpackb((await sub.recv_multipart())[1])["events"]
    batch = [{"pattern": name, "kind": group["kind"], "index": index, "ts": group["ts"][k],
              "direction": "bullish" if group["direction"][k] > 0 else "bearish", "strength": group["strength"][k],
              "points": group["points"][k], "details": group["details"][k]}
             for name, group in grouped.items() for k, index in enumerate(group["index"])]
    order = names.index
    assert len(batch) > 50 and {e["pattern"] for e in batch} >= {"SWING_POINTS", "LEVEL_BREAKOUT"}
    assert sorted(live, key=lambda e: (e["index"], order(e["pattern"]))) == \
        sorted(batch, key=lambda e: (e["index"], order(e["pattern"])))


def test_gaps_and_flat_bars_do_not_crash_chart_patterns() -> None:
    data = {k: v for k, v in ohlcv(400, seed=3).items() if k in ("open", "high", "low", "close")}
    data["high"][[5, 6, 200]] = np.nan
    data["close"][100:140] = data["open"][100:140] = data["high"][100:140] = data["low"][100:140] = 50.0
    for pattern in CHART.values():
        for event in pattern.detect(data, pattern.resolve({})):
            assert 0 <= event.strength <= 1 and event.points
