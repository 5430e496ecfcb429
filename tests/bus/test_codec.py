"""The message codec: request/reply envelopes, the ndarray ext type byte by byte, errors, malformed input."""

from __future__ import annotations

import random
import struct
from typing import Any

import msgpack
import numpy as np
import pytest

from ml_processing.bus import codec
from ml_processing.bus.errors import (
    ERROR_CODES,
    BadRequest,
    CodecError,
    InternalError,
    MlpError,
    NotFound,
    Timeout,
    TooLarge,
    Unavailable,
)

#: Every dtype docs/PROTOCOL.md section 3 lists, as its numpy type string.
DOCUMENTED_DTYPES = ("<f8", "<f4", "<i8", "<i4", "<i2", "|i1", "<u8", "<u4", "<u2", "|u1", "|b1")


def ext_payload(dtype: str, shape: tuple[int, ...], data: bytes) -> bytes:
    """An ndarray ext payload built by hand from the layout in the codec's docstring and PROTOCOL.md."""
    name = dtype.encode("ascii")
    return (struct.pack("<B", len(name)) + name + struct.pack("<B", len(shape))
            + struct.pack(f"<{len(shape)}Q", *shape) + data)


def ext_frame(payload: bytes, code: int = codec.NDARRAY_EXT) -> bytes:
    """A request frame whose args carry one ext value (packed with plain msgpack, not with the codec)."""
    frame: bytes = msgpack.packb({"op": "compute", "args": {"x": msgpack.ExtType(code, payload)}}, use_bin_type=True)
    return frame


def raw_ext(frame: bytes) -> list[tuple[int, bytes]]:
    """Every ext value in `frame`, as (type code, payload), decoded by plain msgpack."""
    found: list[tuple[int, bytes]] = []

    def hook(code: int, data: bytes) -> None:
        found.append((code, bytes(data)))

    msgpack.unpackb(frame, ext_hook=hook, raw=False)
    return found


