"""Bars sent as columns: the op declarations (`ml_processing.sdk.columns`) read them once for every
capability, with one answer per edge case, naming what they reject."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import pytest

from ml_processing.core.errors import BadRequest, TooLarge
from ml_processing.core.ops import convert
from ml_processing.sdk.columns import Bars, Columns


class Small(Bars):
    max_values: ClassVar[int] = 10


def test_lists_and_arrays_become_float64_columns_with_nulls_as_nan() -> None:
    read = convert({"close": [1, None, 3.5], "high": np.array([2, 3, 4], dtype=np.int32)}, Bars)
    assert read.length == 3 and read.close.dtype == np.float64 and read.high is not None
    assert read.close[0] == 1.0 and math.isnan(read.close[1]) and read.high.tolist() == [2.0, 3.0, 4.0]
    assert read.high.flags.c_contiguous


@pytest.mark.parametrize(("args", "field", "words"), [
    ({"close": [1.0, 2.0, "x"]}, "close[2]", "expected a number"),
    ({"close": [1.0, True]}, "close[1]", "expected a number"),
    ({"close": [1.0, [2.0, 3.0]]}, "close[1]", "expected a number"),
    ({"close": [1.0, math.inf]}, "close[1]", "finite"),
    ({"close": []}, "close", "at least one value"),
    ({"close": "1,2,3"}, "close", "list of numbers"),
    ({"close": np.array(["a", "b"])}, "close", "1-D numeric"),
    ({"close": np.zeros((2, 2))}, "close", "1-D numeric"),
    ({"close": [1.0, 2.0], "high": [1.0]}, "close", "high has 1"),
    ({"close": [1.0, 2.0], "volume": [1.0, -2.0]}, "volume[1]", "never negative"),
    ({"high": [1.0]}, "close", "required"),
    ({"close": [1.0], "closing": [1.0]}, "closing", "unknown field"),
])
def test_a_bad_column_is_named(args: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(BadRequest) as caught:
        convert(args, Bars)
    assert caught.value.field == field and words in caught.value.message


def test_columns_an_op_needs_are_required_by_name() -> None:
    read = convert({"close": [1.0, 2.0]}, Columns)
    assert read.columns() == {"close": read.close}
    with pytest.raises(BadRequest) as caught:
        read.require(("close", "volume"))
    assert caught.value.field == "volume" and "reads close, volume" in caught.value.message


@pytest.mark.parametrize("column", [[1.0] * 11, np.ones(11)])
def test_a_column_past_the_limit_is_too_large(column: Any) -> None:
    assert convert({"close": [1.0] * 10}, Small).length == 10
    with pytest.raises(TooLarge) as caught:
        convert({"close": column}, Small)
    assert caught.value.field == "close" and "at most 10" in caught.value.message


def test_every_list_of_numbers_reads_alike() -> None:
    """Python floats and ints, nulls, and subclasses of float (numpy float64 scalars) give one array."""
    expected = [1.0, 2.0, math.nan, 4.5]
    for column in ([1.0, 2, None, 4.5], [np.float64(1.0), np.float64(2), None, 4.5], [1, 2, None, 4.5]):
        read = convert({"close": column}, Bars).close
        assert read.dtype == np.float64 and np.array_equal(read, expected, equal_nan=True), column
    big = 2**63 + 2**11  # past int64: still the nearest double, as float() gives
    assert convert({"close": [big, 1]}, Bars).close.tolist() == [float(big), 1.0]


def test_a_column_is_declared_as_an_array_of_doubles() -> None:
    """The REST edge reads fields declared so straight into float64 arrays (``items.format: double``)."""
    from ml_processing.sdk.columns import _SCHEMA

    assert _SCHEMA["type"] == "array" and _SCHEMA["items"]["format"] == "double"
