"""The figures of a replay (``report.json``) and their plain-text summary.

The report puts what came back on the SUB socket (`Tap`: feature rows, predictions, signals, latency) beside
the ``models`` service's live report (`ml_processing.sdk.services.models.LiveReport`: prequential scores,
ensemble weights, drift, timelines), the accuracy of always guessing the commoner direction, and what the
signals would have earned beside buy-and-hold (`trading`).

>>> number(1234), number(0.5), number(None), number(float("nan"))
('1,234', '0.5000', '-', '-')
>>> percent(0.01234), percent(-0.5), percent(None)
('+1.23%', '-50.00%', '-')
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np

from ml_processing.sdk import VERSION
from ml_processing.sdk.services.models import LiveReport

from .sources import Bar, step_ms
from .tap import Tap
from .trading import DEFAULT_COST_BPS, periods_per_year, trading_section

SCORE_HEADER = ["model", "labels", "accuracy", "rolling", "log loss", "drifts", "weight"]
TRADING_HEADER = ["figure", "signals", "buy and hold"]
#: The rows of the trading table: label, key of the figures, kind of number ("%": a return as a signed
#: percentage, "share": a share as a percentage, "x": a plain number with 2 decimals, "n": a count).
TRADING_ROWS = (("total return", "total_return", "%"), ("annualised return", "annualised_return", "%"),
                ("Sharpe (annualised)", "sharpe", "x"), ("Sortino (annualised)", "sortino", "x"),
                ("maximum drawdown", "max_drawdown", "%"),
                ("hit rate (periods in the market)", "hit_rate", "share"),
                ("trades (position changes)", "trades", "n"), ("turnover (x equity)", "turnover", "x"),
                ("turnover per year", "turnover_per_year", "x"), ("exposure", "exposure", "share"),
                ("long", "exposure_long", "share"), ("short", "exposure_short", "share"),
                ("costs", "costs", "share"))


def _percentiles(values: np.ndarray) -> dict[str, float] | None:
    values = values[~np.isnan(values)]
    if not len(values):
        return None
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return {"p50": round(float(p50), 3), "p90": round(float(p90), 3), "p99": round(float(p99), 3),
            "max": round(float(values.max()), 3), "bars": len(values)}


def _baseline(bars: Sequence[Bar], tap: Tap, horizon: int) -> dict[str, Any] | None:
    """How often the close rose `horizon` bars after a predicted bar (what always guessing scores)."""
    predicted = np.flatnonzero(~np.isnan(tap.answered_at))
    predicted = predicted[predicted + horizon < len(bars)]
    if horizon <= 0 or not len(predicted):
        return None
    close = np.fromiter((bar["close"] for bar in bars), dtype=np.float64, count=len(bars))
    up = float(np.mean(close[predicted + horizon] > close[predicted]))
    return {"horizon": horizon, "labels": len(predicted), "up_rate": round(up, 4),
            "majority_accuracy": round(max(up, 1 - up), 4)}


def _timelines(live: LiveReport) -> dict[str, Any]:
    """The service's timelines (sampled every 50 labels), each ending with the final figure."""
    raw: Mapping[str, Any] = live.get("timelines") or {}
    accuracy: dict[str, list[tuple[float, float]]] = {}
    for model, points in (raw.get("accuracy") or {}).items():
        series = [(float(x), float(y)) for x, y in points]
        score: Mapping[str, Any] = (live.get("scores") or {}).get(model) or {}
        if score.get("labels") and (not series or series[-1][0] < score["labels"]):
            series.append((float(score["labels"]), float(score["rolling_accuracy"])))
        accuracy[model] = series
    weights: dict[str, dict[str, Any]] = {}
    for ensemble, steps_raw in (raw.get("weights") or {}).items():
        state: Mapping[str, Any] = (live.get("weights") or {}).get(ensemble) or {}
        steps = [(float(x), [float(w) for w in ws]) for x, ws in steps_raw]
        if state.get("updates") and (not steps or steps[-1][0] < state["updates"]):
            steps.append((float(state["updates"]), [float(w) for w in state["weights"]]))
        weights[ensemble] = {"members": list(state.get("members") or []), "points": steps}
    return {"accuracy": accuracy, "weights": weights}


def _lookback(bars: Sequence[Bar], tap: Tap) -> int | None:
    """Bars before the first prediction (the feature pipeline's warm-up)."""
    if tap.first_prediction_ts is None:
        return None
    return next(i for i, bar in enumerate(bars) if bar["ts"] == tap.first_prediction_ts)


