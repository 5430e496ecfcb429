"""Live feature rows: per bar series and live entry, a pipeline's streaming state.

A live entry is ``NAME`` (it follows the latest version: a newly fitted version with the same steps takes
over the warm stream, new steps start a new one) or ``NAME@VERSION``. Each committed bar (final, newer
than the series' last) gives one row; a forming bar or an older one gives none, as in the indicators
service (docs/PROTOCOL.md section 4).

Many bars at once (op ``stream``, the warm-up from the market state) advance in slices that each cost
about a millisecond, the event loop running between slices. The state is the loop's own (live bars
advance it too), so it is never handed to a thread; a live bar that arrives between two slices moves
the series on, and the older bars of the rest of the request are then stale and give no row.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ml_processing.sdk import NotFound

from . import pipeline as P
from .declarations import LiveRow, RowReply
from .store import Store, Version

#: Bars x extract steps advanced between two yields to the event loop (about 2.5 us each: ~1 ms).
SLICE_STEPS = 400


@dataclass
class _State:
    version: Version
    stream: P.PipelineStream
    last_ts: int | None = None
    last: LiveRow | None = None  # the latest row


class LiveRows:
    """Every series' live pipeline states, by (symbol, timeframe) then live entry."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.series: dict[tuple[str, str], dict[str, _State]] = {}

    def __len__(self) -> int:
        return len(self.series)

    def __contains__(self, key: tuple[str, str]) -> bool:
        return key in self.series

    def _state(self, symbol: str, timeframe: str, entry: str) -> _State:
        version = self.store.get(entry)
        per = self.series.setdefault((symbol, timeframe), {})
        state = per.get(entry)
        if state is not None and state.version is version:
            return state
        if state is None or state.version.compiled.spec != version.compiled.spec:
            state = per[entry] = _State(version, P.PipelineStream(version.compiled, version.fitted))
        else:
            state.version, state.stream.fitted = version, version.fitted
        return state

    def advance(self, symbol: str, timeframe: str, entry: str, bar: Mapping[str, Any]) -> LiveRow | None:
        """The row of `bar` (a checked bar: float fields, int ``ts``, ``final``); None for a forming or
        stale bar."""
        state = self._state(symbol, timeframe, entry)
        if not bar["final"] or (state.last_ts is not None and bar["ts"] <= state.last_ts):
            return None
        state.last_ts = bar["ts"]
        row = state.stream.update(bar)
        transformed = state.stream.transformed(row)
        state.last = {"symbol": symbol, "timeframe": timeframe, "ts": bar["ts"], "pipeline": state.version.ref,
                      "values": _nulls(row), "transformed": None if transformed is None else _nulls(transformed),
                      "complete": all(v == v for v in row)}
        return state.last

    async def advance_all(self, symbol: str, timeframe: str, entries: Sequence[str],
                          bars: Iterable[Mapping[str, Any]]) -> list[LiveRow]:
        """`bars` through every entry, in slices of about a millisecond with the loop running between them;
        the rows, bar by bar."""
        steps = sum(len(self.store.get(entry).compiled.extracts) for entry in entries)
        per_slice = max(1, SLICE_STEPS // max(1, steps))
        rows: list[LiveRow] = []
        for i, bar in enumerate(bars):
            if i and i % per_slice == 0:
                await asyncio.sleep(0)  # a yield, not a wait: what the loop has queued runs now
            for entry in entries:
                row = self.advance(symbol, timeframe, entry, bar)
                if row is not None:
                    rows.append(row)
        return rows

    def latest(self, symbol: str, timeframe: str, entry: str | None) -> RowReply:
        """The latest row of `entry` (default: the series' first) on a series; `NotFound` naming what is
        missing."""
        per = self.series.get((symbol, timeframe))
        if not per:
            raise NotFound(f"no live features for {symbol} {timeframe} yet", field="symbol")
        entry = entry or next(iter(per))
        state = per.get(entry)
        if state is None or state.last is None:
            raise NotFound(f"no live rows of {entry!r} for {symbol} {timeframe} (live: {', '.join(per)})",
                           field="pipeline")
        return {**state.last, "features": state.version.compiled.features}


def _nulls(row: list[float]) -> list[float | None]:
    return [None if v != v else v for v in row]
