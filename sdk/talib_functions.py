"""TA-Lib functions as indicators: batch through TA-Lib, streaming through TA-Lib's stream handles.

The adapter every plugin that computes with TA-Lib shares (indicators, candlestick patterns). Nothing here
is a hand-kept list: names, inputs, parameters, defaults and outputs come from TA-Lib's function tables
(its abstract interface), and TA-Lib computes. Each parameter is bounded by TA-Lib's own range for it
(`parameter_ranges`: ``timeperiod`` of SMA is 1 to 100,000, ``vfactor`` of T3 0 to 1, a ``matype`` one
of TA-Lib's moving averages), so a value TA-Lib would refuse, or one that does not fit the C ``int`` it
is handed to, is a `BadRequest` naming the parameter before TA-Lib sees it; a combination TA-Lib refuses
(its lookback function returns -1) is refused the same way.

>>> [(p.name, p.minimum, p.maximum) for p in TalibIndicator("SMA").params]
[('timeperiod', 1, 100000)]
>>> TalibIndicator("SMA").resolve({"timeperiod": 2**31})
Traceback (most recent call last):
...
ml_processing.bus.errors.BadRequest: parameter 'timeperiod' must be <= 100000, got 2147483648
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import operator
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import talib as _talib
from talib import _ta_lib as _internals
from talib import abstract as _abstract
from talib import stream as _stream

from ml_processing.core.errors import BadRequest
from ml_processing.core.log import get_logger

from .indicator import INT32_MAX, INT32_MIN, Indicator, IndicatorStream, Param

log = get_logger(__name__)

# TA-Lib's typing does not describe its abstract interface and C internals: use them untyped.
talib: Any = _talib
abstract: Any = _abstract
streams: Any = _stream
internals: Any = _internals
InsufficientHistory: type[Exception] = internals.InsufficientHistory  # raised by the stream API

# -- parameter ranges, from TA-Lib's C metadata -------------------------------------------------------------
#
# TA-Lib describes every optional parameter in a table (TA_OptInputParameterInfo) whose ``dataSet`` is the
# parameter's range (TA_IntegerRange, TA_RealRange) or its list of values (TA_IntegerList, the moving-average
# types). The Python wrapper reports the name, type and default but not the range, so the range is read
# from the same C table through ctypes, in the TA-Lib library the wrapper loaded.

_REAL_RANGE, _REAL_LIST, _INTEGER_RANGE, _INTEGER_LIST = 0, 1, 2, 3  # TA_OptInputParameterType


class _OptInputInfo(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("param_name", ctypes.c_char_p), ("flags", ctypes.c_int),
                ("display_name", ctypes.c_char_p), ("data_set", ctypes.c_void_p),
                ("default_value", ctypes.c_double), ("hint", ctypes.c_char_p), ("help_file", ctypes.c_char_p)]


class _IntegerRange(ctypes.Structure):
    _fields_ = [("min", ctypes.c_int), ("max", ctypes.c_int), ("suggested_start", ctypes.c_int),
                ("suggested_end", ctypes.c_int), ("suggested_increment", ctypes.c_int)]


class _RealRange(ctypes.Structure):
    _fields_ = [("min", ctypes.c_double), ("max", ctypes.c_double), ("precision", ctypes.c_int),
                ("suggested_start", ctypes.c_double), ("suggested_end", ctypes.c_double),
                ("suggested_increment", ctypes.c_double)]


class _IntegerPair(ctypes.Structure):
    _fields_ = [("value", ctypes.c_int), ("string", ctypes.c_char_p)]


class _IntegerList(ctypes.Structure):
    _fields_ = [("data", ctypes.POINTER(_IntegerPair)), ("count", ctypes.c_uint)]


@dataclass(frozen=True)
class Range:
    """TA-Lib's range of one parameter: inclusive bounds, and the named values of a list (``matype``)."""

    minimum: float
    maximum: float
    choices: tuple[tuple[int, str], ...] = ()