def _trading(bars: Sequence[Bar], tap: Tap, attached: Sequence[Any], timeframe: str, cost_bps: float,
             per_year: float | None) -> dict[str, Any]:
    """The trading figures (`trading_section`) of the signals of one source: the first attached model that
    sent any, else the source that sent most; the others are named with their counts, not traded."""
    models = [str(entry.get("model")).partition("@")[0] for entry in attached if isinstance(entry, Mapping)]
    chosen = next((m for m in models if m in tap.sides), None)
    if chosen is None and tap.sides:
        chosen = max(sorted(tap.sides), key=lambda name: len(tap.sides[name]))
    close = np.fromiter((bar["close"] for bar in bars), dtype=np.float64, count=len(bars))
    section = trading_section(close, tap.sides.get(chosen, {}) if chosen else {}, start=_lookback(bars, tap) or 0,
                              cost_bps=cost_bps, periods_per_year=per_year or periods_per_year(step_ms(timeframe)))
    others = {name: len(sides) for name, sides in sorted(tap.sides.items()) if name != chosen}
    return {"signals_from": chosen, "other_sources": others, **section}


def build_report(*, bars: Sequence[Bar], tap: Tap, live: LiveReport | None, symbol: str, timeframe: str,
                 source: str, config_source: str, startup: float, elapsed: float, flow: Mapping[str, Any],
                 warnings: Sequence[str], cost_bps: float = DEFAULT_COST_BPS,
                 periods_per_year: float | None = None) -> dict[str, Any]:
    """Every figure of a replay, JSON-ready; `cost_bps` and `periods_per_year` (None: from the timeframe)
    for the trading figures."""
    n = len(bars)
    service: dict[str, Any] = dict(live.get("counts") or {}) if live else {}
    attached: list[Any] = list(live.get("attached") or []) if live else []
    horizon = int(attached[0].get("horizon") or 0) if len(attached) == 1 else 0
    elapsed = max(elapsed, 1e-9)
    latency = (tap.answered_at - tap.sent_at) * 1000
    return {
        "command": "replay", "version": VERSION, "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": config_source, "source": source, "symbol": symbol, "timeframe": timeframe,
        "bars": {"count": n, "first_ts": bars[0]["ts"], "last_ts": bars[-1]["ts"],
                 "first_close": bars[0]["close"], "last_close": bars[-1]["close"]},
        "counts": {"bars": n, "sent": tap.sent, "feature_rows": tap.feature_rows,
                   "complete_feature_rows": tap.complete_rows, "predictions": tap.predictions,
                   "predictions_by_model": dict(tap.by_model), "lookback": _lookback(bars, tap),
                   "signals": sum(tap.signals.values()), "signals_by_side": dict(tap.signals),
                   "labels": service.get("labels"), "other_timeframes": tap.other_timeframes,
                   "malformed": tap.malformed},
        "service_counts": service,
        "throughput": {"startup_s": round(startup, 3), "elapsed_s": round(elapsed, 3),
                       "bars_per_s": round(tap.sent / elapsed, 1),
                       "predictions_per_s": round(tap.predictions / elapsed, 1)},
        "latency_ms": _percentiles(latency),
        "scores": dict(live.get("scores") or {}) if live else {},
        "baseline": _baseline(bars, tap, horizon),
        "weights": dict(live.get("weights") or {}) if live else {},
        "timelines": _timelines(live) if live else {"accuracy": {}, "weights": {}},
        "trading": _trading(bars, tap, attached, timeframe, cost_bps, periods_per_year),
        "drift": dict(live.get("drift") or {}) if live else {},
        "attached": attached,
        "flow": dict(flow),
        "warnings": list(warnings),
    }


