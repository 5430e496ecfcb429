"""What the signals would have earned: positions from signals, costs on position changes, the equity curve and
its figures (returns, Sharpe, Sortino, drawdown, hit rate, turnover, exposure), beside buy-and-hold on the
same bars. Plain numpy: the well-kept libraries for this (empyrical, quantstats, ffn) stand on pandas.

The rules (docs/OPERATIONS.md, "Trading"):

* **Window.** From the close of the first bar with a prediction (the first bar when nothing was predicted)
  to the close of the last bar: ``m`` periods, period ``k`` running from close ``k`` to close ``k + 1``,
  its return ``r_k = c_(k+1) / c_k - 1``. Strategy and buy-and-hold start with equity 1 at the same close.
* **Positions.** A signal's side sets the target position at its bar's close: ``buy`` +1 (long the whole
  equity), ``sell`` -1 (short), ``flat`` 0; any other side is ignored. The target holds until the next
  signal; before the first it is 0. Several signals on one bar: the last received wins.
* **One bar delay, no look-ahead.** A signal stamped with bar ``k`` is computed from bar ``k``'s close, so
  the position it sets is held over period ``k`` (close ``k`` to close ``k + 1``): it never earns the
  return of its own bar, and a signal on the last bar changes nothing.
* **Costs.** Each change of position costs ``|new - old| x cost_bps / 10,000`` of equity, charged in the
  period the new position is held: entering or leaving pays once, a flip from long to short twice.
  Buy-and-hold pays its entry. A position still open at the end is valued at the last close, unsold.
* **Figures.** ``net_k = position_k x r_k - cost_k``; equity compounds: ``E_(k+1) = E_k (1 + net_k)``.
  Annualisation uses ``periods_per_year`` (365.25 days over the bars' timeframe unless given). Sharpe is
  ``mean(net) / std(net, ddof=1) x sqrt(periods_per_year)`` (no risk-free rate), Sortino
  ``mean(net) / sqrt(mean(min(net, 0)^2)) x sqrt(periods_per_year)``; either is None (JSON null) where it
  is undefined: Sharpe with fewer than two periods or returns that do not vary (all flat, constant prices),
  Sortino without a losing period.

>>> close = np.array([100.0, 110.0, 99.0])
>>> held = positions(targets(3, {0: "buy"}), start=0)
>>> held.tolist()
[1.0, 1.0]
>>> result = evaluate(close, held, cost_bps=0.0, periods_per_year=365.25)
>>> round(result.figures.total_return, 6), result.equity.round(6).tolist()
(-0.01, [1.0, 1.1, 0.99])
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

YEAR_MS = 365.25 * 86_400_000
DEFAULT_COST_BPS = 1.0
SIDES: Mapping[str, float] = {"buy": 1.0, "sell": -1.0, "flat": 0.0}
EQUITY_POINTS = 500  # the sampled equity curve in report.json
STILL = 1e-12  # returns whose standard deviation is below this (or a billionth of their mean) do not vary


def periods_per_year(step_ms: int) -> float:
    """Bars of `step_ms` milliseconds in a calendar year of 365.25 days.

    >>> periods_per_year(86_400_000), periods_per_year(3_600_000), periods_per_year(60_000)
    (365.25, 8766.0, 525960.0)
    """
    return YEAR_MS / step_ms


def targets(n: int, sides: Mapping[int, str]) -> np.ndarray:
    """The target position set at each of `n` bars' closes by the signals' sides (bar index -> side): +1,
    -1 or 0 where a signal set it, NaN where none did (or its side is not one of `SIDES`).

    >>> targets(4, {1: "buy", 3: "shrug"}).tolist()
    [nan, 1.0, nan, nan]
    """
    out = np.full(n, np.nan)
    for index, side in sides.items():
        if 0 <= index < n and side in SIDES:
            out[index] = SIDES[side]
    return out


def positions(target: np.ndarray, *, start: int) -> np.ndarray:
    """The position held over each period of the window that starts at bar `start`: period ``k`` (close
    ``start + k`` to the next close) holds the last target set at or before bar ``start + k``, 0 before
    any. One value per period: ``len(target) - start - 1``.

    >>> positions(np.array([np.nan, 1.0, np.nan, 0.0, -1.0]), start=0).tolist()
    [0.0, 1.0, 1.0, 0.0]
    >>> positions(np.array([1.0, np.nan, np.nan]), start=1).tolist()
    [1.0]
    """
    known = ~np.isnan(target)
    last = np.maximum.accumulate(np.where(known, np.arange(len(target)), -1))
    held = np.where(last >= 0, target[np.maximum(last, 0)], 0.0)
    return held[start:-1].astype(np.float64) if len(target) > start else np.zeros(0)


@dataclass(frozen=True)
class Figures:
    """The figures of one equity curve (fractions: 0.05 is 5 %); None where undefined."""

    total_return: float
    annualised_return: float | None
    sharpe: float | None
    sortino: float | None
    max_drawdown: float  # the deepest fall from a previous peak, <= 0
    hit_rate: float | None  # of the periods in the market, the share whose gross return was positive
    trades: int  # position changes
    turnover: float  # sum of |position change|: 1 for an entry or an exit, 2 for a flip
    turnover_per_year: float | None
    exposure: float | None  # share of the periods in the market
    exposure_long: float | None
    exposure_short: float | None
    costs: float  # the costs charged, summed (fractions of equity)

    def as_json(self, digits: int = 6) -> dict[str, Any]:
        """The figures rounded to `digits` decimals."""
        return {key: round(value, digits) if isinstance(value, float) else value
                for key, value in asdict(self).items()}


@dataclass(frozen=True)
class Result:
    """An equity curve (``m + 1`` values from 1.0) and its figures."""

    equity: np.ndarray
    figures: Figures


def evaluate(close: np.ndarray, held: np.ndarray, *, cost_bps: float, periods_per_year: float) -> Result:
    """The equity curve and figures of holding `held` (one position per period) over the window's closes
    `close` (one more than `held`), paying `cost_bps` per unit of position change."""
    close = np.asarray(close, dtype=np.float64)
    held = np.asarray(held, dtype=np.float64)
    if len(close) != len(held) + 1:
        raise ValueError(f"close: {len(close)} closes need {len(close) - 1} positions, got {len(held)}")
    m = len(held)
    r = close[1:] / close[:-1] - 1.0
    change = np.abs(np.diff(held, prepend=0.0))
    gross = held * r
    cost = change * (cost_bps / 10_000.0)
    net = gross - cost
    equity = np.concatenate(([1.0], np.cumprod(1.0 + net)))
    years = m / periods_per_year
    in_market = held != 0
    figures = Figures(
        total_return=float(equity[-1] - 1.0),
        annualised_return=_annualised(float(equity[-1]), years),
        sharpe=_sharpe(net, periods_per_year),
        sortino=_sortino(net, periods_per_year),
        max_drawdown=max_drawdown(equity),
        hit_rate=float(np.mean(gross[in_market] > 0)) if in_market.any() else None,
        trades=int(np.count_nonzero(change)),
        turnover=float(change.sum()),
        turnover_per_year=float(change.sum() / years) if years > 0 else None,
        exposure=float(np.mean(in_market)) if m else None,
        exposure_long=float(np.mean(held > 0)) if m else None,
        exposure_short=float(np.mean(held < 0)) if m else None,
        costs=float(cost.sum()))
    return Result(equity, figures)


def max_drawdown(equity: np.ndarray) -> float:
    """The deepest fall of `equity` from its running peak, as a fraction (<= 0).

    >>> max_drawdown(np.array([1.0, 1.2, 0.9, 1.3, 1.04]))
    -0.25
    """
    if not len(equity):
        return 0.0
    peak = np.maximum.accumulate(equity)
    return float(min(0.0, np.min(equity / peak - 1.0)))


def _annualised(final: float, years: float) -> float | None:
    """``final ** (1 / years) - 1``; -1 after a total loss; None without time, or past a float's range."""
    if years <= 0:
        return None
    if final <= 0:
        return -1.0
    exponent = math.log(final) / years
    return math.expm1(exponent) if exponent < 700 else None