def sample(dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    count = int(np.prod(shape))
    kind = np.dtype(dtype).kind
    if kind == "b":
        values = np.arange(count) % 3 == 0
    elif kind == "f":
        values = np.arange(count, dtype=dtype) * 1.5 - 2.25
    else:
        values = np.arange(count) % 100 - (50 if kind == "i" else 0)
    array: np.ndarray = values.astype(dtype).reshape(shape)
    return array


# -- envelopes -------------------------------------------------------------------------------------------


def test_request_round_trip_keeps_op_args_and_id() -> None:
    args: dict[str, Any] = {"symbol": "AAPL", "n": 14, "ratio": 0.5, "flags": [True, None],
                            "nested": {"a": {"b": [1, 2, 3]}}, "raw": b"\x00\xff", "big": 2**63 + 5,
                            "neg": -(2**63)}

    request = codec.decode_request(codec.encode_request("compute", args, rid="req-42"))

    assert request == codec.Request("compute", args, "req-42")


def test_request_defaults_args_to_empty_map_and_id_to_none() -> None:
    request = codec.decode_request(codec.encode_request("ping"))

    assert (request.op, request.args, request.rid) == ("ping", {}, None)


@pytest.mark.parametrize("body", [{"op": "ping"}, {"op": "ping", "args": None}])
def test_request_without_args_or_with_nil_args_decodes_to_empty_map(body: dict[str, Any]) -> None:
    assert codec.decode_request(msgpack.packb(body)).args == {}


def test_request_id_that_is_not_a_string_becomes_one() -> None:
    assert codec.decode_request(msgpack.packb({"op": "ping", "id": 7})).rid == "7"


def test_request_decodes_from_memoryview() -> None:
    frame = codec.encode_request("compute", {"x": np.arange(4.0)})

    request = codec.decode_request(memoryview(frame))

    assert request.args["x"].tolist() == [0.0, 1.0, 2.0, 3.0]


@pytest.mark.parametrize("result", [None, True, 0, -1, 2.5, "text", b"\x00bin", [1, "a", None],
                                    {"nested": {"list": [1.5, {"k": "v"}]}}, {1: "int key"}])
def test_reply_round_trip(result: Any) -> None:
    assert codec.decode_reply(codec.encode_reply(result)) == result


@pytest.mark.parametrize("result", [None, 1, "x", {"a": [1, 2]}, [b"b"]])
def test_encoded_reply_is_exactly_the_documented_map(result: Any) -> None:
    frame = codec.encode_reply(result)

    assert frame == msgpack.packb({"ok": True, "result": result}, use_bin_type=True)
    assert msgpack.unpackb(frame) == {"ok": True, "result": result}


def test_reply_result_may_hold_arrays() -> None:
    result = codec.decode_reply(codec.encode_reply({"rsi": np.array([50.0, 61.5])}))

    assert result["rsi"].dtype == np.dtype("<f8")
    assert result["rsi"].tolist() == [50.0, 61.5]


def test_numpy_scalars_and_sets_encode_as_plain_values() -> None:
    args = {"f": np.float64(1.5), "i": np.int32(-3), "b": np.bool_(True), "u": np.uint8(200), "s": {3}}

    decoded = codec.decode_request(codec.encode_request("op", args)).args

    assert decoded == {"f": 1.5, "i": -3, "b": True, "u": 200, "s": [3]}
    assert [type(decoded[k]) for k in ("f", "i", "b", "u")] == [float, int, bool, int]


def test_plain_lists_are_accepted_where_arrays_are() -> None:
    frame = msgpack.packb({"op": "compute", "args": {"close": [1.0, 2.5, 3], "matrix": [[1, 2], [3, 4]]}})

    request = codec.decode_request(frame)

    assert request.args == {"close": [1.0, 2.5, 3], "matrix": [[1, 2], [3, 4]]}
    assert codec.decode_request(codec.encode_request("compute", request.args)).args == request.args


# -- the ndarray ext type ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DOCUMENTED_DTYPES)
@pytest.mark.parametrize("shape", [(5,), (2, 3), (2, 1, 3), (0,), (0, 3), ()], ids=str)
def test_array_round_trip_keeps_dtype_shape_and_values(dtype: str, shape: tuple[int, ...]) -> None:
    array = sample(dtype, shape)

    back = codec.decode_request(codec.encode_request("compute", {"x": array})).args["x"]

    assert isinstance(back, np.ndarray)
    assert back.dtype == np.dtype(dtype)
    assert back.shape == shape
    assert np.array_equal(back, array)


@pytest.mark.parametrize("make", [
    lambda: np.arange(20.0)[::3],
    lambda: np.arange(12, dtype=np.int32).reshape(3, 4).T,
    lambda: np.asfortranarray(np.arange(6.0).reshape(2, 3)),
    lambda: np.arange(24, dtype=np.uint8).reshape(2, 3, 4)[:, ::2, 1:],
], ids=["strided", "transposed", "fortran", "sliced-3d"])
def test_non_contiguous_arrays_travel_in_c_order(make: Any) -> None:
    array = make()
    assert not array.flags.c_contiguous

    back = codec.unpackb(codec.packb(array))

    assert back.shape == array.shape
    assert np.array_equal(back, array)
    (_, payload), = raw_ext(codec.packb(array))
    assert payload.endswith(np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes())


@pytest.mark.parametrize("dtype", [">f8", ">f4", ">i8", ">i4", ">u2"])
def test_big_endian_input_travels_little_endian(dtype: str) -> None:
    array = np.array([1.5, -2.0, 3.0] if dtype[1] == "f" else [1, 2, 300], dtype=dtype)

    frame = codec.packb(array)
    back = codec.unpackb(frame)

    little = np.dtype(dtype).newbyteorder("<")
    assert back.dtype == little
    assert back.tolist() == array.tolist()
    (_, payload), = raw_ext(frame)
    assert payload == ext_payload(little.str, array.shape, array.astype(little).tobytes())


def test_hand_built_payload_decodes() -> None:
    values = np.arange(6, dtype="<i4")
    payload = struct.pack("<B3sB2Q", 3, b"<i4", 2, 2, 3) + values.tobytes()

    array = codec.decode_request(ext_frame(payload)).args["x"]

    assert array.dtype == np.dtype("<i4")
    assert array.tolist() == [[0, 1, 2], [3, 4, 5]]


def test_encoded_payload_has_the_documented_bytes() -> None:
    frame = codec.packb(np.array([[1, -2, 3], [4, 5, -6]], dtype=np.int32))

    assert raw_ext(frame) == [(1, bytes([3]) + b"<i4" + bytes([2])
                               + struct.pack("<QQ", 2, 3) + struct.pack("<6i", 1, -2, 3, 4, 5, -6))]
    assert frame == msgpack.packb(msgpack.ExtType(1, raw_ext(frame)[0][1]))


def test_protocol_md_example_payload() -> None:
    # docs/PROTOCOL.md section 3: the float64 array [1.0, 2.0]
    documented = bytes.fromhex("03 3c 66 38  01  02 00 00 00 00 00 00 00"
                               "  00 00 00 00 00 00 f0 3f  00 00 00 00 00 00 00 40")

    assert raw_ext(codec.packb(np.array([1.0, 2.0]))) == [(1, documented)]
    assert codec.unpackb(msgpack.packb(msgpack.ExtType(1, documented))).tolist() == [1.0, 2.0]


def test_bool_and_byte_arrays_use_the_pipe_byte_order_mark() -> None:
    (_, bool_payload), = raw_ext(codec.packb(np.array([True, False, True])))
    (_, byte_payload), = raw_ext(codec.packb(np.array([7, 255], dtype=np.uint8)))

    assert bool_payload == ext_payload("|b1", (3,), b"\x01\x00\x01")
    assert byte_payload == ext_payload("|u1", (2,), b"\x07\xff")


def test_zero_dimensional_array_has_no_shape_entries() -> None:
    (_, payload), = raw_ext(codec.packb(np.array(2.5)))

    assert payload == b"\x03<f8\x00" + struct.pack("<d", 2.5)
    assert codec.unpackb(msgpack.packb(msgpack.ExtType(1, payload))).shape == ()


def test_large_array_round_trip() -> None:
    array = np.random.default_rng(7).standard_normal(1_000_000)

    back = codec.decode_request(codec.encode_request("compute", {"x": array})).args["x"]

    assert np.array_equal(back, array)


@pytest.mark.parametrize("bad", [np.array(["a", "b"]), np.array([b"a"]), np.array([object()], dtype=object),
                                 np.array([1 + 2j]), np.array(["2024-01-01"], dtype="datetime64[D]")],
                         ids=["unicode", "bytes", "object", "complex", "datetime"])
def test_encoding_refuses_arrays_that_may_not_travel(bad: np.ndarray) -> None:
    with pytest.raises(CodecError):
        codec.encode_request("compute", {"x": bad})


@pytest.mark.parametrize("bad", [object(), 2**64, -(2**63) - 1, {"k": object()}], ids=repr)
def test_encoding_unencodable_values_raises_codec_error(bad: Any) -> None:
    with pytest.raises(CodecError):
        codec.packb(bad)


# -- errors carried by replies -------------------------------------------------------------------------


@pytest.mark.parametrize("error_type", [BadRequest, TooLarge, NotFound, Unavailable, Timeout, InternalError])
def test_error_reply_is_re_raised_as_its_type(error_type: type[MlpError]) -> None:
    frame = codec.encode_error(error_type("it went wrong", field="period"))

    with pytest.raises(error_type) as caught:
        codec.decode_reply(frame)

    assert type(caught.value) is error_type
    assert (caught.value.message, caught.value.field) == ("it went wrong", "period")
    assert msgpack.unpackb(frame) == {"ok": False, "error": {"code": error_type.code, "message": "it went wrong",
                                                            "field": "period"}}


def test_error_without_field_has_no_field_on_the_wire() -> None:
    frame = codec.encode_error(NotFound("no model 'x'"))

    assert msgpack.unpackb(frame) == {"ok": False, "error": {"code": "not_found", "message": "no model 'x'"}}
    with pytest.raises(NotFound) as caught:
        codec.decode_reply(frame)
    assert caught.value.field is None


def test_codec_error_travels_as_bad_request() -> None:
    with pytest.raises(BadRequest) as caught:
        codec.decode_reply(codec.encode_error(CodecError("not msgpack")))

    assert caught.value.code == "bad_request"
    assert caught.value.http_status == 400


@pytest.mark.parametrize("error", [{"code": "no_such_code", "message": "?"}, "not a map", None, 17])
def test_unknown_or_malformed_error_becomes_internal(error: Any) -> None:
    with pytest.raises(InternalError):
        codec.decode_reply(msgpack.packb({"ok": False, "error": error}))


def test_error_codes_include_every_documented_code() -> None:
    assert {"bad_request", "not_found", "unavailable", "timeout", "internal"} <= set(ERROR_CODES)


@pytest.mark.parametrize("frame", [msgpack.packb([1, 2]), msgpack.packb({"result": 1}), msgpack.packb("ok"),
                                   b"\xc1", b""], ids=["list", "no-ok", "str", "invalid", "empty"])
def test_malformed_reply_raises_codec_error(frame: bytes) -> None:
    with pytest.raises(CodecError):
        codec.decode_reply(frame)


# -- malformed requests: always CodecError, never anything else --------------------------------------------


GOOD_ARRAY = np.arange(6, dtype="<f8").tobytes()

MALFORMED_EXT = {
    "payload-too-short": ext_payload("<f8", (6,), GOOD_ARRAY[:-1]),
    "payload-too-long": ext_payload("<f8", (6,), GOOD_ARRAY + b"\x00"),
    "shape-too-big": ext_payload("<f8", (7,), GOOD_ARRAY),
    "shape-mismatch-2d": ext_payload("<f8", (4, 2), GOOD_ARRAY),
    "object-dtype": ext_payload("|O", (6,), GOOD_ARRAY),
    "unicode-dtype": ext_payload("<U3", (1,), b"a\x00\x00\x00" * 3),
    "bytes-dtype": ext_payload("|S8", (6,), GOOD_ARRAY),
    "void-dtype": ext_payload("|V8", (6,), GOOD_ARRAY),
    "structured-dtype": ext_payload("(2,)<f8", (3,), GOOD_ARRAY),
    "complex-dtype": ext_payload("<c16", (3,), GOOD_ARRAY),
    "datetime-dtype": ext_payload("<M8[s]", (6,), GOOD_ARRAY),
    "garbage-dtype": ext_payload("zz9", (6,), GOOD_ARRAY),
    "non-ascii-dtype": b"\x03\xff\xfe\xfd\x01" + struct.pack("<Q", 6) + GOOD_ARRAY,
    "empty-payload": b"",
    "dtype-length-past-end": b"\x10<f8",
    "no-ndim": b"\x03<f8",
    "shape-truncated": b"\x03<f8\x02" + struct.pack("<Q", 3),
    "huge-shape": ext_payload("<f8", (2**64 - 1,), GOOD_ARRAY),
    "huge-zero-size-shape": ext_payload("<f8", (0, 2**63), b""),
    "too-many-dimensions": ext_payload("<f8", (1,) * 255, struct.pack("<d", 1.0)),
}


@pytest.mark.parametrize("payload", list(MALFORMED_EXT.values()), ids=list(MALFORMED_EXT))
def test_malformed_ndarray_payload_raises_codec_error(payload: bytes) -> None:
    with pytest.raises(CodecError):
        codec.decode_request(ext_frame(payload))


@pytest.mark.parametrize("code", [2, 5, 127])
def test_unknown_ext_type_raises_codec_error(code: int) -> None:
    with pytest.raises(CodecError):
        codec.decode_request(ext_frame(ext_payload("<f8", (6,), GOOD_ARRAY), code=code))


MALFORMED_BODIES: dict[str, bytes] = {
    "empty": b"",
    "never-used-byte": b"\xc1",
    "garbage": b"\xde\xad\xbe\xef not msgpack at all",
    "truncated-map": msgpack.packb({"op": "compute", "args": {"n": 1}})[:-1],
    "truncated-str-header": b"\xd9",
    "trailing-bytes": msgpack.packb({"op": "ping"}) + b"\x00",
    "list-body": msgpack.packb(["compute", {}]),
    "string-body": msgpack.packb("compute"),
    "int-body": msgpack.packb(1),
    "nil-body": msgpack.packb(None),
    "bin-body": msgpack.packb(b"\x81\xa2op"),
    "missing-op": msgpack.packb({"args": {}}),
    "empty-op": msgpack.packb({"op": "", "args": {}}),
    "nil-op": msgpack.packb({"op": None}),
    "int-op": msgpack.packb({"op": 3}),
    "bytes-op": msgpack.packb({"op": b"ping"}, use_bin_type=True),
    "args-list": msgpack.packb({"op": "ping", "args": [1, 2]}),
    "args-string": msgpack.packb({"op": "ping", "args": "x=1"}),
    "args-int": msgpack.packb({"op": "ping", "args": 0}),
    "invalid-utf8-str": b"\x81\xa2op\xa2\xff\xfe",
}


@pytest.mark.parametrize("frame", list(MALFORMED_BODIES.values()), ids=list(MALFORMED_BODIES))
def test_malformed_request_raises_codec_error(frame: bytes) -> None:
    with pytest.raises(CodecError):
        codec.decode_request(frame)


def test_every_truncation_of_a_valid_request_raises_codec_error() -> None:
    frame = codec.encode_request("compute", {"close": np.arange(5.0), "period": 14, "name": "rsi"}, rid="r")
    for end in range(len(frame)):
        with pytest.raises(CodecError):
            codec.decode_request(frame[:end])


def test_random_corruption_decodes_or_raises_codec_error_only() -> None:
    rng = random.Random(20240601)
    frame = bytearray(codec.encode_request("compute", {"close": np.arange(5.0), "mask": np.array([True]),
                                                       "shape": np.zeros((2, 2), np.int32)}, rid="r1"))
    outcomes = {"decoded": 0, "codec_error": 0}
    for _ in range(3000):
        mutated = bytearray(frame)
        for _ in range(rng.randint(1, 4)):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        try:
            codec.decode_request(bytes(mutated))
            outcomes["decoded"] += 1
        except CodecError:
            outcomes["codec_error"] += 1
    for _ in range(500):
        try:
            codec.decode_request(rng.randbytes(rng.randint(0, 64)))
            outcomes["decoded"] += 1
        except CodecError:
            outcomes["codec_error"] += 1

    assert outcomes["codec_error"] > 0
    assert sum(outcomes.values()) == 3500


def test_unpackb_raises_codec_error_for_garbage() -> None:
    with pytest.raises(CodecError):
        codec.unpackb(b"\x92\x01")


# -- start-up check ------------------------------------------------------------------------------------------


def test_self_check_passes() -> None:
    assert codec.self_check() is None
