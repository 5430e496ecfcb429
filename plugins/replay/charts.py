"""Inline SVG line charts for the report page: axes with round ticks, dashed reference lines, a legend; no
script and no external asset, so the page opens anywhere.

>>> chart = svg_line_chart({"a": [(0.0, 0.5), (1.0, 0.75)]}, title="t", x_label="x", y_label="y")
>>> chart.startswith("<svg") and chart.count("<polyline") == 1 and chart.endswith("</svg>")
True
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
           "#9c755f", "#bab0ac")

Series = Mapping[str, Sequence[tuple[float, float]]]
DASHES = ("2 3", "7 4", "10 3 2 3")



def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About `count` round tick values covering ``[low, high]`` (steps of 1, 2, 2.5 or 5 times 10^k).

    >>> nice_ticks(0.0, 1.0)
    [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    >>> nice_ticks(50, 380, 4)
    [0.0, 100.0, 200.0, 300.0, 400.0]
    """
    if not high > low:
        high = low + 1.0
    raw = (high - low) / max(1, count)
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1.0, 2.0, 2.5, 5.0, 10.0) if m * power >= raw * 0.999)
    first = math.floor(low / step + 1e-9) * step
    ticks: list[float] = []
    value = first
    while value <= high + step * 1e-9 or len(ticks) < 2:
        ticks.append(round(value, 12))
        value = first + len(ticks) * step
    if ticks[-1] < high:
        ticks.append(round(first + len(ticks) * step, 12))
    return ticks


def _tick_label(value: float, step: float) -> str:
    decimals = max(0, -math.floor(math.log10(step) + 1e-9)) if step > 0 else 0
    if abs(step * 10**decimals - round(step * 10**decimals)) > 1e-9:
        decimals += 1
    return f"{value:,.{decimals}f}"


@dataclass(frozen=True)
class _Frame:
    """The plot area of a chart and the mapping of data to pixels."""

    left: float
    top: float
    width: float
    height: float
    x: tuple[float, float]
    y: tuple[float, float]

    def px(self, x: float, y: float) -> tuple[float, float]:
        fx = (x - self.x[0]) / (self.x[1] - self.x[0])
        fy = (y - self.y[0]) / (self.y[1] - self.y[0])
        return round(self.left + fx * self.width, 1), round(self.top + (1 - fy) * self.height, 1)


def _axes(frame: _Frame, xticks: list[float], yticks: list[float], x_label: str, y_label: str) -> list[str]:
    out = []
    bottom, right = frame.top + frame.height, frame.left + frame.width
    for i, value in enumerate(yticks):
        _, y = frame.px(frame.x[0], value)
        label = _tick_label(value, yticks[1] - yticks[0] if len(yticks) > 1 else 1.0)
        out.append(f'<line x1="{frame.left}" y1="{y}" x2="{right}" y2="{y}" class="grid"/>' if i else "")
        out.append(f'<text x="{frame.left - 6}" y="{y + 4}" text-anchor="end">{label}</text>')
    for value in xticks:
        x, _ = frame.px(value, frame.y[0])
        label = _tick_label(value, xticks[1] - xticks[0] if len(xticks) > 1 else 1.0)
        out.append(f'<line x1="{x}" y1="{bottom}" x2="{x}" y2="{bottom + 5}" class="axis"/>')
        out.append(f'<text x="{x}" y="{bottom + 18}" text-anchor="middle">{label}</text>')
    out.append(f'<line x1="{frame.left}" y1="{bottom}" x2="{right}" y2="{bottom}" class="axis"/>')
    out.append(f'<line x1="{frame.left}" y1="{frame.top}" x2="{frame.left}" y2="{bottom}" class="axis"/>')
    out.append(f'<text x="{frame.left + frame.width / 2}" y="{bottom + 36}" text-anchor="middle">'
               f"{html.escape(x_label)}</text>")
    middle = frame.top + frame.height / 2
    out.append(f'<text x="14" y="{middle}" text-anchor="middle" transform="rotate(-90 14 {middle})">'
               f"{html.escape(y_label)}</text>")
    return [part for part in out if part]


