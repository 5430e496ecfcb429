"""Columns in op declarations: bars and feature rows sent as arrays, read the same way by every op.

A `Column` field accepts a list of numbers (``null`` for a gap, read as NaN) or a 1-D numeric ndarray
(the bus codec's ndarray extension type), and hands the handler a contiguous float64 ndarray. One answer
per edge case, on every endpoint that takes bars (docs/PROTOCOL.md section 3):

* an empty column: 400 naming the column (``close: needs at least one value``);
* ``true``/``false``, a string, a nested list, or an infinite value among the numbers: 400 naming the
  element (``close[7]``);
* columns of one request whose lengths differ: 400 naming the shorter one;
* a negative volume: 400 naming the element (``volume[3]``);
* more values than the op's limit: 413 ``too_large``.

>>> from ml_processing.core.ops import convert
>>> class Closes(Bars):
...     pass
>>> convert({"close": [1, None, 3]}, Closes).close
array([ 1., nan,  3.])
>>> convert({"close": [1, True]}, Closes)
Traceback (most recent call last):
...
ml_processing.bus.errors.BadRequest: close[1]: expected a number, got True
>>> convert({"close": [1, 2], "volume": [5, -1]}, Closes)
Traceback (most recent call last):
...
ml_processing.bus.errors.BadRequest: volume[1]: a volume is never negative, got -1.0
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated, Any, ClassVar

import msgspec
import numpy as np

from ml_processing.core.errors import BadRequest, TooLarge
from ml_processing.core.ops import Args, register_type

from .bars import COLUMNS

__all__ = ["MAX_VALUES", "NAMES", "Bars", "Column", "Columns", "OptionalColumn", "read_column"]

#: Values per column unless an op says otherwise (`Bars.max_values`).
MAX_VALUES = 1_000_000

# ``format: double`` tells the REST edge that a large JSON body may hand this field over as a float64 array
_SCHEMA: dict[str, Any] = {
    "type": "array", "minItems": 1, "items": {"type": ["number", "null"], "format": "double"},
    "description": "numbers (null for a gap); or, in msgpack, a 1-D numeric ndarray (docs/PROTOCOL.md)",
}
_NUMBERS_OR_NULL = frozenset({float, int, type(None)})


def _first_bad(values: list[Any]) -> int:
    return next((i for i, v in enumerate(values) if v is not None and (
        isinstance(v, bool) or not isinstance(v, (int, float)) or math.isinf(v))), 0)


def read_column(value: Any) -> np.ndarray:
    """A column as contiguous float64 (null -> NaN); `ValueError` naming the bad element (``[7]: ...``)."""
    if isinstance(value, np.ndarray):
        if value.ndim != 1 or value.dtype.kind not in "iuf":
            raise ValueError(f"expected a 1-D numeric array, got {value.ndim}-D {value.dtype}")
        array = np.ascontiguousarray(value, dtype=np.float64)
    elif isinstance(value, list):
        if _NUMBERS_OR_NULL.issuperset(map(type, value)):  # one pass in C: numbers, perhaps nulls (no bool)
            array = np.array(value, dtype=np.float64)  # null -> NaN
        else:
            bad = _first_bad(value)
            item = value[bad]
            if item is not None and (isinstance(item, bool) or not isinstance(item, (int, float)) or math.isinf(item)):
                raise ValueError(f"[{bad}]: expected a number, got {item!r:.40}")
            array = np.array([math.nan if v is None else v for v in value], dtype=np.float64)  # numpy scalars
    else:
        raise ValueError(f"expected a list of numbers, got {type(value).__name__}")
    if len(array) == 0:
        raise ValueError("needs at least one value")
    if not np.isfinite(array).all():
        infinite = np.flatnonzero(np.isinf(array))
        if len(infinite):
            raise ValueError(f"[{int(infinite[0])}]: expected a finite number, got {array[infinite[0]]}")
    return array


register_type(np.ndarray, read_column, _SCHEMA)

#: A column field: required.
Column = Annotated[np.ndarray, msgspec.Meta(description="a column of numbers")]
#: A column field an op reads when present.
OptionalColumn = Annotated[np.ndarray | None, msgspec.Meta(description="a column of numbers, optional")]


#: The column names of bars, in their canonical order (``ts`` first).
NAMES = COLUMNS


class Columns(Args):
    """Bars sent as columns (``ts``, ``open``, ``high``, ``low``, ``close``, ``volume``), each optional:
    an op reads the ones it needs (`require`). Subclass it with the op's own fields; set ``max_values``
    for the op's limit."""

    max_values: ClassVar[int] = MAX_VALUES

    ts: OptionalColumn = None
    open: OptionalColumn = None
    high: OptionalColumn = None
    low: OptionalColumn = None
    close: OptionalColumn = None
    volume: OptionalColumn = None

    def __post_init__(self) -> None:
        first, length = "", 0
        for name in NAMES:
            column = getattr(self, name)
            if column is None:
                continue
            if not first:
                first, length = name, len(column)
                if length > self.max_values:
                    raise TooLarge(f"{name} has {length:,} values; at most {self.max_values:,} per request",
                                   field=name)
            elif len(column) != length:
                raise ValueError(f"{name}: has {len(column):,} values, {first} has {length:,}")
        if self.volume is not None and (self.volume < 0).any():
            at = int(np.flatnonzero(self.volume < 0)[0])
            raise ValueError(f"volume[{at}]: a volume is never negative, got {self.volume[at]}")

    @property
    def length(self) -> int:
        """Values per column (0 when no column was sent)."""
        return next((len(c) for name in NAMES if (c := getattr(self, name)) is not None), 0)

    def columns(self, names: tuple[str, ...] = NAMES[1:]) -> dict[str, np.ndarray]:
        """The columns present among `names`, by name."""
        return {name: column for name in names if (column := getattr(self, name)) is not None}

    def require(self, names: Sequence[str]) -> dict[str, np.ndarray]:
        """The columns `names`, every one present; `BadRequest` naming the first missing one."""
        out = {}
        for name in names:
            column = getattr(self, name, None)
            if column is None:
                raise BadRequest(f"missing column {name!r}; this request reads {', '.join(names)}", field=name)
            out[name] = column
        return out


class Bars(Columns, kw_only=True):
    """`Columns` with ``close`` required.

    (A subclass that adds a required field after the optional columns passes ``kw_only=True``, as here:
    msgspec orders each class's own fields.)"""

    close: Column
