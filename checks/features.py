"""The feature-extractor contract (`ml_processing.sdk.feature`), checked on one extractor.

* streaming equals batch: rows fed one by one through ``stream(params, registries).update`` give the
  values ``batch`` gives on the whole columns (NaN in the same places, 1e-9 relative), on its default
  columns and on columns that start with NaN (an earlier step warming up);
* values start at the declared ``lookback``, counted from the first row whose inputs are all numbers;
* a bad parameter is refused with `BadRequest` naming it (an unknown name, a value below its minimum);
* gaps (NaN), flat bars and zero volume never crash it and never give an infinite value.

`registries` is what a kernel registered (`ml_processing.checks.registries`): extractors may build on
registered indicators. Each check raises `AssertionError` with what differed.

>>> from ml_processing.sdk import FeatureExtractor, MapStream
>>> class Double(FeatureExtractor):
...     name = "double"
...     def lookback(self, params): return 0
...     def batch(self, inputs, params, registries): return (inputs[0] * 2,)
...     def stream(self, params, registries): return MapStream(lambda x: (x * 2,))
>>> check_feature_extractor(Double(), {})
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ml_processing.core.errors import BadRequest
from ml_processing.sdk.feature import FeatureExtractor

from .data import columns, series, survived

__all__ = ["check_bad_parameters", "check_feature_extractor", "check_odd_rows", "check_stream_equals_batch"]

Registries = Mapping[str, Mapping[str, Any]]

ROWS = 800
WARMING_UP = 15  # leading NaN rows of the columns that stand for an earlier step still warming up


def check_feature_extractor(extractor: FeatureExtractor, registries: Registries) -> None:
    """Every check of this module, in order."""
    check_stream_equals_batch(extractor, registries)
    check_bad_parameters(extractor)
    check_odd_rows(extractor, registries)


def _run(extractor: FeatureExtractor, inputs: Sequence[np.ndarray], registries: Registries
         ) -> tuple[np.ndarray, np.ndarray]:
    """(batch, streamed): rows x outputs, each."""
    params = extractor.resolve({})
    n = len(inputs[0])
    batch = tuple(extractor.batch(list(inputs), params, registries))
    assert len(batch) == len(extractor.outputs), (
        f"{extractor.name}: batch returned {len(batch)} arrays for outputs {extractor.outputs}")
    for name, values in zip(extractor.outputs, batch, strict=True):
        assert np.shape(values) == (n,), f"{extractor.name}: output {name!r} has shape {np.shape(values)}, not ({n},)"
    stream = extractor.stream(params, registries)
    streamed = []
    for i in range(n):
        out = tuple(stream.update(*(float(column[i]) for column in inputs)))
        assert len(out) == len(extractor.outputs), (
            f"{extractor.name}: update at row {i} gave {len(out)} values for outputs {extractor.outputs}")
        streamed.append(out)
    return np.column_stack(batch).astype(np.float64), np.array(streamed, dtype=np.float64).reshape(n, -1)


def _same(extractor: FeatureExtractor, batch: np.ndarray, streamed: np.ndarray, what: str) -> None:
    nan_b, nan_s = np.isnan(batch), np.isnan(streamed)
    differ = np.argwhere(nan_b != nan_s)
    if len(differ):
        i, j = differ[0]
        raise AssertionError(f"{extractor.name} ({what}): NaN differs first at row {i}, output "
                             f"{extractor.outputs[j]!r}: batch {batch[i, j]!r}, streamed {streamed[i, j]!r}")
    close = np.isclose(streamed, batch, rtol=1e-9, atol=1e-12) | nan_b
    if not close.all():
        i, j = np.argwhere(~close)[0]
        raise AssertionError(f"{extractor.name} ({what}): streamed differs from batch at {int((~close).sum())} "
                             f"values, first at row {i}, output {extractor.outputs[j]!r}: batch {batch[i, j]!r}, "
                             f"streamed {streamed[i, j]!r}")


def check_stream_equals_batch(extractor: FeatureExtractor, registries: Registries) -> None:
    """Streamed rows equal batch rows, on the default columns and on columns that start with NaN; values
    from the declared lookback on."""
    data = series(ROWS)
    lookback = extractor.lookback(extractor.resolve({}))
    inputs = columns(data, extractor.inputs, extractor.name)
    cases = [("default columns", inputs, 0)]
    if tuple(extractor.inputs) != ("ts",):
        warming = [np.concatenate([np.full(WARMING_UP, np.nan), column[WARMING_UP:]]) for column in inputs]
        cases.append((f"columns starting with {WARMING_UP} NaN", warming, WARMING_UP))
    for what, columns_, first in cases:
        batch, streamed = _run(extractor, columns_, registries)
        _same(extractor, batch, streamed, what)
        late = np.argwhere(np.isnan(batch[first + lookback:]))
        assert not len(late), (f"{extractor.name} ({what}): NaN at row {first + lookback + late[0][0]}, after the "
                               f"declared lookback {lookback} from row {first}")


def check_bad_parameters(extractor: FeatureExtractor) -> None:
    """An unknown parameter, and each parameter below its minimum, raise `BadRequest` naming it."""
    bad: list[tuple[str, Any]] = [("nope", 1)]
    bad += [(p.name, p.minimum - 1) for p in extractor.params if p.minimum is not None]
    for name, value in bad:
        try:
            extractor.resolve({name: value})
        except BadRequest as exc:
            assert exc.field == name, f"{extractor.name}: {name}={value!r} is refused as {exc.field!r}: {exc.message!r}"
        else:
            raise AssertionError(f"{extractor.name}: parameter {name}={value!r} was accepted")


def check_odd_rows(extractor: FeatureExtractor, registries: Registries) -> None:
    """Gaps, flat bars and zero volume: batch and stream agree in shape and give no infinite value."""
    data = series(200)
    for name in ("close", "volume", "high"):
        data[name][[5, 50, 51]] = np.nan  # gaps
    for name in ("open", "high", "low", "close"):
        data[name][60:80] = 100.0  # flat bars
    data["volume"][90:100] = 0.0
    with survived(f"{extractor.name} on gaps, flat bars and zero volume"):
        batch, streamed = _run(extractor, columns(data, extractor.inputs, extractor.name), registries)
    for what, values in (("batch", batch), ("streamed", streamed)):
        infinite = np.argwhere(np.isinf(values))
        assert not len(infinite), (f"{extractor.name}: {what} value at row {infinite[0][0]} is infinite on a series "
                                   "with gaps, flat bars and zero volume")
