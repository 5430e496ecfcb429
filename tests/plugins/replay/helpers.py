"""What the replay tests share: files to read, the check that a report page stands alone, and a reading of\nthe page's tables and charts (the trading table against the report's figures)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

EXTERNAL = re.compile(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", re.IGNORECASE)


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def assert_self_contained(page: str) -> None:
    """At least two inline charts, no script, no stylesheet link, nothing fetched from elsewhere."""
    assert page.count("<svg") >= 2
    assert not EXTERNAL.search(page), EXTERNAL.search(page)
    assert "<script" not in page.lower() and "<link" not in page.lower()


class _Page(HTMLParser):
    """The tables (by id) and the SVG charts (by aria-label) of a report page."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.charts: dict[str, list[tuple[str, list[tuple[float, float]]]]] = {}
        self.order: list[str] = []  # h2 headings, table ids and chart labels in page order
        self._table: str | None = None
        self._cell: list[str] | None = None
        self._chart: str | None = None
        self._polyline: list[tuple[float, float]] | None = None
        self._heading: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attr = dict(attrs)
        if tag == "table":
            self._table = attr.get("id") or f"table{len(self.tables)}"
            self.tables[self._table] = []
            self.order.append(f"table:{self._table}")
        elif tag == "tr" and self._table is not None:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._table is not None:
            self._cell = []
        elif tag == "svg":
            self._chart = attr.get("aria-label") or ""
            self.charts[self._chart] = []
            self.order.append(f"chart:{self._chart}")
        elif tag == "polyline" and self._chart is not None:
            points = [tuple(float(v) for v in pair.split(",")) for pair in (attr.get("points") or "").split()]
            self._polyline = [(x, y) for x, y in points]
        elif tag == "title" and self._polyline is not None:
            self._cell = []
        elif tag == "h2":
            self._heading = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._table is not None:
            self.tables[self._table][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = None
        elif tag == "title" and self._polyline is not None and self._cell is not None and self._chart is not None:
            self.charts[self._chart].append(("".join(self._cell), self._polyline))
            self._cell = self._polyline = None
        elif tag == "svg":
            self._chart = None
        elif tag == "h2" and self._heading is not None:
            self.order.append("h2:" + "".join(self._heading))
            self._heading = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        if self._heading is not None:
            self._heading.append(data)


def parse_page(page: str) -> _Page:
    parsed = _Page()
    parsed.feed(page)
    parsed.close()
    return parsed


def shown(text: str) -> float | None:
    """A number as the page shows it ("+1.23%", "4.17", "1,234", "-") as a fraction or a number."""
    if text == "-":
        return None
    value = float(text.rstrip("%").replace(",", ""))
    return value / 100 if text.endswith("%") else value


def assert_trading_shown(page: str, report: Mapping[str, Any]) -> _Page:
    """The page's trading table shows every figure of `report`'s ``trading`` section (the signals' and
    buy-and-hold's) to the precision shown, and its equity chart draws both sampled curves in full."""
    from ml_processing.plugins.replay.report import TRADING_ROWS

    parsed = parse_page(page)
    trading = report["trading"]
    rows = parsed.tables["trading"]
    assert rows[0] == ["figure", "signals", "buy and hold"]
    assert [row[0] for row in rows[1:]] == [label for label, _, _ in TRADING_ROWS]
    for row, (label, key, kind) in zip(rows[1:], TRADING_ROWS, strict=True):
        for cell, side in zip(row[1:], ("strategy", "buy_and_hold"), strict=True):
            expected = trading[side][key]
            if expected is None:
                assert cell == "-", (label, side, cell)
            elif kind == "n":
                assert shown(cell) == expected, (label, side, cell)
            else:  # 2 decimals of a percentage or of a number
                tolerance = 0.5e-2 if kind == "x" else 0.5e-4
                assert abs(shown(cell) - expected) <= tolerance + 1e-12, (label, side, cell, expected)  # type: ignore[operator]
    chart = parsed.charts["Equity: the signals beside buy and hold"]
    mine = f"signals of {trading['signals_from']}" if trading["signals_from"] else "signals (none)"
    if not trading["periods"]:
        assert chart == [] and "no period to trade" in page
        return parsed
    assert [name for name, _ in chart] == [mine, "buy and hold"]
    sampled = len(trading["equity"]["bar"])
    assert all(len(points) == sampled for _, points in chart)
    # the higher final equity is drawn higher (a smaller y in pixels)
    final = [trading["equity"][key][-1] for key in ("strategy", "buy_and_hold")]
    ys = [points[-1][1] for _, points in chart]
    if final[0] != final[1]:
        assert (final[0] > final[1]) == (ys[0] < ys[1])
    return parsed
