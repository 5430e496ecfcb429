"""Live market state: per (symbol, timeframe) a bounded ring of bars and the stream state of its indicators.

Pure synchronous logic; the actor wires it to pub/sub, REST and persistence.

Bar rule (the order bars arrive in is not trusted):

* A bar is ``{ts, open, high, low, close, volume}`` with ``ts`` the bar's open time (an integer, e.g.
  epoch milliseconds) and an optional ``final`` flag (default true).
* ``final`` and ``ts`` newer than the last committed bar: **committed**; every indicator stream advances
  by one bar and the update is published.
* ``final: false`` and ``ts`` newer than the last committed bar: the **forming** bar; it replaces any
  earlier snapshot of the forming bar, and ``peek`` previews the indicators on it without committing.
  The final bar of the same ``ts`` commits it.
* ``ts`` equal to or older than the last committed bar: **stale** (a duplicate or late bar); dropped and
  counted, never applied, so state is never corrupted by replays or reordering.

>>> from ml_processing.sdk.bars import check_bar
>>> from ml_processing.plugins.indicators.talib_indicators import TalibIndicator
>>> series = Series("AAPL", "1m", capacity=100)
>>> series.add(Live.parse("SMA(timeperiod=2)", {"SMA": TalibIndicator("SMA")}))
>>> [series.on_bar(check_bar({"ts": t, "open": 1, "high": 1, "low": 1, "close": c, "volume": 1})) is not None
...  for t, c in [(1, 10.0), (2, 20.0), (2, 99.0)]]
[True, True, False]
>>> series.latest(), series.counts["stale"]
({'SMA_2': 15.0}, 1)
"""

from __future__ import annotations

import functools
import math
import operator
import re
import reprlib
import struct
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ml_processing.sdk import BadRequest, codec
from ml_processing.sdk.bars import FIELDS
from ml_processing.sdk.indicator import Indicator, IndicatorStream
from ml_processing.sdk.talib_functions import TalibStream

from .compute import resolve
from .ops import IndicatorSpec

_ROW = operator.itemgetter("ts", *FIELDS)  # a bar as a ring row
_COLUMN = {name: i for i, name in enumerate(FIELDS, 1)}  # a bar column's place in a row
_ROW_STRUCT = struct.Struct(f"={1 + len(FIELDS)}d")  # a ring row as the bytes of its float64s
_PACK_ROW = _ROW_STRUCT.pack
_PENDING = 64 * _ROW_STRUCT.size  # bytes of rows a ring holds before its array takes them
_SPEC = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:\((.*)\))?\s*$")


@dataclass
class Live:
    """One indicator configured on a series: the indicator, its checked parameters, its output keys."""

    indicator: Indicator
    params: dict[str, int | float]
    keys: tuple[str, ...]
    lookback: int = 0

    @property
    def key(self) -> str:
        """The indicator's own key (its outputs without the ``.output`` suffix)."""
        return self.keys[0].split(".")[0]

    @classmethod
    def parse(cls, spec: str | IndicatorSpec | Mapping[str, Any], registry: Mapping[str, Indicator],
              where: str = "indicators") -> Live:
        """``"RSI"``, ``"BBANDS(timeperiod=20, nbdevup=2)"``, an `IndicatorSpec` or ``{"name": ..., "params":
        {...}}`` (configuration, saved state); `BadRequest` naming ``{where}.name`` or ``{where}.params.P``."""
        if isinstance(spec, str):
            match = _SPEC.match(spec)
            if match is None:
                raise BadRequest(f"{where}: indicator spec {spec!r} is not NAME or NAME(param=value, ...)",
                                 field=where)
            name, params = match.group(1), _params(match.group(2) or "", spec, where)
        elif isinstance(spec, IndicatorSpec):
            name, params = spec.name, spec.params
        elif isinstance(spec, Mapping) and isinstance(spec.get("name"), str):
            name, params = spec["name"], spec.get("params")
        else:
            raise BadRequest(f"{where}: an indicator spec is a string or a {{name, params}} map, got {reprlib.repr(spec)}",
                             field=where)
        request = resolve(name, params, registry, where)
        return cls(request.indicator, request.params, request.keys, request.indicator.lookback(request.params))


def _params(text: str, spec: str, where: str) -> dict[str, float]:
    params: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        try:
            if not sep:
                raise ValueError
            number = float(value)
        except ValueError:
            raise BadRequest(f"{where}: indicator spec {spec!r}: {part!r} is not param=number", field=where) from None
        params[key.strip()] = int(number) if number.is_integer() and "." not in value else number
    return params