def _library_paths() -> Iterator[str]:
    """Where TA-Lib's C library may be: the one already mapped into this process first (the wrapper's)."""
    maps = Path("/proc/self/maps")
    if maps.exists():
        for line in maps.read_text().splitlines():
            path = line.split()[-1]
            if "/libta-lib" in path or "/libta_lib" in path:
                yield path
    for folder in (Path(talib.__file__).resolve().parent.parent / "ta_lib.libs",):
        yield from (str(p) for p in sorted(folder.glob("libta*lib*")))
    for name in ("ta-lib", "ta_lib"):
        found = ctypes.util.find_library(name)
        if found:
            yield found


@functools.cache
def _library() -> Any:
    for path in _library_paths():
        try:
            lib = ctypes.CDLL(path)
            lib.TA_GetFuncHandle.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p)]
            lib.TA_GetOptInputParameterInfo.argtypes = [ctypes.c_void_p, ctypes.c_uint,
                                                        ctypes.POINTER(ctypes.POINTER(_OptInputInfo))]
            return lib
        except (OSError, AttributeError):
            continue
    log.warning("talib_ranges_unavailable", reason="TA-Lib's C library was not found: parameters are bounded "
                "by their C type and checked by TA-Lib's lookback only")
    return None


@functools.cache
def parameter_ranges(name: str) -> tuple[Range | None, ...]:
    """TA-Lib's range of each optional parameter of function `name`, in order (None where unknown).

    >>> parameter_ranges("BBANDS")[:2]
    (Range(minimum=2, maximum=100000, choices=()), Range(minimum=-3e+37, maximum=3e+37, choices=()))
    >>> parameter_ranges("BBANDS")[3].choices[:2]
    ((0, 'SMA'), (1, 'EMA'))
    """
    count = len(abstract.Function(name).info["parameters"])
    lib = _library()
    if lib is None:
        return (None,) * count
    handle = ctypes.c_void_p()
    if lib.TA_GetFuncHandle(name.encode(), ctypes.byref(handle)) != 0:
        return (None,) * count
    out: list[Range | None] = []
    for i in range(count):
        info = ctypes.POINTER(_OptInputInfo)()
        if lib.TA_GetOptInputParameterInfo(handle, i, ctypes.byref(info)) != 0 or not info.contents.data_set:
            out.append(None)
            continue
        kind, data = info.contents.type, info.contents.data_set
        if kind == _INTEGER_RANGE:
            r = ctypes.cast(data, ctypes.POINTER(_IntegerRange)).contents
            out.append(Range(r.min, r.max))
        elif kind == _REAL_RANGE:
            real = ctypes.cast(data, ctypes.POINTER(_RealRange)).contents
            out.append(Range(real.min, real.max))
        elif kind == _INTEGER_LIST:
            listed = ctypes.cast(data, ctypes.POINTER(_IntegerList)).contents
            pairs = tuple((listed.data[k].value, listed.data[k].string.decode()) for k in range(listed.count))
            values = sorted(v for v, _ in pairs)
            contiguous = values == list(range(values[0], values[-1] + 1)) if values else False
            out.append(Range(values[0], values[-1], pairs) if contiguous else None)
        else:  # a list of reals: no TA-Lib function has one
            out.append(None)
    return tuple(out)


def _inputs(info: Mapping[str, Any]) -> tuple[str, ...]:
    """The OHLCV columns read, in the function's argument order."""
    columns: list[str] = []
    for value in info["input_names"].values():
        columns.extend([value] if isinstance(value, str) else value)
    return tuple(columns)


def _param(name: str, default: Any, kind: int, help_text: str, bounds: Range | None) -> Param:
    if kind in (_INTEGER_RANGE, _INTEGER_LIST):
        lo = INT32_MIN if bounds is None else int(bounds.minimum)
        hi = INT32_MAX if bounds is None else int(bounds.maximum)
        if kind == _INTEGER_LIST:
            lo = max(lo, 0)
            if bounds is not None and bounds.choices:
                help_text += " (" + ", ".join(f"{v}={label}" for v, label in bounds.choices) + ")"
        return Param(name, int, int(default), minimum=lo, maximum=hi, doc=help_text)
    if bounds is None:
        return Param(name, float, float(default), doc=help_text)
    return Param(name, float, float(default), minimum=bounds.minimum, maximum=bounds.maximum, doc=help_text)