def _varies(net: np.ndarray, spread: float) -> bool:
    return spread > STILL and spread > 1e-9 * abs(float(np.mean(net)))


def _sharpe(net: np.ndarray, periods_per_year: float) -> float | None:
    if len(net) < 2:
        return None
    std = float(np.std(net, ddof=1))
    if not _varies(net, std):
        return None
    return float(np.mean(net)) / std * math.sqrt(periods_per_year)


def _sortino(net: np.ndarray, periods_per_year: float) -> float | None:
    if not len(net):
        return None
    downside = math.sqrt(float(np.mean(np.minimum(net, 0.0) ** 2)))
    if downside <= STILL:
        return None
    return float(np.mean(net)) / downside * math.sqrt(periods_per_year)


def sample(length: int, points: int = EQUITY_POINTS) -> np.ndarray:
    """At most `points` evenly spaced indices of ``range(length)``, the first and the last always in.

    >>> sample(10, 4).tolist(), sample(3, 4).tolist()
    ([0, 3, 6, 9], [0, 1, 2])
    """
    if length <= points:
        return np.arange(length)
    return np.unique(np.linspace(0, length - 1, points).round().astype(np.int64))


def trading_section(close: np.ndarray, sides: Mapping[int, str], *, start: int, cost_bps: float,
                    periods_per_year: float) -> dict[str, Any]:
    """The report's ``trading`` figures over bars ``start`` to the last of `close`: the strategy that follows
    the signals' `sides` (bar index -> side) and buy-and-hold, their figures and sampled equity curves."""
    close = np.asarray(close, dtype=np.float64)
    window = close[start:]
    held = positions(targets(len(close), sides), start=start)
    strategy = evaluate(window, held, cost_bps=cost_bps, periods_per_year=periods_per_year)
    hold = evaluate(window, np.ones(len(held)), cost_bps=cost_bps, periods_per_year=periods_per_year)
    picked = sample(len(window))
    return {
        "cost_bps": cost_bps, "periods_per_year": round(periods_per_year, 6),
        "start_bar": start, "periods": len(held), "years": round(len(held) / periods_per_year, 6),
        "signals_used": sum(1 for i, side in sides.items() if start <= i < len(close) - 1 and side in SIDES),
        "strategy": strategy.figures.as_json(), "buy_and_hold": hold.figures.as_json(),
        "equity": {"bar": (picked + start).tolist(), "strategy": strategy.equity[picked].round(6).tolist(),
                   "buy_and_hold": hold.equity[picked].round(6).tolist()},
    }