def json_ready(value: Any) -> Any:
    """`value` with NaN and infinities as null (JSON has neither).

    >>> json_ready({"a": [1.0, float("inf")], "b": (float("nan"),)})
    {'a': [1.0, None], 'b': [None]}
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    return value


def number(value: Any, digits: int = 4) -> str:
    """A figure as a table cell: thousands separated, `digits` decimals for a float, ``-`` for none."""
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.{digits}f}" if math.isfinite(value) else "-"


def percent(value: Any) -> str:
    """A fraction as a signed percentage with 2 decimals; ``-`` for none."""
    return "-" if value is None else f"{value * 100:+,.2f}%"


def figure(value: Any, kind: str) -> str:
    """A trading figure as a table cell, by its kind in `TRADING_ROWS`."""
    if kind == "%":
        return percent(value)
    if kind == "share":
        return "-" if value is None else f"{value * 100:,.2f}%"
    if kind == "x":
        return "-" if value is None else f"{value:,.2f}"
    return number(value)


def trading_rows(report: Mapping[str, Any]) -> list[list[str]]:
    """The trading figures, the signals' beside buy-and-hold's; the columns of `TRADING_HEADER`."""
    trading: Mapping[str, Any] = report.get("trading") or {}
    if not trading:
        return []
    return [[label, figure(trading["strategy"][key], kind), figure(trading["buy_and_hold"][key], kind)]
            for label, key, kind in TRADING_ROWS]


def trading_basis(trading: Mapping[str, Any]) -> str:
    """One line on what the trading figures follow: the signals' source, the cost, the periods."""
    source = trading.get("signals_from")
    who = f"the signals of {source}" if source else "no signals (flat throughout)"
    days = trading["years"] * 365.25
    span = f"{days:,.1f} days" if days < 365.25 else f"{trading['years']:,.2f} years"
    return (f"{who}, {trading['cost_bps']:g} bp per unit traded, {number(trading['periods'])} periods "
            f"({span}; {trading['periods_per_year']:,.10g} a year)")


def _final_weights(report: Mapping[str, Any]) -> dict[str, float]:
    """Member -> final weight, over every ensemble (a member of several keeps the first)."""
    out: dict[str, float] = {}
    for state in report.get("weights", {}).values():
        for member, weight in zip(state.get("members", []), state.get("weights", []), strict=False):
            out.setdefault(str(member).partition("@")[0], float(weight))
    return out


def score_rows(report: Mapping[str, Any]) -> list[list[str]]:
    """Per model (ensembles first): name, labels, accuracy, rolling accuracy, log loss, drifts, final
    ensemble weight; the columns of `SCORE_HEADER`."""
    weights = _final_weights(report)
    scores: Mapping[str, Any] = report.get("scores", {})
    ensembles = [m for m in scores if m in report.get("weights", {})]
    rows = []
    for model in [*ensembles, *sorted(m for m in scores if m not in ensembles)]:
        s = scores[model]
        rows.append([model, number(s.get("labels")), number(s.get("accuracy")),
                     number(s.get("rolling_accuracy")), number(s.get("log_loss")), number(s.get("drifts")),
                     number(weights.get(model))])
    return rows


def summary(report: Mapping[str, Any]) -> str:
    """A short plain-text summary: the figures and a table of the models."""
    counts, speed = report["counts"], report["throughput"]
    lines = [f"replay {report['symbol']} {report['timeframe']} from {report['source']}: "
             f"{counts['bars']:,} bars, {counts['predictions']:,} predictions, {counts['signals']:,} signals, "
             f"{number(counts['labels'])} labels, {speed['bars_per_s']:,.0f} bars/s "
             f"({speed['elapsed_s']:.1f} s after a {speed['startup_s']:.1f} s start)"]
    rows = [SCORE_HEADER, *score_rows(report)]
    if len(rows) > 1:
        widths = [max(len(row[i]) for row in rows) for i in range(len(SCORE_HEADER))]
        for row in rows:
            lines.append("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                                   for i, (cell, w) in enumerate(zip(row, widths, strict=True))))
    baseline = report.get("baseline")
    if baseline:
        lines.append(f"always guessing the commoner direction: {baseline['majority_accuracy']:.4f} "
                     f"(up {baseline['up_rate']:.4f} of {baseline['labels']:,} labels)")
    trading = report.get("trading")
    if trading:
        signals, hold = trading["strategy"], trading["buy_and_hold"]
        lines.append(f"trading on {trading_basis(trading)}: return {percent(signals['total_return'])} "
                     f"(buy and hold {percent(hold['total_return'])}), Sharpe {figure(signals['sharpe'], 'x')} "
                     f"({figure(hold['sharpe'], 'x')}), max drawdown {percent(signals['max_drawdown'])} "
                     f"({percent(hold['max_drawdown'])}), {signals['trades']:,} trades")
    lines += [f"warning: {text}" for text in report.get("warnings", [])]
    return "\n".join(lines)