class TalibIndicator(Indicator):
    """One TA-Lib function; instances carry what the class attributes of a hand-written indicator would."""

    def __init__(self, name: str) -> None:
        info = abstract.Function(name).info
        self.name = name  # type: ignore[misc]
        self.group = info["group"]  # type: ignore[misc]
        self.doc = info["display_name"]  # type: ignore[misc]
        self.inputs = _inputs(info)  # type: ignore[misc]
        ranges = parameter_ranges(name)
        params = []
        for i, (param, default) in enumerate(info["parameters"].items()):
            meta = internals._ta_getOptInputParameterInfo(name.encode(), i)
            params.append(_param(param, default, meta["type"], meta.get("help", ""), ranges[i]))
        self.params = tuple(params)  # type: ignore[misc]
        self.outputs = tuple(info["output_names"])  # type: ignore[misc]
        self.function = getattr(talib, name)  # TA-Lib's own function, for callers that want its raw output

    def check_params(self, params: Mapping[str, int | float]) -> None:
        if self.lookback(params) >= 0:
            return
        defaults = {p.name: p.default for p in self.params}
        for p in self.params:  # find the parameter TA-Lib refuses, for a message that names it
            if _lookback(self.name, tuple({**defaults, p.name: params[p.name]}.items())) < 0:
                raise BadRequest(f"parameter {p.name!r} = {params[p.name]!r} is out of the range TA-Lib accepts "
                                 f"for {self.name}", field=p.name)
        raise BadRequest(f"TA-Lib refuses this combination of parameters for {self.name}: {dict(params)}",
                         field="params")

    def lookback(self, params: Mapping[str, int | float]) -> int:
        return _lookback(self.name, tuple(params.items()))

    def batch(self, data: Mapping[str, np.ndarray], params: Mapping[str, int | float]) -> tuple[np.ndarray, ...]:
        columns = [data[c] for c in self.inputs]
        out = self.function(*columns, **params)
        outputs = tuple(out) if isinstance(out, (list, tuple)) else (out,)
        if all(o.dtype.kind == "f" for o in outputs):
            return outputs
        # Integer outputs (trend modes, flags) come back with 0 where there is no value yet; make that NaN
        # like every other output, so "NaN before the lookback" holds for all of them.
        valid = ~np.isnan(np.vstack(columns)).any(axis=0)
        start = (int(valid.argmax()) if valid.any() else len(valid)) + self.lookback(params)
        fixed = []
        for o in outputs:
            if o.dtype.kind != "f":
                o = o.astype(np.float64)
                o[:start] = np.nan
            fixed.append(o)
        return tuple(fixed)


    def stream(self, params: Mapping[str, int | float]) -> IndicatorStream:
        return TalibStream(self, params)