@dataclass
class _Ring:
    """Bars in fixed numpy arrays; the oldest is overwritten when full.

    A bar appended is packed as float64 bytes into a short buffer, written into the array in one assignment
    once it holds 64 rows or when the rows are read (a numpy write of each row as it comes costs about 4,000
    instructions, more than the rest of the bar's bookkeeping)."""

    capacity: int
    data: np.ndarray = field(init=False)
    count: int = 0
    head: int = 0  # index of the next write into `data`
    pending: bytearray = field(default_factory=bytearray)  # rows appended, not yet in `data` (float64s)

    def __post_init__(self) -> None:
        self.data = np.empty((self.capacity, 1 + len(FIELDS)), dtype=np.float64)

    def append(self, row: tuple[float, ...]) -> None:
        """Append one bar as a row ``(ts, open, high, low, close, volume)`` (`_ROW` of the bar)."""
        self.pending += _PACK_ROW(*row)
        if self.count < self.capacity:
            self.count += 1
        if len(self.pending) >= _PENDING:
            self.flush()

    def flush(self) -> None:
        """Write the pending rows into the array, oldest first, wrapping around."""
        if not self.pending:
            return
        rows = np.frombuffer(self.pending, dtype=np.float64).reshape(-1, self.data.shape[1])[-self.capacity:]
        self.pending = bytearray()  # a new one: `rows` holds the old one's buffer
        first = min(len(rows), self.capacity - self.head)
        self.data[self.head:self.head + first] = rows[:first]
        self.data[:len(rows) - first] = rows[first:]
        self.head = (self.head + len(rows)) % self.capacity

    def load(self, rows: np.ndarray) -> None:
        """Replace the content with `rows` ((n, 6), oldest first; the newest `capacity` are kept)."""
        rows = rows[-self.capacity:]
        self.pending = bytearray()
        self.data[: len(rows)] = rows
        self.count = len(rows)
        self.head = len(rows) % self.capacity

    def rows(self, last: int | None = None) -> np.ndarray:
        """The bars oldest first (the newest `last` of them), as a (n, 6) array: ts, open, high, low, close,
        volume. A copy of those rows only.

        >>> ring = _Ring(3)
        >>> for ts in range(1, 6):
        ...     ring.append((ts, 0.0, 0.0, 0.0, 0.0, 0.0))
        >>> ring.rows()[:, 0].tolist(), ring.rows(2)[:, 0].tolist(), ring.rows(0).shape
        ([3.0, 4.0, 5.0], [4.0, 5.0], (0, 6))
        """
        self.flush()
        n = self.count if last is None else max(0, min(last, self.count))
        end = self.head if self.count == self.capacity else self.count
        start = end - n
        if start >= 0:
            return self.data[start:end].copy()
        return np.concatenate([self.data[start:], self.data[:end]])

    def columns(self) -> dict[str, np.ndarray]:
        """The bars oldest first as columns: ``ts`` int64, the others float64, each contiguous."""
        rows = self.rows()
        return {"ts": rows[:, 0].astype(np.int64),
                **{name: np.ascontiguousarray(rows[:, i]) for i, name in enumerate(FIELDS, 1)}}


