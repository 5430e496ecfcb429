"""JSON bodies at the REST edge: columns read straight to float64 arrays, the same numbers as the general
reader gives, the same answers for every edge case, and replies that come back as they went out."""

from __future__ import annotations

import json
import math
from typing import Any

import aiohttp
import numpy as np
import orjson
import pytest
import talib

from ml_processing.bus import codec
from ml_processing.bus.edge.app import LARGE_REPLY, json_columns
from ml_processing.bus.errors import CodecError
from ml_processing.core.kernel import Kernel

COLUMNS = frozenset({"open", "high", "low", "close", "volume"})
PAD = 20_000  # values per column: bodies well above codec.COLUMNAR_JSON


def tricky_floats(n: int, seed: int = 5) -> np.ndarray:
    """Doubles across the whole range: every exponent, subnormals, integers near 2**53, signed zero."""
    rng = np.random.default_rng(seed)
    bits = rng.integers(0, 2**63 - 2**52, n, dtype=np.int64)  # every finite positive double is below
    values = bits.view(np.float64) * rng.choice([-1.0, 1.0], n)
    special = [0.0, -0.0, 5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, 0.1, 1e22, 1e23,
               2.0**53, 2.0**53 + 2, 9007199254740993.0, 123456789012345680.0]
    values[: len(special)] = special
    return values


def general(raw: bytes) -> Any:
    """What the general reader (orjson alone) makes of `raw`."""
    return orjson.loads(raw)


