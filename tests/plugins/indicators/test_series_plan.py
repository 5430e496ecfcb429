"""The per-bar path of a series once its streams are open (TA-Lib's own updates called directly, the bar's row
kept in a short buffer before the ring's array): the same values, bit for bit, as each stream fed the bar by
its own `update`, and the same bars held."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from ml_processing.plugins.indicators import builtin_indicators
from ml_processing.plugins.indicators.market import Live, Series
from ml_processing.sdk.bars import FIELDS, check_bar
from tests.support.series import ohlcv

REGISTRY = {i.name: i for i in builtin_indicators()}
#: every registered indicator a bar can feed (MAVP reads a ``periods`` column no bar carries)
LIVE = sorted(name for name, i in REGISTRY.items() if set(i.inputs) <= {"ts", *FIELDS})


def bars(n: int, seed: int = 3) -> list[dict[str, Any]]:
    data = ohlcv(n, seed)
    return [{"ts": int(data["ts"][i]), **{c: float(data[c][i]) for c in FIELDS}} for i in range(n)]


def same(a: float, b: float) -> bool:
    return (a != a and b != b) or (a == b and type(a) is type(b))


def test_every_indicator_on_one_series_equals_its_own_stream_through_gaps_and_changes() -> None:
    """All the indicators on one series (so every way a stream is called: one column, several adjacent or
    not, several outputs, the plugin's own) against a fresh stream of each fed bar by bar: equal at every bar,
    through the warm-up, bars with a NaN in one column (each stream skips them, or not, by its own inputs),
    and an indicator added and one removed mid-way."""
    series = Series("ES", "1h", 1000)
    streams: dict[str, Any] = {}
    for name in LIVE:
        series.add(Live.parse(name, REGISTRY))
        streams[name] = REGISTRY[name].stream({p.name: p.default for p in REGISTRY[name].params})
    items = bars(400)
    items[250]["volume"] = math.nan
    items[251]["close"] = math.nan
    items[300]["high"] = items[300]["low"] = math.nan
    for i, raw in enumerate(items):
        if i == 280:
            series.add(Live.parse("SMA(timeperiod=7)", REGISTRY))
            streams["SMA_7"] = REGISTRY["SMA"].stream({"timeperiod": 7})
            for earlier in items[:i]:  # the new stream replays the bars the series held
                streams["SMA_7"].update(check_bar(earlier))
        if i == 320:
            key = Live.parse("RSI", REGISTRY).key
            assert series.remove(key)
            del streams["RSI"]
        bar = check_bar(raw)
        series.on_bar(bar)
        expected = [v for stream in streams.values() for v in stream.update(bar)]
        got = list(series.values.values())
        assert len(got) == len(expected), i
        wrong = [k for k, a, b in zip(series.values, got, expected, strict=True) if not same(a, b)]
        assert not wrong, (i, wrong[:5])
    assert series._plan is not None  # the direct path ran (every TA-Lib stream opened)


@pytest.mark.parametrize("capacity", [10, 63, 64, 65, 200])
def test_the_ring_holds_the_newest_bars_whatever_its_capacity(capacity: int) -> None:
    """Rows appended go to a buffer first, into the array every 64 rows and when read: read at any point
    (mid-buffer, past a wrap, after a load), the ring holds the newest `capacity` bars, oldest first."""
    series = Series("ES", "1h", capacity)
    items = [check_bar(b) for b in bars(300)]
    for i, bar in enumerate(items, 1):
        series.on_bar(bar)
        if i % 37 == 0 or i in (capacity, capacity + 1, 64, 65, 128, 300):
            expected = np.array([[b["ts"], *(b[c] for c in FIELDS)] for b in items[max(0, i - capacity):i]])
            assert series.ring.count == len(expected)
            np.testing.assert_array_equal(series.ring.rows(), expected)
            np.testing.assert_array_equal(series.ring.rows(5), expected[-5:])
    loaded = Series("ES", "1h", capacity)
    loaded.ring.load(series.ring.rows()[:-3])
    for bar in items[-3:]:
        loaded.on_bar(bar)
    np.testing.assert_array_equal(loaded.ring.rows(), series.ring.rows())
