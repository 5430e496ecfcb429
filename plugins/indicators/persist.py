"""Saving and loading the live market state: the bars of every series and its configured indicators.

One file, written atomically (`ml_processing.core.storage.atomic_write`): a msgpack map with, per series,
its symbol, timeframe, live indicator specs and its bars as a (n, 6) float64 array (ts, OHLCV). On load the
series are rebuilt and every indicator stream replays the bars, so the values after a restart equal the
values without one (for indicators with unbounded memory, such as EMA, exactly so while the bars seen fit
in the buffer).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Set
from pathlib import Path
from typing import Any

import numpy as np

from ml_processing.sdk import BadRequest, CodecError, atomic_write, codec, get_logger
from ml_processing.sdk.bars import FIELDS
from ml_processing.sdk.indicator import Indicator

from .market import Live, Series

VERSION = 1

log = get_logger(__name__)


def save(path: Path, series: Iterable[Series], derived: Set[tuple[str, str]] = frozenset()) -> int:
    """Save every series; `derived` names those fed by resampling."""
    entries = [entry(s, (s.symbol, s.timeframe) in derived) for s in series]
    atomic_write(path, codec.packb({"version": VERSION, "series": entries}))
    return len(entries)


def entry(series: Series, derived: bool) -> dict[str, Any]:
    """One series as saved: also what moves with its symbol to another process (`core.shards`)."""
    return {"symbol": series.symbol, "timeframe": series.timeframe, "last_ts": series.last_ts,
            "committed": series.committed, "derived": derived,
            "live": [{"name": live.indicator.name, "params": live.params} for live, _ in series.live.values()],
            "bars": series.ring.rows()}


def load(path: Path, registry: Mapping[str, Indicator], capacity: int) -> Iterator[tuple[Series, bool]]:
    """The saved series (and whether each is fed by resampling), rebuilt one at a time, so the caller can
    let the event loop run between them; an unreadable file raises `CodecError` (the caller logs and
    starts empty)."""
    if not path.exists():
        return
    body: Any = codec.unpackb(path.read_bytes())
    if not isinstance(body, dict) or body.get("version") != VERSION:
        raise CodecError(f"{path}: not a market state file of version {VERSION}")
    for saved in body["series"]:
        yield rebuild(saved, registry, capacity)


def rebuild(saved: Mapping[str, Any], registry: Mapping[str, Indicator], capacity: int) -> tuple[Series, bool]:
    """A series from its `entry` (and whether it is fed by resampling): its bars fill the ring in one copy
    and warm every indicator stream in one pass (`IndicatorStream.warm`)."""
    series = Series(saved["symbol"], saved["timeframe"], capacity)
    bars = np.asarray(saved["bars"], dtype=np.float64).reshape(-1, 1 + len(FIELDS))[-capacity:]
    series.ring.load(bars)
    series.last_ts = saved["last_ts"]
    series.committed = len(bars)
    for spec in saved["live"]:
        if spec["name"] not in registry:  # an indicator whose plugin is gone is dropped, not fatal
            continue
        try:
            series.add(Live.parse(spec, registry))
        except BadRequest as exc:  # saved by a version that accepted what this one refuses
            log.warning("saved_indicator_dropped", symbol=series.symbol, timeframe=series.timeframe,
                        indicator=spec, error=exc.message)
    return series, bool(saved.get("derived", False))
