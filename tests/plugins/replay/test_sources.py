"""Bars to replay: CSV files (header spellings, dates, bad rows, order) and the seeded synthetic market."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ml_processing.plugins.replay.sources import START_MS, ReplayInputError, read_csv, step_ms, synthetic_bars
from ml_processing.sdk.synthetic import market
from tests.plugins.replay.helpers import write


def test_read_csv_with_mixed_header_case_iso_dates_and_a_bad_row(tmp_path: Path) -> None:
    path = write(tmp_path, "bars.csv", (
        " Date ,OPEN,High,low,Close,VOLUME\n"
        "2025-01-01T00:00:00Z,1,2,0.5,1.5,10\n"
        "2025-01-01T00:01:00+00:00,1.5,2,1,1.8,12\n"
        "2025-01-01T00:02:00Z,1.8,x,1,1.7,9\n"
        "\n"
        "2025-01-01 00:03:00,1.7,1.9,1.6,1.65,11\n"
        "2025-01-01T00:04:00Z,1.65,1.7\n"))
    read = read_csv(path)
    assert [bar["ts"] for bar in read.bars] == [START_MS, START_MS + 60_000, START_MS + 180_000]
    assert [bar["close"] for bar in read.bars] == [1.5, 1.8, 1.65]
    assert read.bars[0] == {"ts": START_MS, "open": 1.0, "high": 2.0, "low": 0.5, "close": 1.5, "volume": 10.0}
    assert read.skipped == ["line 4: high: not a number ('x')", "line 7: 3 cells, the header has at least 6"]
    assert not read.reordered


def test_read_csv_epoch_numbers_out_of_order_and_repeated(tmp_path: Path) -> None:
    seconds = START_MS // 1000
    path = write(tmp_path, "epoch.csv", (
        "timestamp,open,high,low,close,volume\n"
        f"{seconds + 60},1,1,1,2,1\n"
        f"{START_MS},1,1,1,1,1\n"  # milliseconds
        f"{seconds + 60},1,1,1,3,1\n"
        f"{seconds + 120},1,1,1,4,-5\n"))
    read = read_csv(path)
    assert [(bar["ts"], bar["close"]) for bar in read.bars] == [(START_MS, 1.0), (START_MS + 60_000, 2.0)]
    assert read.reordered
    assert read.skipped == [f"line 4: timestamp {START_MS + 60_000} repeats line 2", "line 5: volume: negative (-5.0)"]
    assert [bar["ts"] for bar in read_csv(path, limit=1).bars] == [START_MS]


def test_read_csv_without_close_is_a_clear_error(tmp_path: Path) -> None:
    path = write(tmp_path, "no-close.csv", "ts,open,high,low,volume\n1735689600000,1,2,0.5,10\n")
    with pytest.raises(ReplayInputError) as caught:
        read_csv(path)
    message = str(caught.value)
    assert str(path) in message and "missing close" in message and "open, high, low, close, volume" in message


@pytest.mark.parametrize(("text", "expected"), [
    ("open,high,low,close,volume\n1,1,1,1,1\n", "a time column"),
    ("", "empty file"),
    ("ts,open,high,low,close,volume\nyesterday,1,1,1,1,1\n", "no usable bars"),
])
def test_read_csv_refuses_unusable_files(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ReplayInputError, match=expected):
        read_csv(write(tmp_path, "bad.csv", text))
    with pytest.raises(ReplayInputError, match="cannot read"):
        read_csv(tmp_path / "missing.csv")


def test_synthetic_bars_are_deterministic_for_a_seed() -> None:
    bars = synthetic_bars(500, seed=42)
    assert bars == synthetic_bars(500, seed=42)
    assert bars != synthetic_bars(500, seed=43)
    assert [bar["ts"] - START_MS for bar in bars[:3]] == [0, 60_000, 120_000]
    assert all(b["low"] <= min(b["open"], b["close"]) <= max(b["open"], b["close"]) <= b["high"] for b in bars)
    assert all(b["volume"] > 0 for b in bars)
    assert [b["open"] for b in bars[1:]] == [b["close"] for b in bars[:-1]]
    hourly = synthetic_bars(3, seed=42, step_ms=3_600_000)
    assert [bar["ts"] % 3_600_000 for bar in hourly] == [0, 0, 0]


def test_synthetic_bars_are_the_sdk_market_as_rows() -> None:
    """One synthetic market: the replay's bars are `sdk.synthetic.market`'s, from the replay's start."""
    columns = market(200, seed=5, start_ms=START_MS)
    bars = synthetic_bars(200, seed=5)
    for name in ("ts", "open", "high", "low", "close", "volume"):
        assert np.array_equal(columns[name], [bar[name] for bar in bars]), name  # type: ignore[literal-required]
    assert all(type(bar["ts"]) is int and type(bar["close"]) is float for bar in bars)  # msgpack-ready


def test_timeframe_grammar_is_the_sdk_one() -> None:
    assert step_ms("4h") == 4 * 3_600_000
    with pytest.raises(ReplayInputError, match="timeframe '1x' is not N followed by"):
        step_ms("1x")