class Series:
    """One (symbol, timeframe): the ring of committed bars, the forming bar, the live indicators."""

    def __init__(self, symbol: str, timeframe: str, capacity: int) -> None:
        self.symbol = symbol
        self.timeframe = timeframe
        self.ring = _Ring(capacity)
        self.last_ts: int | None = None
        self.forming: dict[str, Any] | None = None
        self.live: dict[str, tuple[Live, IndicatorStream]] = {}
        # the per-bar path works on flat lists in `live` order: one stream per entry, its outputs
        # concatenated under `_keys`; the dicts are built for publishing only
        self._streams: list[IndicatorStream] = []
        self._keys: list[str] = []
        self._outputs: Sequence[float] = []
        self._plan: _Plan | None = None  # the per-bar path once every TA-Lib stream is open
        self.width = 0  # values an update carries: every output of every live indicator
        self._warm_all: dict[str, bool] | None = None  # once every lookback is filled the flags are fixed
        self._template: codec.Template | None = None  # the update's encoding once the flags are fixed
        self.committed = 0
        self.counts = {"committed": 0, "forming": 0, "stale": 0}

    def add(self, live: Live) -> None:
        """Configure an indicator; its stream replays the bars already held, so it is warm at once."""
        if live.key in self.live:
            return
        stream = live.indicator.stream(live.params)
        outputs: tuple[float, ...] = (math.nan,) * len(live.keys)
        if self.ring.count:
            outputs = stream.warm(self.ring.columns()) or outputs
        self.live[live.key] = (live, stream)
        self._streams.append(stream)
        self._keys.extend(live.keys)
        self._outputs = [*self._outputs, *outputs]
        self.width = len(self._keys)
        self._warm_all = self._template = self._plan = None

    def remove(self, key: str) -> bool:
        entry = self.live.pop(key, None)
        if entry is None:
            return False
        values = self.values
        self._streams = [stream for _, stream in self.live.values()]
        self._keys = [k for live, _ in self.live.values() for k in live.keys]
        self._outputs = [values[k] for k in self._keys]
        self.width = len(self._keys)
        self._warm_all = self._template = self._plan = None
        return True

    @property
    def values(self) -> dict[str, float]:
        """The latest output of every live indicator, by output key."""
        return dict(zip(self._keys, self._outputs, strict=True))

    def on_bar(self, bar: Mapping[str, Any]) -> Any:
        """Apply a checked bar (see the module's rule); the update to publish (`update`) when one was
        committed, else None."""
        ts = bar["ts"]
        if self.last_ts is not None and ts <= self.last_ts:
            self.counts["stale"] += 1
            return None
        if not bar.get("final", True):
            self.forming = dict(bar)
            self.counts["forming"] += 1
            return None
        self.forming = None
        row = _ROW(bar)
        self.ring.append(row)
        self.last_ts = ts
        self.committed += 1
        self.counts["committed"] += 1
        plan = self._plan
        total = sum(row)
        if plan is not None and total == total:  # the usual bar: every stream open, no NaN in the bar
            self._outputs = plan.run(bar, row)
            return self.update()
        outputs: list[float] = []
        for stream in self._streams:
            outputs += stream.update(bar)
        self._outputs = outputs
        if plan is None:
            self._plan = _Plan.of(self._streams)
        return self.update()

    def update(self) -> Any:
        """The body of ``indicator.SYMBOL.TIMEFRAME`` for the last committed bar: `snapshot`, or the same map
        encoded already (`codec.Packed`) once every indicator is warm and every value a number, the usual
        case on the per-bar path (then only the timestamp and the values are encoded per bar).

        >>> from ml_processing.sdk.bars import check_bar
        >>> from ml_processing.plugins.indicators.talib_indicators import TalibIndicator
        >>> series = Series("ES", "1m", capacity=10)
        >>> series.add(Live.parse("SMA(timeperiod=2)", {"SMA": TalibIndicator("SMA")}))
        >>> updates = [series.on_bar(check_bar({"ts": t, "open": 1, "high": 1, "low": 1, "close": float(t),
        ...                                     "volume": 1})) for t in (1, 2, 3)]
        >>> [type(u).__name__ for u in updates], codec.unpackb(updates[-1]) == series.snapshot()
        (['dict', 'dict', 'Packed'], True)
        """
        template, outputs, ts = self._template, self._outputs, self.last_ts
        if template is None:
            if self._warm_all is None or type(ts) is not int:
                return self.snapshot()
            template = self._template = codec.Template(self._shape(self._warm_all))
        total = sum(outputs)
        if total - total != 0.0 or type(ts) is not int:  # a NaN or an infinity somewhere: null goes as null
            return self.snapshot()
        return template.encode(ts, *outputs)

    def _shape(self, warm: dict[str, bool]) -> dict[str, Any]:
        """`snapshot`'s map as a `codec.Template` shape: the timestamp and the values are its slots."""
        return {"symbol": self.symbol, "timeframe": self.timeframe, "ts": codec.INT,
                "values": dict.fromkeys(self._keys, codec.FLOAT), "warm": warm}

    def peek(self, bar: Mapping[str, Any] | None = None) -> dict[str, float]:
        """Indicator values on `bar` (default: the forming bar) without committing anything."""
        bar = bar if bar is not None else self.forming
        if bar is None:
            return {}
        out: dict[str, float] = {}
        for live, stream in self.live.values():
            out.update(zip(live.keys, stream.peek(bar), strict=True))
        return out

    def latest(self) -> dict[str, float]:
        return self.values

    def warm(self) -> dict[str, bool]:
        """Per indicator: has its lookback been filled (its outputs are numbers)? Read-only: once every
        indicator is warm the same dict is returned on every bar."""
        if self._warm_all is not None:
            return self._warm_all
        flags = {key: self.committed > live.lookback for key, (live, _) in self.live.items()}
        if all(flags.values()):
            self._warm_all = flags
        return flags

    def snapshot(self) -> dict[str, Any]:
        """The published body of ``indicator.SYMBOL.TIMEFRAME``: NaN travels as null."""
        return {"symbol": self.symbol, "timeframe": self.timeframe, "ts": self.last_ts,
                "values": {k: (None if v != v else v) for k, v in zip(self._keys, self._outputs, strict=True)},
                "warm": self.warm()}


