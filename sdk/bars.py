"""The bar: the unit of market data every capability consumes (docs/PROTOCOL.md section 4).

A bar is ``{ts, open, high, low, close, volume}`` with ``ts`` its open time (integer epoch milliseconds)
and an optional ``final`` flag (default true; false for a still-forming bar). `check_bar` is the one place
a bar from outside is validated, whichever capability reads it; `read_columns` is its counterpart for bars
sent as columns (``{"close": [...], "high": [...]}``).

>>> check_bar({"ts": 60000, "open": 1, "high": 2, "low": 0.5, "close": 1.5, "volume": 10})["close"]
1.5
>>> check_bar({"ts": 1, "open": 1, "high": 1, "low": 1, "close": "x", "volume": 1})
Traceback (most recent call last):
...
ml_processing.bus.errors.BadRequest: bar field 'close' must be a number, got 'x'
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np

from ml_processing.core.errors import BadRequest, TooLarge

#: The numeric fields of a bar besides ``ts``, in their canonical order.
FIELDS = ("open", "high", "low", "close", "volume")


def check_bar(bar: Any) -> dict[str, Any]:
    """A bar with an integer ``ts`` and finite or NaN numeric fields; `BadRequest` naming the field."""
    if type(bar) is not dict and not isinstance(bar, Mapping):
        raise BadRequest(f"a bar must be a map of ts, open, high, low, close, volume, got {type(bar).__name__}",
                         field="bar")
    ts = bar.get("ts")
    if type(ts) is not int and (isinstance(ts, bool) or not isinstance(ts, (int, float))
                                or (isinstance(ts, float) and not ts.is_integer())):
        raise BadRequest(f"bar field 'ts' must be an integer timestamp, got {ts!r:.40}", field="ts")
    out: dict[str, Any] = {"ts": int(ts), "final": bool(bar.get("final", True))}
    for name in FIELDS:
        value = bar.get(name)
        if type(value) is float and (value - value == 0.0 or value != value):  # finite or NaN: the usual case
            out[name] = value
            continue
        if value is None:
            value = math.nan
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isinf(value):
            raise BadRequest(f"bar field {name!r} must be a number, got {value!r:.40}", field=name)
        out[name] = float(value)
    return out


def check_bars(bars: Any, limit: int | None = None) -> list[dict[str, Any]]:
    """A list of bars, each checked; `BadRequest` naming the bar and field (``bars[3].close``), `TooLarge`
    past `limit` bars."""
    if not isinstance(bars, list):
        raise BadRequest("'bars' must be a list of {ts, open, high, low, close, volume} maps", field="bars")
    if limit is not None and len(bars) > limit:
        raise TooLarge(f"{len(bars):,} bars; at most {limit:,} per request", field="bars")
    checked = []
    for i, bar in enumerate(bars):
        try:
            checked.append(check_bar(bar))
        except BadRequest as exc:
            raise BadRequest(f"bars[{i}]: {exc.message}", field=f"bars[{i}].{exc.field}") from None
    return checked


def read_column(value: Any, name: str, limit: int | None = None) -> np.ndarray:
    """One column of numbers (a list, null for a gap, or a 1-D numeric ndarray) as contiguous float64;
    `BadRequest` naming the column or its first element that is not a number (``close[7]``), `TooLarge`
    past `limit` values."""
    if isinstance(value, np.ndarray):
        if value.ndim != 1 or value.dtype.kind not in "biuf":
            raise BadRequest(f"column {name!r} must be a 1-D numeric array", field=name)
        array = np.ascontiguousarray(value, dtype=np.float64)
    elif isinstance(value, list):
        if limit is not None and len(value) > limit:
            raise TooLarge(f"column {name!r} has {len(value):,} values; at most {limit:,} per request", field=name)
        try:
            array = np.array(value, dtype=np.float64)
        except (TypeError, ValueError):
            bad = next((i for i, v in enumerate(value)
                        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)))), 0)
            raise BadRequest(f"column {name!r}: element {bad} is not a number, got {value[bad]!r:.40}",
                             field=f"{name}[{bad}]") from None
        if array.ndim != 1:
            raise BadRequest(f"column {name!r} must be a flat list of numbers", field=name)
    else:
        raise BadRequest(f"column {name!r} must be a list of numbers, got {type(value).__name__}", field=name)
    if limit is not None and len(array) > limit:
        raise TooLarge(f"column {name!r} has {len(array):,} values; at most {limit:,} per request", field=name)
    return array


def read_columns(args: Mapping[str, Any], names: Sequence[str], limit: int | None = None, *,
                 optional: Collection[str] = (), prefix: str = "") -> tuple[dict[str, np.ndarray], int]:
    """The named columns of `args`, all of one length, and that length; a column in `optional` may be absent.
    Errors name the column as ``{prefix}{name}``, and a missing one lists what the request reads."""
    out: dict[str, np.ndarray] = {}
    length: int | None = None
    first = ""
    for name in names:
        field = prefix + name
        value = args.get(name)
        if value is None:
            if name in optional:
                continue
            raise BadRequest(f"missing column {field!r}; this request reads {', '.join(names)}", field=field)
        array = read_column(value, field, limit)
        if length is None:
            length, first = len(array), field
        elif len(array) != length:
            raise BadRequest(f"column {field!r} has {len(array):,} values, {first!r} has {length:,}", field=field)
        out[name] = array
    return out, length or 0
