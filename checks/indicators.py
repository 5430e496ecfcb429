"""The indicator contract (`ml_processing.sdk.indicator`), checked on one indicator.

* streaming equals batch: a series fed bar by bar through ``stream(params).update`` gives the values
  ``batch`` gives on the whole series (NaN in the same places, 1e-9 relative), and a forming bar previewed
  with ``peek`` first changes nothing about what the commit gives;
* the declaration holds: ``batch`` returns one array per output, NaN before ``lookback`` and a value at it
  (unless the series lies outside the function's domain, as prices do for ACOS);
* a bad parameter is refused with `BadRequest` naming it (an unknown name, a string, a list, a non-integer
  for an integer, NaN for a float);
* gaps (NaN), flat bars and zero volume never crash it, in batch or streaming.

Each check raises `AssertionError` with what differed. `check_indicator` runs them all:

>>> from ml_processing.sdk import Indicator, Param
>>> class Mid(Indicator):
...     name = "MID"; inputs = ("high", "low")
...     def lookback(self, params): return 0
...     def batch(self, data, params): return ((data["high"] + data["low"]) / 2,)
>>> check_indicator(Mid())
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ml_processing.core.errors import BadRequest
from ml_processing.sdk.indicator import Indicator

from .data import close_enough, columns, rough, row, series, survived

__all__ = ["check_bad_parameters", "check_declaration", "check_indicator", "check_odd_bars",
           "check_stream_equals_batch"]

#: Bars fed to an indicator with an O(1) stream, and to one on the recompute fallback (O(n) per bar).
BARS = 400
BARS_RECOMPUTED = 160


def check_indicator(indicator: Indicator) -> None:
    """Every check of this module, in order."""
    check_declaration(indicator)
    check_stream_equals_batch(indicator)
    check_bad_parameters(indicator)
    check_odd_bars(indicator)


def _bars(indicator: Indicator) -> int:
    return BARS_RECOMPUTED if type(indicator).stream is Indicator.stream else BARS


def _batch(indicator: Indicator, data: dict[str, np.ndarray], params: dict[str, Any]) -> tuple[np.ndarray, ...]:
    inputs = dict(zip(indicator.inputs, columns(data, indicator.inputs, indicator.name), strict=True))
    out = tuple(indicator.batch(inputs, params))
    n = len(data["close"])
    assert len(out) == len(indicator.outputs), (
        f"{indicator.name}: batch returned {len(out)} arrays for {len(indicator.outputs)} outputs {indicator.outputs}")
    for name, values in zip(indicator.outputs, out, strict=True):
        assert np.shape(values) == (n,), f"{indicator.name}: output {name!r} has shape {np.shape(values)}, not ({n},)"
    return out


def check_declaration(indicator: Indicator) -> None:
    """Name, inputs and outputs declared; the defaults resolve; ``batch`` on a clean series is NaN before
    ``lookback`` and has a value at it."""
    assert isinstance(indicator.name, str) and indicator.name, f"{indicator!r}: no name"
    assert indicator.inputs and indicator.outputs, f"{indicator.name}: declares no inputs or no outputs"
    params = indicator.resolve({})
    lookback = indicator.lookback(params)
    assert isinstance(lookback, int) and lookback >= 0, f"{indicator.name}: lookback {lookback!r} is not an int >= 0"
    n = _bars(indicator)
    out = _batch(indicator, series(n), params)
    if lookback >= n:
        return
    early = [name for name, values in zip(indicator.outputs, out, strict=True) if not np.isnan(values[:lookback]).all()]
    assert not early, f"{indicator.name}: {early} have values before the declared lookback {lookback}"
    if all(np.isnan(values).all() for values in out):
        return  # a function outside its domain on prices (ACOS, ASIN): NaN throughout, nothing to place
    assert any(not math.isnan(float(values[lookback])) for values in out), (
        f"{indicator.name}: no output has a value at the declared lookback {lookback}")


def check_stream_equals_batch(indicator: Indicator) -> None:
    """Bar by bar through ``update`` (every seventh bar previewed with ``peek`` first) equals ``batch``."""
    params = indicator.resolve({})
    n = _bars(indicator)
    data = series(n)
    batch = _batch(indicator, data, params)
    stream = indicator.stream(params)
    mismatches: list[tuple[Any, ...]] = []
    for i in range(n):
        bar = row(data, indicator.inputs, i)
        peeked = stream.peek(bar) if i % 7 == 3 else None  # a forming bar previewed first
        got = tuple(stream.update(bar))
        if peeked is not None and not all(close_enough(a, b) for a, b in zip(peeked, got, strict=True)):
            mismatches.append((i, "peek then update", tuple(peeked), got))
        expected = tuple(float(values[i]) for values in batch)
        if len(got) != len(expected) or not all(close_enough(a, b) for a, b in zip(got, expected, strict=True)):
            mismatches.append((i, "update vs batch", got, expected))
    assert not mismatches, (f"{indicator.name}: streaming differs from batch at {len(mismatches)} of {n} bars, "
                            f"first (bar, what, got, expected): {mismatches[:3]}")


def check_bad_parameters(indicator: Indicator) -> None:
    """An unknown parameter, and each parameter given a wrong value, raise `BadRequest` naming it."""
    try:
        indicator.resolve({"no_such_parameter": 1})
    except BadRequest as exc:
        assert exc.field == "no_such_parameter" and indicator.name in exc.message, (
            f"{indicator.name}: an unknown parameter is refused as {exc.field!r}: {exc.message!r}")
    else:
        raise AssertionError(f"{indicator.name}: an unknown parameter 'no_such_parameter' was accepted")
    for param in indicator.params:
        for bad in ("7", [1], math.nan if param.type is float else 2.5):
            try:
                indicator.resolve({param.name: bad})
            except BadRequest as exc:
                assert exc.field == param.name and param.name in exc.message, (
                    f"{indicator.name}: {param.name}={bad!r} is refused as {exc.field!r}: {exc.message!r}")
            else:
                raise AssertionError(f"{indicator.name}: parameter {param.name}={bad!r} was accepted")


def check_odd_bars(indicator: Indicator) -> None:
    """Gaps, flat bars and zero volume: ``batch`` and every ``update`` answer with one value per output."""
    params = indicator.resolve({})
    n = 150
    data = rough(n)
    with survived(f"{indicator.name}: batch over gaps, flat bars and zero volume"):
        _batch(indicator, data, params)
    stream = indicator.stream(params)
    for i in range(n):
        with survived(f"{indicator.name}: update at bar {i} of gaps, flat bars and zero volume"):
            out = stream.update(row(data, indicator.inputs, i))
        assert len(out) == len(indicator.outputs), (
            f"{indicator.name}: update at bar {i} gave {len(out)} values for outputs {indicator.outputs}")
