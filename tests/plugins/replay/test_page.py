"""The report's ``trading`` section built from what a tap caught, and its place in ``report.html``: the trading
table showing the report's numbers, the equity chart beside buy-and-hold, the page still self-contained."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ml_processing.plugins.replay.page import render_html
from ml_processing.plugins.replay.report import build_report, json_ready, summary
from ml_processing.plugins.replay.sources import START_MS, Bar
from ml_processing.plugins.replay.tap import Tap
from ml_processing.sdk import topics
from tests.plugins.replay.helpers import assert_self_contained, assert_trading_shown, parse_page

SYMBOL, TIMEFRAME = "TST", "1d"
# two warm-up bars, then the closes of the worked example of test_trading.py (returns +10 %, -10 %, 0, +10 %)
CLOSES = [90.0, 95.0, 100.0, 110.0, 99.0, 99.0, 108.9]


def _bars() -> list[Bar]:
    return [Bar(ts=START_MS + i * 86_400_000, open=c, high=c, low=c, close=c, volume=1.0)
            for i, c in enumerate(CLOSES)]


def _caught(bars: list[Bar], signals: list[tuple[int, str, dict[str, Any]]], first_prediction: int = 2) -> Tap:
    """A tap that caught a prediction for every bar from `first_prediction` and `signals` (bar, side, sender)."""
    tap = Tap.of(SYMBOL, TIMEFRAME, [bar["ts"] for bar in bars])
    tap.sent = len(bars)
    for i in range(first_prediction, len(bars)):
        tap.receive(topics.prediction(SYMBOL), {"symbol": SYMBOL, "timeframe": TIMEFRAME, "ts": bars[i]["ts"],
                                                "model": "ensemble@1", "prediction": 1})
    for i, side, sender in signals:
        tap.receive(topics.signal(SYMBOL), {"symbol": SYMBOL, "timeframe": TIMEFRAME, "ts": bars[i]["ts"],
                                            "side": side, **sender})
    return tap


def _report(tap: Tap, bars: list[Bar], *, attached: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    live: Any = None if attached is None else {"counts": {}, "scores": {}, "weights": {}, "drift": {},
                                               "attached": attached}
    report = build_report(bars=bars, tap=tap, live=live, symbol=SYMBOL, timeframe=TIMEFRAME, source="test",
                          config_source="<test>", startup=0.1, elapsed=1.0, flow={"window": 64}, warnings=[],
                          cost_bps=10.0)
    return json.loads(json.dumps(json_ready(report), allow_nan=False))  # as report.json holds it


ENSEMBLE = {"model": "ensemble@1"}
PATTERNS = {"source": "patterns"}


def test_trading_follows_the_signals_of_the_busiest_source_from_the_first_prediction() -> None:
    bars = _bars()
    tap = _caught(bars, [(2, "buy", ENSEMBLE), (4, "sell", ENSEMBLE), (3, "sell", PATTERNS), (6, "buy", ENSEMBLE)])
    trading = _report(tap, bars)["trading"]
    assert (trading["signals_from"], trading["other_sources"]) == ("ensemble", {"patterns": 1})
    assert (trading["start_bar"], trading["periods"], trading["signals_used"]) == (2, 4, 2)
    assert (trading["cost_bps"], trading["periods_per_year"]) == (10.0, 365.25)  # 1d bars: 365.25 a year
    # the worked example of test_trading.py: long, flipped short, 10 bp a unit traded
    assert trading["strategy"]["total_return"] == pytest.approx(-0.11159038, abs=1e-6)
    assert trading["strategy"]["max_drawdown"] == pytest.approx(-0.19162, abs=1e-6)
    assert trading["buy_and_hold"]["total_return"] == pytest.approx(0.08801, abs=1e-6)
    assert trading["equity"]["bar"] == [2, 3, 4, 5, 6]


def test_an_attached_model_goes_before_a_busier_source() -> None:
    bars = _bars()
    tap = _caught(bars, [(2, "buy", ENSEMBLE), (2, "sell", PATTERNS), (3, "buy", PATTERNS)])
    trading = _report(tap, bars, attached=[{"model": "ensemble", "horizon": 1}])["trading"]
    assert (trading["signals_from"], trading["other_sources"]) == ("ensemble", {"patterns": 2})
    assert _report(tap, bars)["trading"]["signals_from"] == "patterns"


def test_the_page_shows_the_trading_table_and_the_equity_chart() -> None:
    bars = _bars()
    report = _report(_caught(bars, [(2, "buy", ENSEMBLE), (4, "sell", ENSEMBLE), (3, "sell", PATTERNS)]), bars)
    page = render_html(report)
    assert_self_contained(page)
    parsed = assert_trading_shown(page, report)
    table = {row[0]: row[1:] for row in parsed.tables["trading"][1:]}
    assert table["total return"] == ["-11.16%", "+8.80%"]  # worked by hand in test_trading.py
    assert table["maximum drawdown"] == ["-19.16%", "-10.00%"]
    assert table["trades (position changes)"] == ["2", "1"]
    assert table["hit rate (periods in the market)"] == ["25.00%", "50.00%"]
    heading = "h2:Trading (what the signals would have earned)"
    order = parsed.order
    assert order.index(heading) < order.index("table:trading") < order.index(
        "chart:Equity: the signals beside buy and hold") < order.index("h2:Over time")
    assert "Signals of other sources, not traded: patterns (1 bars)." in page
    assert "Following the signals of ensemble, 10 bp per unit traded, 4 periods (4.0 days; 365.25 a year)" in page
    line = next(line for line in summary(report).splitlines() if line.startswith("trading"))
    assert "return -11.16% (buy and hold +8.80%)" in line and "max drawdown -19.16% (-10.00%), 2 trades" in line


def test_without_a_signal_the_page_shows_a_flat_strategy_and_undefined_ratios() -> None:
    bars = _bars()
    report = _report(_caught(bars, [], first_prediction=len(bars)), bars)  # nothing predicted: from bar 0
    trading = report["trading"]
    assert (trading["signals_from"], trading["start_bar"], trading["periods"]) == (None, 0, 6)
    assert trading["strategy"]["sharpe"] is None and trading["strategy"]["hit_rate"] is None
    assert trading["equity"]["strategy"] == [1.0] * 7
    page = render_html(report)
    parsed = assert_trading_shown(page, report)
    table = {row[0]: row[1:] for row in parsed.tables["trading"][1:]}
    assert table["Sharpe (annualised)"][0] == "-" and table["total return"][0] == "+0.00%"
    assert "Following no signals (flat throughout)" in page


def test_a_single_bar_draws_an_empty_equity_chart() -> None:
    bars = _bars()[:1]
    report = _report(_caught(bars, [], first_prediction=1), bars)
    assert report["trading"]["periods"] == 0 and report["trading"]["equity"]["bar"] == [0]
    page = render_html(report)
    assert_trading_shown(page, report)
    assert "no period to trade: a single bar" in page
    assert parse_page(page).tables["trading"][1] == ["total return", "+0.00%", "+0.00%"]
