"""The declarations of the ``features`` ops that only this service's callers use (live rows, extractors).

The ops other plugins call (pipelines, fit, extract, transform) are declared in
`ml_processing.sdk.services.features`, beside the typed client that calls them.

>>> StreamBar(ts=60000, close=1.5, volume=-2.0)
Traceback (most recent call last):
...
ValueError: volume: a volume is never negative, got -2.0
>>> StreamBar(ts=60000, close=None).row()["close"]
nan
"""

from __future__ import annotations

import math
from typing import Annotated, Any, TypedDict

import msgspec

from ml_processing.sdk import Args, Int64, PositiveInt, Symbol, Timeframe
from ml_processing.sdk.feature import ExtractorInfo
from ml_processing.sdk.services.features import Ref

NAN = math.nan
#: Bars in one ``stream`` request, at most (the service's ``max_rows`` may be lower).
MAX_STREAM_BARS = 1_000_000


class StreamBar(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """One bar (docs/PROTOCOL.md section 4): ``ts`` its open time in epoch milliseconds, ``null`` for a
    missing value, ``final`` false while it is still forming."""

    ts: Int64
    open: float | None = None
    high: float | None = None
    low: float | None = None
    close: float | None = None
    volume: float | None = None
    final: bool = True

    def __post_init__(self) -> None:
        for name, value in (("open", self.open), ("high", self.high), ("low", self.low), ("close", self.close),
                            ("volume", self.volume)):
            if value is not None and math.isinf(value):
                raise ValueError(f"{name}: expected a finite number, got {value}")
        if self.volume is not None and self.volume < 0:
            raise ValueError(f"volume: a volume is never negative, got {self.volume}")

    def row(self) -> dict[str, Any]:
        """The bar as a pipeline reads it: every field a float (NaN for missing), ``ts`` and ``final``."""
        return {"ts": self.ts, "open": NAN if self.open is None else self.open,
                "high": NAN if self.high is None else self.high, "low": NAN if self.low is None else self.low,
                "close": NAN if self.close is None else self.close,
                "volume": NAN if self.volume is None else self.volume, "final": self.final}


class StreamArgs(Args, kw_only=True):
    """Bars pushed through the live state of one series and one saved pipeline version."""

    pipeline: Ref
    version: PositiveInt | None = None
    symbol: Symbol
    timeframe: Timeframe
    bars: Annotated[list[StreamBar], msgspec.Meta(min_length=1, max_length=MAX_STREAM_BARS)]

    def __post_init__(self) -> None:
        if self.version is not None and "@" in self.pipeline:
            raise ValueError("version: the pipeline already names its version (NAME@VERSION)")


class RowArgs(Args):
    """A series, and which of its live pipelines (default: the first)."""

    symbol: Symbol
    timeframe: Timeframe
    pipeline: Ref | None = None


class LiveRow(TypedDict):
    """The features of one committed bar, as published on ``feature.SYMBOL.TIMEFRAME``."""

    symbol: str
    timeframe: str
    ts: int
    pipeline: str  # NAME@VERSION
    values: list[float | None]  # in the order of the pipeline's features, null while warming up
    transformed: list[float | None] | None  # through the fitted transforms; null when never fitted
    complete: bool  # every feature has a value


class RowReply(LiveRow):
    features: list[str]


class StreamReply(TypedDict):
    pipeline: str
    features: list[str]
    rows: list[LiveRow]  # one per committed bar (not for a forming bar, nor one older than the last)


class TransformInfo(TypedDict):
    name: str
    params: list[dict[str, Any]]
    doc: str


class ExtractorsReply(TypedDict):
    extractors: list[ExtractorInfo]
    transforms: list[TransformInfo]
    nan_policies: list[str]