class TalibStream(IndicatorStream):
    """TA-Lib's own stateful stream handle: O(1) per bar once open.

    TA-Lib opens a handle from history, so the first ``lookback + 1`` bars are buffered (outputs NaN);
    then the handle is opened on them and every further bar is one ``update``. Because TA-Lib's
    indicators are causal, the values equal `batch` on the same series. A bar with a NaN input is a gap:
    its outputs are NaN and the state skips it (batch would carry the NaN forward instead).
    """

    def __init__(self, indicator: TalibIndicator, params: Mapping[str, int | float]) -> None:
        self.indicator = indicator
        self.params = dict(params)
        self._open = getattr(streams, indicator.name)
        self._need = indicator.lookback(params) + 1
        self._history: list[tuple[float, ...]] = []
        self._handle: Any = None
        #: TA-Lib's own per-bar update of the open handle (None until it is open): the input values
        #: positionally, in `indicator.inputs` order, all numbers (never NaN); a float, or a tuple of the
        #: outputs. What a caller that updates many streams per bar calls directly, without `update`'s
        #: reading of the bar (`market.Series` does, for a series whose every stream is open).
        self.step: Callable[..., Any] | None = None
        self._nan = (float("nan"),) * len(indicator.outputs)
        getter = operator.itemgetter(*indicator.inputs)
        self._values: Callable[[Mapping[str, float]], tuple[float, ...]] = (
            getter if len(indicator.inputs) > 1 else lambda bar: (getter(bar),))

    def _opened(self, rows: list[tuple[float, ...]]) -> Any:
        columns = np.array(rows, dtype=np.float64).T
        return self._open(*columns, **self.params)

    def update(self, bar: Mapping[str, float]) -> tuple[float, ...]:
        values = self._values(bar)
        total = sum(values)
        if total != total:  # a NaN input: TA-Lib's update refuses it, and a leading one is not history
            return self._nan  # the bar is a gap: no value at it, the state skips it
        if self._handle is not None:
            return _floats(self._handle.update(*values))
        self._history.append(values)
        if len(self._history) < self._need:
            return self._nan
        try:
            self._handle = self._opened(self._history)
        except InsufficientHistory:  # NaN inside the history: keep buffering, as batch would
            return self._nan
        self._history = []
        self._install_fast_update()
        return _floats(self._handle.value)

    def warm(self, columns: Mapping[str, np.ndarray]) -> tuple[float, ...]:
        """A fresh stream opens its TA-Lib handle on the whole history in one call (the bars with a NaN
        input skipped, as `update` skips them); otherwise, or if TA-Lib wants more history, bar by bar."""
        if self._handle is not None or self._history:
            return super().warm(columns)
        data = np.vstack([np.asarray(columns[c], dtype=np.float64) for c in self.indicator.inputs])
        if data.shape[1] == 0:
            return ()
        valid = ~np.isnan(data).any(axis=0)
        rows = data[:, valid]
        if rows.shape[1] < self._need:
            self._history = [tuple(row) for row in rows.T.tolist()]
            return self._nan
        try:
            self._handle = self._open(*np.ascontiguousarray(rows), **self.params)
        except InsufficientHistory:
            return super().warm(columns)
        self._install_fast_update()
        return _floats(self._handle.value) if valid[-1] else self._nan

    def _install_fast_update(self) -> None:
        """Once the handle is open, `update` becomes a closure holding all it needs in locals: the per-bar
        cost is then mostly TA-Lib's own."""
        step = self.step = self._handle.update
        nan = self._nan
        single_output = len(self.indicator.outputs) == 1
        if len(self.indicator.inputs) == 1:
            (key,) = self.indicator.inputs

            def update(bar: Mapping[str, float]) -> tuple[float, ...]:
                value = bar[key]
                if value != value:
                    return nan
                out = step(value)
                return (out,) if single_output else out
        else:
            get = operator.itemgetter(*self.indicator.inputs)

            def update(bar: Mapping[str, float]) -> tuple[float, ...]:
                values = get(bar)
                total = sum(values)
                if total != total:
                    return nan
                out = step(*values)
                return (out,) if single_output else out

        self.update = update  # type: ignore[method-assign]

    def peek(self, bar: Mapping[str, float]) -> tuple[float, ...]:
        values = self._values(bar)
        total = sum(values)
        if total != total:
            return self._nan
        if self._handle is not None:
            return _floats(self._handle.peek(*values))
        if len(self._history) + 1 < self._need:
            return self._nan
        return _floats(self._opened([*self._history, values]).value)


def _floats(value: Any) -> tuple[float, ...]:
    """TA-Lib's stream result as a tuple: one number, or a tuple of them (ints where TA-Lib gives ints)."""
    return value if type(value) is tuple else (value,)


@functools.lru_cache(maxsize=4096)
def _lookback(name: str, params: tuple[tuple[str, int | float], ...]) -> int:
    function = abstract.Function(name)
    function.parameters = dict(params)
    return int(function.lookback)
