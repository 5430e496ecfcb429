"""The declarations of the ``patterns`` service's ops: their arguments and their replies.

Every field is checked before a handler runs (`ml_processing.sdk.op`): the bars are `Columns` (empty,
booleans, infinities, unequal lengths, negative volume: one answer each, as on every endpoint that takes
bars), ``kind`` is one of its values. What depends on the registry (a pattern's name, its parameters and
their ranges) is checked by the actor, with errors naming the element (``patterns[2].params.penetration``).

>>> from ml_processing.core.ops import convert
>>> args = convert({"close": [1, 2], "open": [1, 2], "patterns": ["CDLDOJI", {"name": "DOUBLE_TOP"}]},
...                DetectArgs)
>>> args.patterns[1].name, args.length, convert({"close": [1.0]}, DetectArgs).patterns
('DOUBLE_TOP', 2, ['*'])
>>> convert({"close": [1.0], "kind": "nope"}, DetectArgs)
Traceback (most recent call last):
...
ml_processing.bus.errors.BadRequest: kind: ...'nope'...
>>> convert({"close": [1.0, True]}, DetectArgs)
Traceback (most recent call last):
...
ml_processing.bus.errors.BadRequest: close[1]: expected a number, got True
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, NotRequired, TypedDict

import msgspec
import numpy as np

from ml_processing.sdk import Args, Columns
from ml_processing.sdk.specs import Name, NamedSpec

#: Bars per request (values per column).
MAX_BARS = 1_000_000
#: Patterns named in one request.
MAX_PATTERNS = 1024

Kind = Literal["candlestick", "chart"]
class PatternSpec(NamedSpec):
    """One pattern of a request: its name and parameters (the defaults for those left out)."""


Specs = Annotated[list[Name | PatternSpec], msgspec.Meta(
    min_length=1, max_length=MAX_PATTERNS,
    description="[\"*\"] for every registered pattern (the default), or names (\"CDLENGULFING\") and "
                "{name, params} maps ({\"name\": \"CDLMORNINGSTAR\", \"params\": {\"penetration\": 0.5}})")]


class ListArgs(Args):
    """Every registered pattern, or those of one ``kind``."""

    kind: Kind | None = None


class DetectArgs(Columns, kw_only=True):
    """Columns of bars (``ts`` optional: the events carry it), the patterns to look for, and optionally only
    those of one ``kind``."""

    max_values: ClassVar[int] = MAX_BARS

    patterns: Specs = msgspec.field(default_factory=lambda: ["*"])
    kind: Kind | None = None


class EventGroup(TypedDict):
    """The events of one pattern, as columns in bar order: the confirming bar's ``index`` (and ``ts`` when
    the request sent ``ts``), ``direction`` (+1 bullish, -1 bearish), ``strength`` (TA-Lib's 100 or 200 for
    candlesticks, a confidence in [0, 1] for chart patterns); for other than candlesticks, each event's
    key ``points`` ([bar, price] pairs) and ``details``."""

    kind: str
    index: np.ndarray
    ts: np.ndarray | None
    direction: np.ndarray
    strength: np.ndarray
    points: NotRequired[list[list[tuple[int, float]]]]
    details: NotRequired[list[dict[str, Any]]]


class DetectReply(TypedDict):
    """Bars and patterns searched, events found (in total and per pattern), the events of each pattern that
    fired."""

    bars: int
    patterns: int
    total: int
    counts: dict[str, int]
    events: dict[str, EventGroup]


class SeriesInfo(TypedDict):
    """A series detected live: its last committed bar and how many patterns follow it."""

    symbol: str
    timeframe: str
    last_ts: int | None
    patterns: int
