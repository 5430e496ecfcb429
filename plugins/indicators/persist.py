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
    entries = [{"symbol": s.symbol, "timeframe": s.timeframe, "last_ts": s.last_ts, "committed": s.committed,
                "derived": (s.symbol, s.timeframe) in derived,
                "live": [{"name": live.indicator.name, "params": live.params} for live, _ in s.live.values()],
                "bars": s.ring.rows()} for s in series]
    atomic_write(path, codec.packb({"version": VERSION, "series": entries}))
    return len(entries)


def load(path: Path, registry: Mapping[str, Indicator], capacity: int) -> Iterator[tuple[Series, bool]]:
    """The saved series (and whether each is fed by resampling), rebuilt one at a time, so the caller can
    let the event loop run between them; an unreadable file raises `CodecError` (the caller logs and
    starts empty). Each series' bars fill its ring in one copy and warm every indicator stream in one pass
    (`IndicatorStream.warm`)."""
    if not path.exists():
        return
    body: Any = codec.unpackb(path.read_bytes())
    if not isinstance(body, dict) or body.get("version") != VERSION:
        raise CodecError(f"{path}: not a market state file of version {VERSION}")
    for entry in body["series"]:
        series = Series(entry["symbol"], entry["timeframe"], capacity)
        bars = np.asarray(entry["bars"], dtype=np.float64).reshape(-1, 1 + len(FIELDS))[-capacity:]
        series.ring.load(bars)
        series.last_ts = entry["last_ts"]
        series.committed = len(bars)
        for spec in entry["live"]:
            if spec["name"] not in registry:  # an indicator whose plugin is gone is dropped, not fatal
                continue
            try:
                series.add(Live.parse(spec, registry))
            except BadRequest as exc:  # saved by a version that accepted what this one refuses
                log.warning("saved_indicator_dropped", symbol=series.symbol, timeframe=series.timeframe,
                            indicator=spec, error=exc.message)
        yield series, bool(entry.get("derived", False))
