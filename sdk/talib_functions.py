"""TA-Lib functions as indicators: batch through TA-Lib, streaming through TA-Lib's stream handles.

The adapter every plugin that computes with TA-Lib shares (indicators, candlestick patterns). Nothing here
is a hand-kept list: names, inputs, parameters, defaults and outputs come from TA-Lib's function tables
(its abstract interface), and TA-Lib computes. A parameter set TA-Lib itself refuses (its lookback function
returns -1) is rejected with the name of the offending parameter.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import talib as _talib
from talib import _ta_lib as _internals
from talib import abstract as _abstract
from talib import stream as _stream

from ml_processing.core.errors import BadRequest

from .indicator import Indicator, IndicatorStream, Param

# TA-Lib's typing does not describe its abstract interface and C internals: use them untyped.
talib: Any = _talib
abstract: Any = _abstract
streams: Any = _stream
internals: Any = _internals
InsufficientHistory: type[Exception] = internals.InsufficientHistory  # raised by the stream API

_PRICE_KEYS = {"price", "price0", "price1", "prices", "periods"}
_MA_TYPE_MAX = 8  # TA_MAType: SMA, EMA, WMA, DEMA, TEMA, TRIMA, KAMA, MAMA, T3


def _inputs(info: Mapping[str, Any]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(OHLCV columns read, in the function's argument order; their argument names)."""
    columns: list[str] = []
    for value in info["input_names"].values():
        columns.extend([value] if isinstance(value, str) else value)
    return tuple(columns), tuple(columns)


def _param(name: str, default: Any, help_text: str) -> Param:
    if name == "matype" or name.endswith("_matype") or name.endswith("matype"):
        return Param(name, int, default, minimum=0, maximum=_MA_TYPE_MAX, doc=help_text + " (0=SMA ... 8=T3)")
    if isinstance(default, int) and not isinstance(default, bool):
        return Param(name, int, default, doc=help_text)
    return Param(name, float, float(default), doc=help_text)


class TalibIndicator(Indicator):
    """One TA-Lib function; instances carry what the class attributes of a hand-written indicator would."""

    def __init__(self, name: str) -> None:
        info = abstract.Function(name).info
        self.name = name  # type: ignore[misc]
        self.group = info["group"]  # type: ignore[misc]
        self.doc = info["display_name"]  # type: ignore[misc]
        self.inputs, _ = _inputs(info)  # type: ignore[misc]
        opt = {}
        for i in range(len(info["parameters"])):
            meta = internals._ta_getOptInputParameterInfo(name.encode(), i)
            opt[meta["name"]] = meta.get("help", "")
        self.params = tuple(_param(p, d, opt.get(p, "")) for p, d in info["parameters"].items())  # type: ignore[misc]
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

    def _install_fast_update(self) -> None:
        """Once the handle is open, `update` becomes a closure holding all it needs in locals: the per-bar
        cost is then mostly TA-Lib's own."""
        step, nan = self._handle.update, self._nan
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
