"""Bars to replay: a seeded synthetic market (`synthetic_bars`) or a CSV file (`read_csv`)."""

from __future__ import annotations

import csv
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TypedDict, cast

from ml_processing.sdk import FIELDS, BadRequest, to_ms
from ml_processing.sdk.synthetic import market, rows

DEFAULT_SEED = 1
START_MS = 1_735_689_600_000  # 2025-01-01T00:00:00Z: the first synthetic bar
TIME_COLUMNS = ("ts", "timestamp", "date", "datetime", "time")
PRICE_COLUMNS = FIELDS


class Bar(TypedDict):
    """One bar as it travels on ``bar.SYMBOL.TIMEFRAME``: ``ts`` is its open time in epoch milliseconds."""

    ts: int
    open: float
    high: float
    low: float
    close: float
    volume: float


class ReplayInputError(Exception):
    """Bad arguments or an unusable CSV file (exit code 2)."""


def step_ms(timeframe: str) -> int:
    """Milliseconds between two bars of `timeframe` (`ml_processing.sdk.to_ms`); `ReplayInputError` for a
    timeframe outside the grammar.

    >>> step_ms("15m"), step_ms("1d")
    (900000, 86400000)
    """
    try:
        return to_ms(timeframe)
    except BadRequest as exc:
        raise ReplayInputError(exc.message) from None


def synthetic_bars(n: int, seed: int = DEFAULT_SEED, *, start_ms: int = START_MS,
                   step_ms: int = 60_000) -> list[Bar]:
    """`n` bars of the seeded synthetic market (`ml_processing.sdk.synthetic.market`), one every `step_ms`
    from `start_ms`; one seed, one series.

    >>> bars = synthetic_bars(3, seed=7)
    >>> [b["ts"] - START_MS for b in bars], bars == synthetic_bars(3, seed=7)
    ([0, 60000, 120000], True)
    >>> all(b["low"] <= min(b["open"], b["close"]) <= max(b["open"], b["close"]) <= b["high"] for b in bars)
    True
    """
    return cast(list[Bar], rows(market(n, seed, start_ms=start_ms, step_ms=step_ms)))


def parse_time(text: str) -> int:
    """Epoch milliseconds of a timestamp cell: an ISO 8601 date or date-time (UTC unless it carries an
    offset), or an epoch number, read as seconds below 1e11, milliseconds below 1e14, microseconds below
    1e17 and nanoseconds above.

    >>> parse_time("2025-01-01T00:01:00Z"), parse_time("1735689660"), parse_time("1735689660000")
    (1735689660000, 1735689660000, 1735689660000)
    >>> parse_time("2025-01-02")
    1735776000000
    """
    text = text.strip()
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    if math.isfinite(number):
        if number < 0:
            raise ValueError(f"negative timestamp {text!r}")
        scale = 1_000.0 if number < 1e11 else 1.0 if number < 1e14 else 1e-3 if number < 1e17 else 1e-6
        return round(number * scale)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is neither an ISO 8601 date nor an epoch number") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return round(moment.timestamp() * 1000)


@dataclass
class CsvBars:
    """Bars read from a CSV file, in time order, and the rows that were skipped (``line N: why``)."""

    bars: list[Bar]
    skipped: list[str] = field(default_factory=list)
    reordered: bool = False  # the file was not in time order and was sorted


def _columns(header: Sequence[str], path: Path) -> tuple[int, dict[str, int]]:
    """(index of the time column, name -> index of the price columns) of a header; case-insensitive."""
    names = [name.strip().lower() for name in header]
    where = {name: i for i, name in reversed(list(enumerate(names)))}
    time_column = next((c for c in TIME_COLUMNS if c in where), None)
    missing = [c for c in PRICE_COLUMNS if c not in where]
    if time_column is None or missing:
        what = ", ".join((["a time column (ts, timestamp or date)"] if time_column is None else []) + missing)
        raise ReplayInputError(f"{path}: missing {what}; the header has: {', '.join(header) or 'nothing'} "
                               "(needed: ts, timestamp or date, and open, high, low, close, volume)")
    return where[time_column], {c: where[c] for c in PRICE_COLUMNS}


def _row(cells: Sequence[str], time_index: int, price_index: Mapping[str, int]) -> Bar:
    """One CSV row as a bar; `ValueError` naming the bad cell."""
    needed = max(time_index, *price_index.values())
    if len(cells) <= needed:
        raise ValueError(f"{len(cells)} cells, the header has at least {needed + 1}")
    ts = parse_time(cells[time_index])
    values: dict[str, float] = {}
    for name, index in price_index.items():
        text = cells[index].strip()
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"{name}: not a number ({text!r:.40})") from None
        if not math.isfinite(value):
            raise ValueError(f"{name}: not a finite number ({text!r:.40})")
        values[name] = value
    if values["volume"] < 0:
        raise ValueError(f"volume: negative ({values['volume']})")
    if values["high"] < values["low"]:
        raise ValueError(f"high {values['high']} is below low {values['low']}")
    return Bar(ts=ts, open=values["open"], high=values["high"], low=values["low"], close=values["close"],
               volume=values["volume"])


def read_csv(path: str | Path, *, limit: int | None = None) -> CsvBars:
    """Bars of a CSV file with a header: ``ts``, ``timestamp`` or ``date`` (ISO dates or epoch numbers) and
    ``open``, ``high``, ``low``, ``close``, ``volume``, in any letter case. Rows that cannot be read are
    skipped and reported with their line number; rows out of time order are sorted, and a repeated
    timestamp keeps its first row. `limit` keeps the first bars in time order. `ReplayInputError` when the
    file cannot be read, a column is missing or no row is usable."""
    path = Path(path)
    found: list[tuple[int, int, Bar]] = []  # (ts, line, bar)
    skipped: list[tuple[int, str]] = []  # (line, why)
    try:
        with path.open(encoding="utf-8-sig", newline="") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None:
                raise ReplayInputError(f"{path}: empty file (a header and bars are needed)")
            time_index, price_index = _columns(header, path)
            line = reader.line_num
            for cells in reader:
                start, line = line + 1, reader.line_num
                if not any(cell.strip() for cell in cells):
                    continue
                try:
                    bar = _row(cells, time_index, price_index)
                except ValueError as exc:
                    skipped.append((start, str(exc)))
                    continue
                found.append((bar["ts"], start, bar))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ReplayInputError(f"{path}: cannot read: {exc}") from None
    return _ordered(found, skipped, path, limit)


def _ordered(found: list[tuple[int, int, Bar]], skipped: list[tuple[int, str]], path: Path,
             limit: int | None) -> CsvBars:
    """The rows' bars in time order, without repeated timestamps (reported)."""
    reordered = any(a[0] > b[0] for a, b in itertools.pairwise(found))
    if reordered:
        found.sort(key=lambda row: row[0])
    bars: list[Bar] = []
    first_line: dict[int, int] = {}
    for ts, line, bar in found:
        if ts in first_line:
            skipped.append((line, f"timestamp {ts} repeats line {first_line[ts]}"))
            continue
        first_line[ts] = line
        bars.append(bar)
    reported = [f"line {line}: {why}" for line, why in sorted(skipped)]
    if not bars:
        detail = f"; first problem: {reported[0]}" if reported else ""
        raise ReplayInputError(f"{path}: no usable bars ({len(reported)} bad rows{detail})")
    return CsvBars(bars[:limit] if limit else bars, reported, reordered)
