"""The bar: the unit of market data every capability consumes (docs/PROTOCOL.md section 4).

A bar is ``{ts, open, high, low, close, volume}`` with ``ts`` its open time (integer epoch milliseconds)
and an optional ``final`` flag (default true; false for a still-forming bar). `check_bar` is the one place
a bar from outside is validated, whichever capability reads it.

>>> check_bar({"ts": 60000, "open": 1, "high": 2, "low": 0.5, "close": 1.5, "volume": 10})["close"]
1.5
>>> check_bar({"ts": 1, "open": 1, "high": 1, "low": 1, "close": "x", "volume": 1})
Traceback (most recent call last):
...
ml_processing.bus.errors.BadRequest: bar field 'close' must be a number, got 'x'
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from .errors import BadRequest, TooLarge

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
