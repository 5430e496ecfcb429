"""Bars sent as columns: `read_columns` reads them once for every capability and names what it rejects."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from ml_processing.core.errors import BadRequest, TooLarge
from ml_processing.sdk.bars import read_columns


def test_lists_and_arrays_become_float64_columns_with_nulls_as_nan() -> None:
    data, n = read_columns({"close": [1, None, 3.5], "high": np.array([2, 3, 4], dtype=np.int32)}, ["close", "high"])
    assert n == 3 and data["close"].dtype == np.float64 and data["high"].dtype == np.float64
    assert data["close"][0] == 1.0 and math.isnan(data["close"][1]) and data["high"].tolist() == [2.0, 3.0, 4.0]
    assert data["high"].flags.c_contiguous


@pytest.mark.parametrize(("args", "field", "words"), [
    ({"close": [1.0, 2.0, "x"]}, "close[2]", "element 2"),
    ({"close": [1.0, [2.0, 3.0]]}, "close[1]", "element 1"),
    ({"close": [[1.0], [2.0]]}, "close", "flat list"),
    ({"close": "1,2,3"}, "close", "list of numbers"),
    ({"close": np.array(["a", "b"])}, "close", "1-D numeric"),
    ({"close": np.zeros((2, 2))}, "close", "1-D numeric"),
    ({"close": [1.0, 2.0], "high": [1.0]}, "high", "'close' has 2"),
    ({"high": [1.0]}, "close", "reads close, high"),
])
def test_a_bad_column_is_named(args: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(BadRequest) as caught:
        read_columns(args, ["close", "high"])
    assert caught.value.field == field and words in caught.value.message


def test_optional_columns_may_be_absent_and_fields_carry_the_prefix() -> None:
    data, n = read_columns({"close": [1.0, 2.0]}, ["close", "open"], optional=["open"], prefix="bars.")
    assert n == 2 and list(data) == ["close"]
    with pytest.raises(BadRequest) as caught:
        read_columns({"close": [1.0, 2.0], "open": [1.0, True, "y"]}, ["close", "open"], optional=["open"],
                     prefix="bars.")
    assert caught.value.field == "bars.open[1]"


@pytest.mark.parametrize("column", [[1.0] * 11, np.ones(11)])
def test_a_column_past_the_limit_is_too_large(column: Any) -> None:
    assert read_columns({"close": [1.0] * 10}, ["close"], 10)[1] == 10
    with pytest.raises(TooLarge) as caught:
        read_columns({"close": column}, ["close"], 10)
    assert caught.value.field == "close" and "at most 10" in caught.value.message