def _lines(frame: _Frame, series: Series, colors: Mapping[str, str]) -> list[str]:
    out = []
    for name, points in series.items():
        if not points:
            continue
        color = colors[name]
        coords = [frame.px(x, y) for x, y in points]
        path = " ".join(f"{x},{y}" for x, y in coords)
        out.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2">'
                   f"<title>{html.escape(name)}</title></polyline>")
        if len(coords) <= 60:
            out += [f'<circle cx="{x}" cy="{y}" r="2.5" fill="{color}"/>' for x, y in coords]
    return out


def _legend(names: Sequence[str], colors: Mapping[str, str], references: Sequence[str], left: float,
            top: float) -> list[str]:
    out = []
    for i, name in enumerate([*names, *references]):
        y = top + 18 * i
        look = (f'stroke="{colors[name]}" stroke-width="3"' if i < len(names) else
                f'class="reference" stroke-dasharray="{DASHES[(i - len(names)) % len(DASHES)]}"')
        out.append(f'<line x1="{left}" y1="{y}" x2="{left + 18}" y2="{y}" {look}/>')
        out.append(f'<text x="{left + 24}" y="{y + 4}">{html.escape(name)}</text>')
    return out


def svg_line_chart(series: Series, *, title: str, x_label: str, y_label: str,
                   y_range: tuple[float, float] | None = None, references: Sequence[tuple[float, str]] = (),
                   colors: Mapping[str, str] | None = None, empty: str = "no data",
                   width: int = 780, height: int = 320) -> str:
    """An inline SVG line chart: one polyline per series (``name -> [(x, y), ...]``), axes with round ticks,
    dashed horizontal reference lines ``(y, label)`` and a legend; no script, no external asset. The y axis
    spans `y_range`, or the data and the references."""
    names = list(series)
    colors = {name: (colors or {}).get(name) or PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}
    labels = [label for _, label in references]
    legend_width = 24 + 7 * max((len(n) for n in [*names, *labels]), default=0) + 12
    frame_left, frame_top = 64.0, 34.0
    plot_width = width - frame_left - 16 - legend_width
    plot_height = height - frame_top - 48
    parts = [f'<svg viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
             f'aria-label="{html.escape(title)}" class="chart">',
             f"<title>{html.escape(title)}</title>",
             f'<text x="{frame_left}" y="20" class="title">{html.escape(title)}</text>']
    xs = [x for points in series.values() for x, _ in points]
    ys = [y for points in series.values() for _, y in points] + [y for y, _ in references]
    if not xs:
        parts.append(f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" class="empty">'
                     f"{html.escape(empty)}</text></svg>")
        return "\n".join(parts)
    low, high = y_range if y_range is not None else (min(ys), max(ys))
    xticks, yticks = nice_ticks(min(xs), max(xs)), nice_ticks(low, high)
    frame = _Frame(frame_left, frame_top, plot_width, plot_height, (xticks[0], xticks[-1]),
                   (yticks[0], yticks[-1]))
    parts += _axes(frame, xticks, yticks, x_label, y_label)
    for i, (value, label) in enumerate(references):
        x0, y = frame.px(frame.x[0], value)
        x1, _ = frame.px(frame.x[1], value)
        parts.append(f'<line x1="{x0}" y1="{y}" x2="{x1}" y2="{y}" class="reference" '
                     f'stroke-dasharray="{DASHES[i % len(DASHES)]}">'
                     f"<title>{html.escape(label)}</title></line>")
    parts += _lines(frame, series, colors)
    parts += _legend(names, colors, labels, frame_left + plot_width + 20, frame_top + 8)
    parts.append("</svg>")
    return "\n".join(parts)
