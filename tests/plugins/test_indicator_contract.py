"""The contract every registered indicator meets, built-in or third-party: streaming equals batch.

Parametrized over the registry a kernel builds, so an indicator from any plugin runs through it too.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from ml_processing.core.errors import BadRequest
from ml_processing.plugins.indicators import builtin_indicators
from ml_processing.sdk.indicator import Indicator, Param
from tests.plugins.test_indicators_batch import ohlcv


class Range(Indicator):
    """A third-party-style indicator with no stream of its own: it gets the exact recompute fallback."""

    name = "RANGE_MEAN"
    inputs = ("high", "low")
    params = (Param("window", int, 5, minimum=1),)

    def lookback(self, params):  # type: ignore[no-untyped-def]
        return params["window"] - 1

    def batch(self, data, params):  # type: ignore[no-untyped-def]
        raw = data["high"] - data["low"]
        w = params["window"]
        out = np.full(len(raw), np.nan)
        if len(raw) >= w:
            out[w - 1:] = np.convolve(raw, np.ones(w) / w, mode="valid")
        return (out,)


REGISTRY = {i.name: i for i in [*builtin_indicators(), Range()]}


def _close(a: float, b: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return a == b or abs(a - b) <= 1e-9 * max(abs(a), abs(b), 1e-300) or abs(a - b) < 1e-12


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_streaming_equals_batch(name: str) -> None:
    indicator = REGISTRY[name]
    params = indicator.resolve({})
    n = 160 if name == "RANGE_MEAN" else 400
    data = ohlcv(n)
    batch = indicator.batch(data, params)
    stream = indicator.stream(params)
    mismatches = []
    for i in range(n):
        bar = {c: float(data[c][i]) for c in indicator.inputs}
        if i % 7 == 3:  # a forming bar previewed first must not change what the commit gives
            peeked = stream.peek(bar)
        else:
            peeked = None
        got = stream.update(bar)
        if peeked is not None and not all(_close(a, b) for a, b in zip(peeked, got, strict=True)):
            mismatches.append((i, "peek", peeked, got))
        expected = tuple(float(series[i]) for series in batch)
        if not all(_close(a, b) for a, b in zip(got, expected, strict=True)):
            mismatches.append((i, "update", got, expected))
    assert not mismatches, f"{name}: {len(mismatches)} bars differ, first {mismatches[:3]}"


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_streaming_survives_gaps_flat_bars_and_zero_volume(name: str) -> None:
    indicator = REGISTRY[name]
    stream = indicator.stream(indicator.resolve({}))
    data = ohlcv(150)
    data["close"][40:45] = np.nan
    for column in ("open", "high", "low", "close"):
        data[column][80:110] = 50.0
    data["volume"][:] = 0.0
    for i in range(150):
        out = stream.update({c: float(data[c][i]) for c in indicator.inputs})
        assert len(out) == len(indicator.outputs)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_bad_parameters_are_rejected_with_the_parameter_named(name: str) -> None:
    indicator = REGISTRY[name]
    with pytest.raises(BadRequest) as unknown:
        indicator.resolve({"no_such_parameter": 1})
    assert unknown.value.field == "no_such_parameter" and name in unknown.value.message
    for param in indicator.params:
        for bad in ("7", [1], float("nan") if param.type is float else 2.5):
            with pytest.raises(BadRequest) as caught:
                indicator.resolve({param.name: bad})
            assert caught.value.field == param.name and param.name in caught.value.message