class _Plan:
    """A committed bar's outputs, for a series whose TA-Lib streams are all open and a bar without NaN: each
    TA-Lib stream's own update (`TalibStream.step`) called on its columns picked from the bar's row, without
    the Python call of `TalibStream.update` around it (about a third of the per-bar cost of 20 indicators);
    the plugin's own streams take the bar through their `update`. In the series' order.

    >>> from ml_processing.plugins.indicators.talib_indicators import TalibIndicator
    >>> history = {c: np.arange(1.0, 41.0) for c in FIELDS}
    >>> def opened():
    ...     streams = [TalibIndicator(name).stream({}) for name in ("ATR", "SMA", "MACD", "OBV")]
    ...     return [s for s in streams if s.warm(history)]  # each opens on the history
    >>> plan, streams = _Plan.of(opened()), opened()
    >>> bar = {"ts": 41, **dict.fromkeys(FIELDS, 41.0)}
    >>> outputs = plan.run(bar, _ROW(bar))
    >>> [round(v, 6) for v in outputs]
    [1.0, 26.5, 7.0, 7.0, 0.0, 861.0]
    >>> outputs == [v for s in streams for v in s.update(bar)]
    True
    """

    #: how a stream is called: on one column, one output; one column, several outputs; several columns
    #: (one output, several); the bar (a stream of the plugin's own)
    ONE, ONE_MANY, SEVERAL, SEVERAL_MANY, BAR = range(5)

    def __init__(self, streams: Sequence[IndicatorStream]) -> None:
        self.calls: list[tuple[Callable[..., Any], Any, int]] = []  # (callable, its columns, how)
        for stream in streams:
            if not isinstance(stream, TalibStream) or not set(stream.indicator.inputs) <= _COLUMN.keys():
                self.calls.append((stream.update, None, self.BAR))
                continue
            assert stream.step is not None
            at = [_COLUMN[c] for c in stream.indicator.inputs]
            many = len(stream.indicator.outputs) > 1
            if len(at) == 1:
                self.calls.append((stream.step, at[0], self.ONE_MANY if many else self.ONE))
            else:  # the columns as a tuple: a slice of the row where they are adjacent
                pick = (operator.itemgetter(slice(at[0], at[-1] + 1)) if at == list(range(at[0], at[-1] + 1))
                        else operator.itemgetter(*at))
                self.calls.append((stream.step, pick, self.SEVERAL_MANY if many else self.SEVERAL))
        #: the outputs at a committed bar (`row` is its `_ROW`, without NaN), in the series' order
        self.run = self._compile()

    @classmethod
    def of(cls, streams: Sequence[IndicatorStream]) -> _Plan | None:
        """The plan of these streams, or None while a TA-Lib stream is not open yet."""
        if any(isinstance(s, TalibStream) and s.step is None for s in streams):
            return None
        return cls(streams)

    def _compile(self) -> Callable[[Mapping[str, Any], tuple[float, ...]], list[float]]:
        """`run`: one function per plan that makes every call in one list display (`_plan_code`).

        Each callable and column picker is bound as a default argument, so they sit side by side in the
        function's defaults instead of in a tuple each. With many symbols in a process, a series' plan is
        cold again by its next bar, and every separate object is a cache miss. The loop over `calls` this
        replaces cost 18.4-18.8 us per committed bar at 1,000 symbols against 14.4-15.9 us (20 indicators,
        in-process; docs/BENCHMARKS.md, "Speed, continued").
        """
        shape = tuple((how, at if how in (self.ONE, self.ONE_MANY) else None) for _, at, how in self.calls)
        bound: list[Any] = []
        for step, at, how in self.calls:
            bound += (step, at) if how in (self.SEVERAL, self.SEVERAL_MANY) else (step,)
        run: Callable[[Mapping[str, Any], tuple[float, ...]], list[float]] = types.FunctionType(
            _plan_code(shape), {}, "run", tuple(bound))
        return run


@functools.lru_cache(maxsize=256)
def _plan_code(shape: tuple[tuple[int, int | None], ...]) -> types.CodeType:
    """The code of `_Plan.run` for plans of this shape (how each stream is called, and the column of those
    called on one), compiled once and shared by every series configured alike. Its source holds only
    generated names and column numbers: ``def run(bar, row, s0=..., p1=..., s1=...): return [s0(row[4]),
    *s1(*p1(row))]``."""
    names, items = [], []
    for i, (how, at) in enumerate(shape):
        names.append(f"s{i}")
        if how == _Plan.ONE:
            items.append(f"s{i}(row[{int(at or 0)}])")
        elif how == _Plan.ONE_MANY:
            items.append(f"*s{i}(row[{int(at or 0)}])")
        elif how == _Plan.BAR:
            items.append(f"*s{i}(bar)")
        else:
            names.append(f"p{i}")
            items.append(f"{'' if how == _Plan.SEVERAL else '*'}s{i}(*p{i}(row))")
    source = f"def run(bar, row{''.join(f', {n}=None' for n in names)}):\n    return [{', '.join(items)}]\n"
    module = compile(source, "<indicators plan>", "exec")
    return next(c for c in module.co_consts if isinstance(c, types.CodeType))