def as_plain(value: Any) -> Any:
    """`value` with ndarrays as lists, to compare with the general reader's result."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, dict):
        return {k: as_plain(v) for k, v in value.items()}
    return value


def same_bits(array: np.ndarray, values: list[float]) -> bool:
    expected = np.array(values, dtype=np.float64)
    return array.dtype == np.float64 and array.shape == expected.shape and bool(
        np.array_equal(array.view(np.int64), expected.view(np.int64)))


# -- the reader -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("dumps", [lambda o: json.dumps(o).encode(), orjson.dumps,
                                   lambda o: json.dumps(o, indent=2).encode()],
                         ids=["stdlib", "orjson", "indented"])
def test_columns_are_read_to_the_same_doubles_bit_for_bit(dumps: Any) -> None:
    values = tricky_floats(PAD)
    ints = (np.arange(-PAD // 2, PAD // 2) * 1_234_567_891).tolist()  # integers in a column
    ints[:7] = [2**53 + 1, 2**53 + 3, 2**62 + 1, 2**63 - 1, -(2**63), 2**63 + 2**11 + 1, 2**64 - 1]  # rounded
    raw = dumps({"close": values.tolist(), "volume": ints, "indicators": ["SMA", {"name": "RSI"}]})
    read = codec.decode_json(raw, COLUMNS)
    plain = general(raw)
    assert isinstance(read["close"], np.ndarray) and isinstance(read["volume"], np.ndarray)
    assert same_bits(read["close"], plain["close"]) and same_bits(read["volume"], plain["volume"])
    assert read["indicators"] == plain["indicators"] and list(read) == list(plain)


def test_exponent_spellings_read_alike() -> None:
    text = ", ".join(["1E5", "1e+5", "1.0e-5", "-0", "0.5E-3", "12345678901234567890", "-9223372036854775808"] * 4000)
    raw = f'{{"close": [{text}]}}'.encode()
    read, plain = codec.decode_json(raw, COLUMNS), general(raw)
    assert same_bits(read["close"], [float(v) for v in plain["close"]])


@pytest.mark.parametrize(("column", "why"), [
    ([1.0, None, 3.0], "a gap"),
    ([1.0, True, 3.0], "a boolean"),
    ([1.0, "2", 3.0], "a string"),
    ([1.0, [2.0], 3.0], "a nested array"),
    ([[1.0], [2.0], [3.0]], "arrays of one number"),
    ([1.0, {"a": 1}], "an object"),
    ([], "an empty array"),
])
def test_a_column_that_is_not_all_numbers_reads_as_the_general_reader_reads_it(column: list[Any], why: str) -> None:
    raw = orjson.dumps({"close": column, "high": [1.5] * PAD})
    read = codec.decode_json(raw, COLUMNS)
    assert as_plain(read) == general(raw), why
    if column:
        assert isinstance(read["close"], list), why  # the op's own reader names the bad element


@pytest.mark.parametrize(("raw", "why"), [
    (b'{"close": [' + b"1.5," * PAD + b'2], "close": [7]}', "a repeated key: the last one counts"),
    (b'{"note": "[[", "close": [' + b"1.5," * PAD + b"2]}", "brackets inside a string"),
    (b'{"close": [' + b"1.5," * PAD + b'2], "n": 99999999999999999999999}', "an integer past 64 bits"),
    (b'[{"close": [' + b"1.5," * PAD + b"2]}]", "an array at the top"),
])
def test_bodies_the_columnar_reader_leaves_to_the_general_one(raw: bytes, why: str) -> None:
    assert as_plain(codec.decode_json(raw, COLUMNS)) == general(raw), why


@pytest.mark.parametrize("raw", [
    b'\xef\xbb\xbf{"close": [' + b"1.5," * PAD + b"2]}",  # a byte order mark
    b'{"close": [' + b"1.5," * PAD + b"2,]}",  # a trailing comma
    b'{"close": [' + b"1.5," * PAD + b"1e999]}",  # a number past the doubles
    b'{"close": [' + b"1.5," * PAD + b'2], "s": "\\ud800"}',  # a lone surrogate
    b'{"close": [' + b"1.5," * PAD + b'2], "s": "\xff"}',  # not UTF-8
])
def test_text_that_is_not_json_is_refused_with_the_general_readers_words(raw: bytes) -> None:
    with pytest.raises(orjson.JSONDecodeError) as expected:
        general(raw)
    with pytest.raises(CodecError) as caught:
        codec.decode_json(raw, COLUMNS)
    assert caught.value.message == str(expected.value)


def test_small_bodies_and_a_missing_columnar_reader_give_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    small = orjson.dumps({"close": [1.0, 2.0]})
    assert codec.decode_json(small, COLUMNS) == {"close": [1.0, 2.0]}
    large = orjson.dumps({"close": [1.5] * PAD})
    assert isinstance(codec.decode_json(large, COLUMNS)["close"], np.ndarray)
    assert isinstance(codec.decode_json(large, ())["close"], list)  # a field the route does not declare
    monkeypatch.setattr(codec, "simdjson", None)
    assert codec.decode_json(large, COLUMNS) == general(large)


def test_encode_json_writes_nan_as_null_and_any_array_layout() -> None:
    values = np.array([[np.nan, 1.5], [np.inf, 0.1]])
    assert codec.encode_json({"v": values[:, 1], "w": values[:, 0], "x": np.float64(2.5)}) == (
        b'{"v":[1.5,0.1],"w":[null,null],"x":2.5}')


# -- the edge -------------------------------------------------------------------------------------------


def test_columns_are_the_fields_declared_as_arrays_of_doubles() -> None:
    column = {"type": "array", "items": {"type": ["number", "null"], "format": "double"}}
    schema = {"properties": {"close": column, "high": {"anyOf": [column, {"type": "null"}]},
                             "weights": {"type": "array", "items": {"type": "number"}},
                             "name": {"type": "string"}}}
    assert json_columns(schema) == {"close", "high"}
    assert json_columns(None) == frozenset()


async def test_the_indicators_route_reads_its_columns_as_arrays(kernel: Kernel) -> None:
    route = next(r for r in kernel.routes if r.path == "/api/v1/indicators" and r.method == "POST")
    assert json_columns(route.request_schema) == {"ts", "open", "high", "low", "close", "volume", "periods"}


def ohlcv(n: int, seed: int = 11) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    high, low = close * (1 + rng.uniform(0, 0.01, n)), close * (1 - rng.uniform(0, 0.01, n))
    return {"high": high, "low": low, "close": close, "volume": rng.uniform(1e3, 1e5, n)}


INDICATORS = ["SMA", "RSI", {"name": "BBANDS", "params": {"timeperiod": 20}}, "ATR", "OBV"]


async def _post(kernel: Kernel, body: bytes, content_type: str) -> tuple[int, str, bytes]:
    async with aiohttp.ClientSession() as http, http.post(
            f"{kernel.edge_url}/api/v1/indicators", data=body,
            headers={"Content-Type": content_type, "Accept": content_type}) as resp:
        return resp.status, resp.content_type, await resp.read()


async def test_json_and_msgpack_bring_back_the_same_numbers(kernel: Kernel) -> None:
    """10,000 bars as JSON text (standard library) and as msgpack arrays: the same doubles in every reply,
    the lookback as null in JSON and NaN in msgpack, equal to TA-Lib on the numbers the client sent."""
    data = ohlcv(10_000)
    text = json.dumps({**{k: v.tolist() for k, v in data.items()}, "indicators": INDICATORS}).encode()
    status, kind, raw = await _post(kernel, text, "application/json")
    assert status == 200 and kind == "application/json" and len(raw) > LARGE_REPLY
    status, _, packed = await _post(kernel, codec.packb({**data, "indicators": INDICATORS}), "application/msgpack")
    assert status == 200
    as_json, as_msgpack = orjson.loads(raw), codec.unpackb(packed)
    assert as_json["indicators"] == as_msgpack["indicators"] and as_json["n"] == 10_000
    assert set(as_json["values"]) == set(as_msgpack["values"])
    for key, values in as_json["values"].items():
        back = np.array([math.nan if v is None else v for v in values], dtype=np.float64)
        assert np.array_equal(back, as_msgpack["values"][key], equal_nan=True), key
        assert all(v is None for v in values[: int(np.isnan(back).sum())]), key  # null, never NaN text
    np.testing.assert_array_equal(as_msgpack["values"]["RSI_14"], talib.RSI(data["close"], timeperiod=14))
    np.testing.assert_array_equal(as_msgpack["values"]["ATR_14"], talib.ATR(data["high"], data["low"], data["close"]))


@pytest.mark.parametrize("bars", [30, 10_000], ids=["small-body", "large-body"])
@pytest.mark.parametrize(("bad", "field", "words"), [
    (True, "close[7]", "expected a number"),
    ("7", "close[7]", "expected a number"),
    ([7.0], "close[7]", "expected a number"),
])
async def test_a_bad_element_is_named_whatever_the_body_size(kernel: Kernel, bars: int, bad: Any, field: str,
                                                            words: str) -> None:
    close = [100.0 + i for i in range(bars)]
    close[7] = bad
    status, _, raw = await _post(kernel, orjson.dumps({"close": close, "indicators": ["SMA"]}), "application/json")
    error = orjson.loads(raw)["error"]
    assert status == 400 and error["field"] == field and words in error["message"]


async def test_a_gap_is_nan_whatever_the_body_size(kernel: Kernel) -> None:
    """``null`` in a column (which the columnar reader leaves to the op's reader) is NaN, as in msgpack."""
    for bars in (40, 10_000):
        close: list[float | None] = [100.0 + (i % 7) for i in range(bars)]
        close[3] = None
        status, _, raw = await _post(kernel, orjson.dumps({"close": close, "indicators": ["RSI"]}), "application/json")
        assert status == 200
        with_nan = np.array([math.nan if v is None else v for v in close])
        _, _, packed = await _post(kernel, codec.packb({"close": with_nan, "indicators": ["RSI"]}),
                                   "application/msgpack")
        expected = codec.unpackb(packed)["values"]["RSI_14"]
        back = np.array([math.nan if v is None else v for v in orjson.loads(raw)["values"]["RSI_14"]])
        assert np.array_equal(back, expected, equal_nan=True) and np.isnan(expected).any()
