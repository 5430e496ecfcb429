"""The trading figures against examples worked by hand: positions from signals, the one-bar delay, costs on
position changes, the equity curve, drawdown, Sharpe and Sortino with the stated annualisation, and the edge
cases (no signal, all flat, constant prices, a single bar)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ml_processing.plugins.replay.trading import (
    evaluate,
    max_drawdown,
    periods_per_year,
    positions,
    targets,
    trading_section,
)

# Closes of five bars and the return of each period (close k to close k + 1):
#   100 -> 110: +10 %,  110 -> 99: -10 %,  99 -> 99: 0 %,  99 -> 108.9: +10 %
CLOSE = np.array([100.0, 110.0, 99.0, 99.0, 108.9])


def test_positions_follow_the_signals_one_bar_late() -> None:
    # buy at bar 0's close, sell at bar 2's: the target after each close is [1, 1, -1, -1, -1]; period k holds
    # the target set at close k, so the four periods hold [1, 1, -1, -1]. Bar 4's target acts on no period.
    assert positions(targets(5, {0: "buy", 2: "sell"}), start=0).tolist() == [1.0, 1.0, -1.0, -1.0]
    # flat closes the position; an unknown side is ignored (the target stays)
    assert positions(targets(5, {0: "buy", 1: "hold", 2: "flat"}), start=0).tolist() == [1.0, 1.0, 0.0, 0.0]
    # a signal on the last bar changes nothing: no period follows it
    assert positions(targets(5, {4: "buy"}), start=0).tolist() == [0.0, 0.0, 0.0, 0.0]
    # the window may start later (the first prediction): a target set before it is carried in
    assert positions(targets(5, {1: "sell"}), start=2).tolist() == [-1.0, -1.0]


def test_a_signal_never_earns_its_own_bar() -> None:
    """No look-ahead: a buy stamped on bar 1 (whose close already rose 10 %) misses that rise."""
    result = evaluate(CLOSE, positions(targets(5, {1: "buy"}), start=0), cost_bps=0.0, periods_per_year=4.0)
    # held [0, 1, 1, 1]: equity 1, 1, 0.9, 0.9, 0.99 (the -10 %, the 0 %, the +10 %)
    assert result.equity.tolist() == pytest.approx([1.0, 1.0, 0.9, 0.9, 0.99])
    assert result.figures.total_return == pytest.approx(-0.01)


def test_long_then_short_with_costs_worked_by_hand() -> None:
    held = positions(targets(5, {0: "buy", 2: "sell"}), start=0)  # [1, 1, -1, -1]
    result = evaluate(CLOSE, held, cost_bps=10.0, periods_per_year=365.25)
    figures = result.figures
    # gross = position x return = [+0.10, -0.10, 0, -0.10]
    # position changes |[1, 0, -2, 0]|: the entry pays 10 bp = 0.001, the flip pays twice = 0.002
    # net = [0.099, -0.10, -0.002, -0.10]
    # equity: 1 -> 1.099 -> 1.099 x 0.9 = 0.9891 -> 0.9891 x 0.998 = 0.9871218 -> x 0.9 = 0.88840962
    assert result.equity.tolist() == pytest.approx([1.0, 1.099, 0.9891, 0.9871218, 0.88840962])
    assert figures.total_return == pytest.approx(-0.11159038)
    assert figures.costs == pytest.approx(0.003)
    assert (figures.trades, figures.turnover) == (2, 3.0)
    # peak 1.099, then x 0.9 x 0.998 x 0.9 = x 0.80838: the drawdown is 0.80838 - 1
    assert figures.max_drawdown == pytest.approx(-0.19162)
    # in the market all four periods; only the first gained: 1 of 4
    assert figures.hit_rate == 0.25
    assert (figures.exposure, figures.exposure_long, figures.exposure_short) == (1.0, 0.5, 0.5)
    # 4 periods of 365.25 a year: turnover 3 over 4 / 365.25 years
    assert figures.turnover_per_year == pytest.approx(3 * 365.25 / 4)


def test_buy_and_hold_on_the_same_bars_pays_its_entry() -> None:
    result = evaluate(CLOSE, np.ones(4), cost_bps=10.0, periods_per_year=365.25)
    # net = [0.10 - 0.001, -0.10, 0, +0.10]: equity 1, 1.099, 0.9891, 0.9891, 1.08801
    assert result.equity.tolist() == pytest.approx([1.0, 1.099, 0.9891, 0.9891, 1.08801])
    assert result.figures.total_return == pytest.approx(0.08801)  # 108.9 / 100 - 1 = 0.089, less 0.1 % x 1.099
    assert result.figures.max_drawdown == pytest.approx(-0.1)  # 1.099 -> 0.9891
    assert result.figures.hit_rate == 0.5  # +10 % twice; the unchanged period is not a hit
    assert (result.figures.trades, result.figures.turnover, result.figures.exposure) == (1, 1.0, 1.0)


def test_sharpe_and_sortino_with_the_stated_annualisation() -> None:
    # closes 100, 101, 99.99, 101.9898, 101.9898: returns +1 %, -1 %, +2 %, 0
    close = np.array([100.0, 101.0, 99.99, 101.9898, 101.9898])
    result = evaluate(close, np.ones(4), cost_bps=0.0, periods_per_year=100.0)
    # mean 0.005; deviations 0.005, -0.015, 0.015, -0.005: squares sum to 5e-4, / (4 - 1): variance 1/6000
    # Sharpe = 0.005 x sqrt(6000) x sqrt(100) = sqrt(0.005^2 x 6000) x 10 = sqrt(0.15) x 10 = sqrt(15)
    assert result.figures.sharpe == pytest.approx(math.sqrt(15))
    # downside deviation sqrt(mean([0, 0.01^2, 0, 0])) = sqrt(0.0001 / 4) = 0.005: Sortino = 1 x 10
    assert result.figures.sortino == pytest.approx(10.0)


def test_annualised_return_compounds_over_the_years_the_periods_span() -> None:
    # +10 % twice over 2 periods of 4 a year (half a year): 1.21 a half year, 1.21^2 - 1 = 0.4641 a year
    result = evaluate(np.array([100.0, 110.0, 121.0]), np.ones(2), cost_bps=0.0, periods_per_year=4.0)
    assert result.figures.total_return == pytest.approx(0.21)
    assert result.figures.annualised_return == pytest.approx(0.4641)
    # a total loss annualises to -100 %
    wiped = evaluate(np.array([100.0, 200.0]), -np.ones(1), cost_bps=0.0, periods_per_year=4.0)
    assert (wiped.figures.total_return, wiped.figures.annualised_return) == (-1.0, -1.0)


def test_periods_per_year_come_from_the_timeframe() -> None:
    assert periods_per_year(86_400_000) == 365.25  # 1d
    assert periods_per_year(3_600_000) == 365.25 * 24  # 1h
    assert periods_per_year(60_000) == 365.25 * 24 * 60  # 1m


def test_no_signal_is_flat_with_nothing_undefined_passed_off_as_a_number() -> None:
    result = evaluate(CLOSE, positions(targets(5, {}), start=0), cost_bps=10.0, periods_per_year=365.25)
    figures = result.figures
    assert result.equity.tolist() == [1.0] * 5
    assert (figures.total_return, figures.annualised_return, figures.max_drawdown) == (0.0, 0.0, 0.0)
    assert (figures.trades, figures.turnover, figures.costs, figures.exposure) == (0, 0.0, 0.0, 0.0)
    assert figures.sharpe is None and figures.sortino is None  # returns that never vary: undefined, not 0
    assert figures.hit_rate is None  # never in the market


def test_constant_prices() -> None:
    flat = np.full(6, 50.0)
    held = evaluate(flat, np.ones(5), cost_bps=0.0, periods_per_year=365.25).figures
    # every return 0: Sharpe and Sortino undefined, no drawdown, no hit (a period with no gain is no hit)
    assert (held.sharpe, held.sortino, held.max_drawdown, held.hit_rate, held.total_return) == (
        None, None, 0.0, 0.0, 0.0)
    # with costs the entry is the one loss: net [-0.001, 0, 0, 0, 0], mean -0.0002
    # std (ddof 1): deviations -0.0008 and 4 x 0.0002: sum of squares 8e-7, / 4 = 2e-7
    costly = evaluate(flat, np.ones(5), cost_bps=10.0, periods_per_year=365.25).figures
    assert costly.sharpe == pytest.approx(-0.0002 / math.sqrt(2e-7) * math.sqrt(365.25))
    # downside sqrt(0.001^2 / 5)
    assert costly.sortino == pytest.approx(-0.0002 / math.sqrt(1e-6 / 5) * math.sqrt(365.25))


def test_a_single_bar_has_no_period() -> None:
    figures = evaluate(np.array([100.0]), np.zeros(0), cost_bps=1.0, periods_per_year=365.25).figures
    assert (figures.total_return, figures.max_drawdown, figures.trades) == (0.0, 0.0, 0)
    assert figures.annualised_return is None and figures.sharpe is None and figures.sortino is None
    assert figures.exposure is None and figures.hit_rate is None and figures.turnover_per_year is None


def test_evaluate_refuses_positions_that_do_not_fit_the_closes() -> None:
    with pytest.raises(ValueError, match="close: 5 closes need 4 positions, got 5"):
        evaluate(CLOSE, np.ones(5), cost_bps=0.0, periods_per_year=1.0)


def test_max_drawdown_from_the_running_peak() -> None:
    # peaks 1.2 then 1.3: falls of 0.9 / 1.2 - 1 = -0.25 and 1.04 / 1.3 - 1 = -0.2; the deepest is -0.25
    assert max_drawdown(np.array([1.0, 1.2, 0.9, 1.3, 1.04])) == pytest.approx(-0.25)
    assert max_drawdown(np.array([1.0, 1.1, 1.2])) == 0.0


def test_trading_section_starts_at_the_window_and_samples_the_equity() -> None:
    close = np.array([90.0, 95.0, *CLOSE])  # two bars of warm-up before the first prediction at bar 2
    section = trading_section(close, {2: "buy", 4: "sell", 6: "buy"}, start=2, cost_bps=10.0,
                              periods_per_year=365.25)
    # the same window as the worked example above: the bar-6 buy is on the last bar and changes nothing
    assert (section["start_bar"], section["periods"], section["signals_used"]) == (2, 4, 2)
    assert section["strategy"]["total_return"] == pytest.approx(-0.11159038, abs=1e-6)
    assert section["buy_and_hold"]["total_return"] == pytest.approx(0.08801, abs=1e-6)
    assert section["equity"]["bar"] == [2, 3, 4, 5, 6]
    assert section["equity"]["strategy"] == pytest.approx([1.0, 1.099, 0.9891, 0.987122, 0.88841])
    assert section["years"] == round(4 / 365.25, 6)

    long = trading_section(np.linspace(100.0, 200.0, 2_001), {0: "buy"}, start=0, cost_bps=0.0,
                           periods_per_year=365.25)
    bars = long["equity"]["bar"]
    assert len(bars) == 500 and (bars[0], bars[-1]) == (0, 2_000)  # sampled, first and last kept
    assert long["equity"]["strategy"][-1] == pytest.approx(2.0) == long["equity"]["buy_and_hold"][-1]
