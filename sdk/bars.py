"""The bar: the unit of market data every capability consumes (docs/PROTOCOL.md section 4).

A bar is ``{ts, open, high, low, close, volume}`` with ``ts`` its open time (integer epoch milliseconds)
and an optional ``final`` flag (default true; false for a still-forming bar). `check_bar` is the one place
a bar from outside is validated, whichever capability reads it (a bar on a ``bar.*`` topic, the bars of
an ingest); bars sent as columns are read by op declarations (`ml_processing.sdk.columns`).
The rules: ``ts`` an integer of at most 2**53 in magnitude (epoch milliseconds, held exactly as a float64
like every column); open, high, low, close and volume numbers, finite or null (a gap, read as NaN); volume
never negative; ``final`` true or false.

An op that takes many bars declares the field as `BarList`: the declaration documents the bar's shape and
checks that a list came, and the handler checks the bars themselves with `check_bars`, in slices when
there are many (so a million bars never hold the event loop for long).

>>> check_bar({"ts": 60000, "open": 1, "high": 2, "low": 0.5, "close": 1.5, "volume": 10})["close"]
1.5
>>> check_bar({"ts": 1, "open": 1, "high": 1, "low": 1, "close": "x", "volume": 1})
Traceback (most recent call last):
...
ml_processing.bus.errors.BadRequest: bar field 'close' must be a number, got 'x'
>>> check_bars([{"ts": 1, "volume": 1}, {"ts": 2, "volume": -5}], offset=10)
Traceback (most recent call last):
...
ml_processing.bus.errors.BadRequest: bars[11]: bar field 'volume' is never negative, got -5.0
"""

from __future__ import annotations

import math
import reprlib
from collections.abc import Mapping, Sequence
from typing import Any, overload

from ml_processing.core.errors import BadRequest, TooLarge
from ml_processing.core.ops import register_type

#: The numeric fields of a bar besides ``ts``, in their canonical order.
FIELDS = ("open", "high", "low", "close", "volume")
#: Bars as columns: the open time ``ts`` (epoch ms), then `FIELDS`. The one place these names are written.
COLUMNS = ("ts", *FIELDS)

#: The range of ``ts``: integers a float64 holds exactly (bars are held and sent as float64 columns).
TS_MIN, TS_MAX = -(2**53), 2**53


def _timestamp(ts: Any) -> int:
    """The slow path of ``ts``: an integral float is taken, anything else is named."""
    if isinstance(ts, bool) or not isinstance(ts, (int, float)) or (isinstance(ts, float) and not ts.is_integer()):
        raise BadRequest(f"bar field 'ts' must be an integer timestamp, got {reprlib.repr(ts)}", field="ts")
    if not TS_MIN <= ts <= TS_MAX:
        raise BadRequest(f"bar field 'ts' must be within -2**53..2**53 (epoch milliseconds), got {reprlib.repr(ts)}",
                         field="ts")
    return int(ts)


def check_bar(bar: Any) -> dict[str, Any]:
    """A bar with an integer ``ts`` and finite or NaN numeric fields; `BadRequest` naming the field.

    On the per-bar path of every live capability: the usual bar (floats, an int ``ts``) costs one type
    test per field."""
    if type(bar) is not dict and not isinstance(bar, Mapping):
        raise BadRequest(f"a bar must be a map of ts, open, high, low, close, volume, got {type(bar).__name__}",
                         field="bar")
    ts = bar.get("ts")
    if type(ts) is not int or not TS_MIN <= ts <= TS_MAX:
        ts = _timestamp(ts)
    final = bar.get("final", True)
    if final is not True and final is not False:
        raise BadRequest(f"bar field 'final' must be true or false, got {reprlib.repr(final)}", field="final")
    out: dict[str, Any] = {"ts": ts, "final": final}
    for name in FIELDS:
        value = bar.get(name)
        if type(value) is float and (value - value == 0.0 or value != value):  # finite or NaN: the usual case
            out[name] = value
            continue
        if value is None:
            value = math.nan
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isinf(value):
            raise BadRequest(f"bar field {name!r} must be a number, got {reprlib.repr(value)}", field=name)
        out[name] = float(value)
    if out["volume"] < 0.0:  # NaN compares false: a gap passes
        raise BadRequest(f"bar field 'volume' is never negative, got {out['volume']!r}", field="volume")
    return out


def check_bars(bars: Any, limit: int | None = None, *, offset: int = 0, name: str = "bars"
               ) -> list[dict[str, Any]]:
    """A list of bars, each checked; `BadRequest` naming the bar and field (``bars[3].close``), `TooLarge`
    past `limit` bars. `bars` may be a slice of a longer list that starts at index `offset`."""
    if not isinstance(bars, list):
        raise BadRequest(f"'{name}' must be a list of {{ts, open, high, low, close, volume}} maps", field=name)
    if limit is not None and len(bars) > limit:
        raise TooLarge(f"{len(bars):,} bars; at most {limit:,} per request", field=name)
    checked = []
    for i, bar in enumerate(bars, offset):
        try:
            checked.append(check_bar(bar))
        except BadRequest as exc:
            where = f"{name}[{i}]"
            raise BadRequest(f"{where}: {exc.message}", field=where if exc.field == "bar" else f"{where}.{exc.field}"
                             ) from None
    return checked


class BarList(Sequence[Any]):
    """An op field holding bars as a list of ``{ts, open, high, low, close, volume, final?}`` maps.

    The declaration checks only that a list came (and documents the bar), without copying it; the handler
    checks the bars with `check_bars`, in slices when they are many (``args.bars[i:j]`` is a list)."""

    __slots__ = ("items",)

    def __init__(self, items: list[Any]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    @overload
    def __getitem__(self, index: int) -> Any: ...
    @overload
    def __getitem__(self, index: slice) -> list[Any]: ...
    def __getitem__(self, index: int | slice) -> Any:
        return self.items[index]

    def __repr__(self) -> str:
        return f"BarList({len(self.items):,} bars)"


_NUMBER_OR_NULL = {"type": ["number", "null"]}
BAR_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["ts"],
    "description": "a bar: ts its open time (integer epoch milliseconds); null prices are a gap",
    "properties": {"ts": {"type": "integer", "minimum": TS_MIN, "maximum": TS_MAX},
                   **{name: dict(_NUMBER_OR_NULL) for name in FIELDS[:-1]},
                   "volume": {"type": ["number", "null"], "minimum": 0},
                   "final": {"type": "boolean", "description": "false for a bar still forming (default true)"}},
}


def _read_bar_list(value: Any) -> BarList:
    if not isinstance(value, list):
        raise ValueError(f"expected a list of bars ({{ts, open, high, low, close, volume}} maps), "
                         f"got {type(value).__name__}")
    return BarList(value)


register_type(BarList, _read_bar_list, {"type": "array", "items": BAR_SCHEMA})
