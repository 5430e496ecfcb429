"""The declarations of the ``indicators`` service's ops: their arguments and their replies.

Every field is checked before a handler runs (`ml_processing.sdk.op`); what depends on the registry (an
indicator's name, its parameters and their ranges) is checked by `compute.parse_indicators`, with errors
that name the element (``indicators[2].params.timeperiod``). The ops other plugins call (``series``,
``bars``) are declared with the typed client, in `ml_processing.sdk.services.indicators`.

>>> from ml_processing.core.ops import convert
>>> args = convert({"close": [1, 2, 3], "indicators": ["SMA", {"name": "RSI", "params": {"timeperiod": 5}}]},
...                ComputeArgs)
>>> args.indicators[1].params, args.length
({'timeperiod': 5}, 3)
>>> convert({"close": [1, 2, 3], "indicators": []}, ComputeArgs)
Traceback (most recent call last):
...
ml_processing.bus.errors.BadRequest: indicators: Expected `array` of length >= 1
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, NotRequired, TypedDict

import msgspec
import numpy as np

from ml_processing.sdk import Args, Columns, OptionalColumn, Symbol, Timeframe, TooLarge
from ml_processing.sdk.bars import BarList
from ml_processing.sdk.specs import Name, NamedSpec

#: Bars per request, batch (values per column) and ingest alike.
MAX_BARS = 1_000_000
#: Indicators per request.
MAX_INDICATORS = 256

class IndicatorSpec(NamedSpec):
    """One indicator of a request: its name and parameters (the defaults for those left out)."""


Specs = Annotated[list[Name | IndicatorSpec], msgspec.Meta(
    min_length=1, max_length=MAX_INDICATORS,
    description="names (\"RSI\") or {name, params} maps ({\"name\": \"SMA\", \"params\": {\"timeperiod\": 20}})")]
LiveSpecs = Annotated[list[Name | IndicatorSpec], msgspec.Meta(
    min_length=1, max_length=MAX_INDICATORS,
    description="\"NAME\", \"NAME(param=value, ...)\" or {name, params} maps")]


class ListArgs(Args):
    """Every registered indicator, or those of one ``group`` ("Overlap Studies", "Math Transform", ...)."""

    group: str | None = None


class ComputeArgs(Columns, kw_only=True):
    """Columns of bars and the indicators to compute over them."""

    max_values: ClassVar[int] = MAX_BARS

    periods: OptionalColumn = None  # MAVP's per-bar period
    indicators: Specs

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.periods is not None and self.length and len(self.periods) != self.length:
            raise ValueError(f"periods: has {len(self.periods):,} values, the columns have {self.length:,}")


class IngestArgs(Columns, kw_only=True):
    """Bars of one series, oldest first, into the live market state: as ``bars`` (a list of maps), or as
    columns ``ts``, ``open``, ``high``, ``low``, ``close``, ``volume`` (lists or ndarrays: a million bars as
    ndarrays decode in milliseconds, as maps in seconds)."""

    max_values: ClassVar[int] = MAX_BARS

    symbol: Symbol
    timeframe: Timeframe
    bars: BarList | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        sent = self.columns(("ts", "open", "high", "low", "close", "volume"))
        if (self.bars is None) == (not sent):
            raise ValueError("bars: send either bars (a list of maps) or the columns ts, open, high, low, close, "
                             "volume, not both and not neither")
        if self.bars is not None and len(self.bars) > MAX_BARS:
            raise TooLarge(f"{len(self.bars):,} bars; at most {MAX_BARS:,} per request", field="bars")
        if sent and len(sent) != 6:
            missing = [c for c in ("ts", "open", "high", "low", "close", "volume") if c not in sent]
            raise ValueError(f"{missing[0]}: bars sent as columns need ts, open, high, low, close and volume")

    @property
    def count(self) -> int:
        return len(self.bars) if self.bars is not None else self.length

    def rows(self, start: int, stop: int) -> list[dict[str, Any]]:
        """Bars `start` to `stop` as maps: the list's own, or built from the columns."""
        if self.bars is not None:
            return self.bars[start:stop]
        ts = self.ts[start:stop] if self.ts is not None else np.empty(0)
        columns = [getattr(self, name)[start:stop].tolist() for name in ("open", "high", "low", "close", "volume")]
        return [{"ts": t, "open": o, "high": h, "low": lo, "close": c, "volume": v}
                for t, o, h, lo, c, v in zip(ts.tolist(), *columns, strict=True)]


class SeriesArgs(Args):
    """One series of the live market state."""

    symbol: Symbol
    timeframe: Timeframe


class StateArgs(SeriesArgs):
    """A series' latest values; ``peek`` previews a bar without committing it."""

    peek: dict[str, Any] | None = None


class TimeframesArgs(Args):
    """A symbol's tracked timeframes, or some of them."""

    symbol: Symbol
    timeframes: Annotated[str | None, msgspec.Meta(
        description="comma-separated timeframes, e.g. 5m,1h (default: every tracked one)")] = None


class Target(Args):
    """One series (``symbol`` and ``timeframe``), or, with neither, every series."""

    symbol: Symbol | None = None
    timeframe: Timeframe | None = None

    def __post_init__(self) -> None:
        if (self.symbol is None) != (self.timeframe is None):
            missing = "timeframe" if self.timeframe is None else "symbol"
            raise ValueError(f"{missing}: symbol and timeframe go together (both, or neither for every series)")


class SubscribeArgs(Target, kw_only=True):
    """Live indicators to add: to one series, or to every series and the new ones."""

    indicators: LiveSpecs


class UnsubscribeArgs(Target, kw_only=True):
    """Live indicators to remove, by key (``SMA_20``), from one series or from every series."""

    indicators: Annotated[list[Annotated[str, msgspec.Meta(min_length=1, max_length=256)]],
                          msgspec.Meta(min_length=1, max_length=MAX_INDICATORS,
                                       description="indicator keys, e.g. SMA_20")]


# -- replies ------------------------------------------------------------------------------------------


class ParamInfo(TypedDict):
    name: str
    type: str
    default: int | float
    minimum: float | None
    maximum: float | None
    doc: str


class IndicatorInfo(TypedDict):
    name: str
    group: str
    inputs: list[str]
    params: list[ParamInfo]
    outputs: list[str]
    lookback_default: int
    doc: str


class Computed(TypedDict):
    name: str
    params: dict[str, int | float]
    outputs: list[str]
    lookback: int


class ComputeReply(TypedDict):
    """``values``: one array per output key, NaN (null in JSON) before the lookback."""

    n: int
    indicators: list[Computed]
    values: dict[str, np.ndarray]


class IngestReply(TypedDict):
    """How many bars were committed, kept as the forming bar, or dropped as stale; the last committed ts."""

    committed: int
    forming: int
    stale: int
    last_ts: int | None


class Peek(TypedDict):
    ts: int
    values: dict[str, float | None]


class MarketState(TypedDict):
    symbol: str
    timeframe: str
    ts: int | None
    values: dict[str, float | None]
    warm: dict[str, bool]
    bars: int
    counts: dict[str, int]
    peek: NotRequired[Peek]


class Alignment(TypedDict):
    score: float | None
    direction: str | None
    timeframes: int


class TimeframeAnalysis(TypedDict):
    symbol: str
    timeframes: dict[str, dict[str, Any]]
    alignment: Alignment


class Subscribed(TypedDict):
    series: int
    indicators: list[str]


class Unsubscribed(TypedDict):
    removed: int
