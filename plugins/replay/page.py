"""``report.html``: the report as one self-contained page (inline CSS and SVG charts, no script, no external
asset): the figures, a table of the models' prequential scores, what the signals would have earned beside
buy-and-hold (a table, ``id="trading"``, and the equity chart), accuracy and ensemble weights over time."""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from .charts import PALETTE, svg_line_chart
from .report import SCORE_HEADER, TRADING_HEADER, number, score_rows, trading_basis, trading_rows

SAMPLED = "no data yet: the service samples these every 50 labels"
RULES = ("Positions follow the signals: buy goes long the whole equity, sell short, flat out; a signal acts from "
         "its bar's close (one bar late: it never earns its own bar's move), held until the next one. Each "
         "position change pays the cost on the size changed (a flip twice). Buy and hold buys at the same first "
         "close. Sharpe and Sortino: no risk-free rate, '-' where undefined (returns that never vary, no losing "
         "period). Rules and fields: docs/OPERATIONS.md, Replay.")

_STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 60rem;
       color: #1d232a; padding: 0 1rem; }
h1 { font-size: 1.5rem; margin-bottom: 0.2rem; } h2 { font-size: 1.15rem; margin-top: 2rem; }
.meta { color: #5b6670; margin-top: 0; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; }
th, td { padding: 0.25rem 0.8rem; border-bottom: 1px solid #e1e5e8; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f3f5f7; font-weight: 600; }
.chart { display: block; margin: 0.5rem 0 1.5rem; font-size: 12px; fill: #1d232a; }
.chart .title { font-size: 14px; font-weight: 600; }
.chart .axis { stroke: #1d232a; stroke-width: 1; } .chart .grid { stroke: #e1e5e8; stroke-width: 1; }
.chart .reference { stroke: #6b757d; stroke-width: 1.2; }
.chart .empty { fill: #5b6670; }
.warnings li { color: #9a3412; }
"""


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]], *, ident: str = "") -> str:
    head = "".join(f"<th>{html.escape(str(cell))}</th>" for cell in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(cell))}</td>" for cell in row) + "</tr>"
                   for row in rows)
    opening = f'<table id="{html.escape(ident)}">' if ident else "<table>"
    return f"{opening}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _figure_rows(report: Mapping[str, Any]) -> list[tuple[str, str]]:
    counts, speed, flow = report["counts"], report["throughput"], report.get("flow", {})
    sides = ", ".join(f"{side} {count:,}" for side, count in sorted(counts.get("signals_by_side", {}).items()))
    rows = [("bars replayed", number(counts["bars"])),
            ("feature rows",
             f"{number(counts['feature_rows'])} ({number(counts['complete_feature_rows'])} complete)"),
            ("predictions", number(counts["predictions"])),
            ("bars before the first prediction", number(counts.get("lookback"))),
            ("signals", number(counts["signals"]) + (f" ({sides})" if sides else "")),
            ("labels", number(counts.get("labels"))),
            ("service start", f"{speed['startup_s']:.2f} s"),
            ("replay time", f"{speed['elapsed_s']:.2f} s"),
            ("throughput, end to end",
             f"{speed['bars_per_s']:,.1f} bars/s, {speed['predictions_per_s']:,.1f} predictions/s")]
    latency = report.get("latency_ms")
    if latency:
        rows.append((f"bar to prediction (up to {flow.get('window')} bars in flight)",
                     f"p50 {latency['p50']:.2f} ms, p90 {latency['p90']:.2f} ms, p99 {latency['p99']:.2f} ms, "
                     f"max {latency['max']:.2f} ms"))
    baseline = report.get("baseline")
    if baseline:
        rows.append(("commoner direction", f"{baseline['majority_accuracy']:.4f} (up {baseline['up_rate']:.4f}, "
                                           f"horizon {baseline['horizon']})"))
    rate = f"{flow['rate']:g} bars/s" if flow.get("rate") else "as fast as the service keeps up"
    rows.append(("flow", f"window {flow.get('window')}, batch {flow.get('batch')}, {rate}, "
                         f"stalls {flow.get('stalls')}"))
    return rows


def _charts(report: Mapping[str, Any]) -> list[str]:
    timelines = report.get("timelines", {})
    accuracy: Mapping[str, Any] = timelines.get("accuracy", {})
    weights: Mapping[str, Any] = timelines.get("weights", {})
    members = [str(m).partition("@")[0] for state in weights.values() for m in state.get("members", [])]
    order = [*weights, *sorted(set(accuracy) | set(members))]
    colors = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(dict.fromkeys(order))}
    baseline = report.get("baseline")
    references = [(0.5, "coin flip")]
    if baseline and abs(baseline["majority_accuracy"] - 0.5) > 0.005:
        references.append((baseline["majority_accuracy"], "commoner direction"))
    series = {model: [(float(x), float(y)) for x, y in accuracy[model]]
              for model in sorted(accuracy, key=lambda m: (m not in weights, m))}
    window = next((s.get("window") for s in report.get("scores", {}).values()), None)
    charts = [svg_line_chart(series, title=f"Rolling accuracy (last {window or '?'} labels) per model",
                             x_label="labels", y_label="rolling accuracy", references=references,
                             colors=colors, empty=SAMPLED)]
    if not weights:
        charts.append(svg_line_chart({}, title="Ensemble weights", x_label="updates", y_label="weight",
                                     empty="no ensemble is attached to the bars"))
    for ensemble, state in weights.items():
        names = [str(m).partition("@")[0] for m in state.get("members", [])]
        member_series = {name: [(float(x), float(ws[j])) for x, ws in state.get("points", []) if j < len(ws)]
                         for j, name in enumerate(names)}
        charts.append(svg_line_chart(member_series, title=f"Weights of {ensemble}'s members", x_label="updates",
                                     y_label="weight", colors=colors, empty=SAMPLED))
    return charts


def _trading(report: Mapping[str, Any]) -> list[str]:
    """The trading section: what it follows, the rules, the table, the equity chart."""
    trading: Mapping[str, Any] = report.get("trading") or {}
    if not trading:
        return []
    equity: Mapping[str, Any] = trading["equity"]
    mine = f"signals of {trading['signals_from']}" if trading.get("signals_from") else "signals (none)"
    series = {name: [(float(x), float(y)) for x, y in zip(equity["bar"], equity[key], strict=True)]
              for name, key in ((mine, "strategy"), ("buy and hold", "buy_and_hold"))} if trading["periods"] else {}
    others = ", ".join(f"{name} ({count:,} bars)" for name, count in trading.get("other_sources", {}).items())
    parts = ["<h2>Trading (what the signals would have earned)</h2>",
             f'<p class="meta">Following {html.escape(trading_basis(trading))}; bars from '
             f"{number(trading['start_bar'])}, the first with a prediction.</p>",
             f'<p class="meta">{html.escape(RULES)}</p>']
    if others:
        parts.append(f'<p class="meta">Signals of other sources, not traded: {html.escape(others)}.</p>')
    parts += [_table(TRADING_HEADER, trading_rows(report), ident="trading"),
              svg_line_chart(series, title="Equity: the signals beside buy and hold", x_label="bar",
                             y_label="equity (start = 1)", references=[(1.0, "start")],
                             colors={mine: PALETTE[0], "buy and hold": "#6b757d"},
                             empty="no period to trade: a single bar")]
    return parts


def render_html(report: Mapping[str, Any]) -> str:
    """The report as one self-contained HTML page: inline CSS and SVG charts, no script, no external asset."""
    e = html.escape
    title = f"Replay of {report['symbol']} {report['timeframe']}"
    bars = report["bars"]
    first = datetime.fromtimestamp(bars["first_ts"] / 1000, UTC).isoformat(timespec="minutes")
    last = datetime.fromtimestamp(bars["last_ts"] / 1000, UTC).isoformat(timespec="minutes")
    warnings = report.get("warnings", [])
    parts = [
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        f"<title>{e(title)}</title>", f"<style>{_STYLE}</style>", "</head>", "<body>",
        f"<h1>{e(title)}</h1>",
        f'<p class="meta">{e(str(report["source"]))}, bars from {e(first)} to {e(last)}; configuration '
        f"{e(str(report['config']))}; ml-processing {e(str(report['version']))}; "
        f"written {e(str(report['created']))}</p>",
        "<h2>Figures</h2>", _table(["figure", "value"], _figure_rows(report)),
        "<h2>Models (prequential: each scored on a label before learning from it)</h2>",
        _table(SCORE_HEADER, score_rows(report)) if report.get("scores") else "<p>No scores: no live model.</p>",
        *_trading(report),
        "<h2>Over time</h2>", *_charts(report),
    ]
    if warnings:
        parts += ["<h2>Warnings</h2>", '<ul class="warnings">', *(f"<li>{e(w)}</li>" for w in warnings), "</ul>"]
    parts += ["</body>", "</html>", ""]
    return "\n".join(parts)
