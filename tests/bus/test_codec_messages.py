"""`codec.unpack_message`, the pub/sub body reader: the same values as `codec.unpackb` for everything the
service and its feeds publish, a `CodecError` and nothing else for any other bytes, arrays never writable views
of memory the caller may change."""

from __future__ import annotations

from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ml_processing.bus import codec
from ml_processing.bus.errors import CodecError

scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1),
                    st.floats(allow_nan=False), st.text(max_size=20), st.binary(max_size=20))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=5),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=5)),
                      max_leaves=30)
arrays = st.builds(lambda data, dtype: np.array(data).astype(dtype),
                   st.lists(st.integers(0, 100), max_size=50), st.sampled_from(["<f8", "<f4", "<i8", "|u1", "|b1"]))


@settings(max_examples=300, deadline=None)
@given(values)
def test_reads_what_the_request_reader_reads(value: Any) -> None:
    frame = codec.packb(value)
    assert codec.unpack_message(frame) == codec.unpackb(frame)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.text(max_size=8), arrays, min_size=1, max_size=4))
def test_arrays_arrive_whole_and_read_only(columns: dict[str, np.ndarray]) -> None:
    frame = codec.packb({"values": columns, "ts": 60_000})
    read = codec.unpack_message(frame)["values"]
    for name, column in columns.items():
        assert read[name].dtype == column.dtype and read[name].shape == column.shape
        np.testing.assert_array_equal(read[name], column)
        assert not read[name].flags.writeable


def test_arrays_from_a_writable_buffer_are_copies() -> None:
    buffer = bytearray(codec.packb({"v": np.arange(4.0)}))
    read = codec.unpack_message(buffer)["v"]
    buffer[:] = bytes(len(buffer))  # the caller reuses its buffer
    np.testing.assert_array_equal(read, np.arange(4.0))


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=64))
def test_any_bytes_decode_or_raise_codec_error(data: bytes) -> None:
    try:
        codec.unpack_message(data)
    except CodecError:
        pass


@pytest.mark.parametrize("frame", [
    b"\xc1",                                                # never used
    codec.packb({"close": 1.0})[:-1],                       # cut short
    codec.packb({"close": 1.0}) + b"\x00",                  # trailing bytes
    msgpack.packb(msgpack.ExtType(9, b"x")),                # an extension we do not have
    msgpack.packb(msgpack.ExtType(1, b"\x03|O\x00")),       # an object array
    b"\x91" * 100_000 + b"\xc0",                            # nested past the recursion limit
])
def test_malformed_messages_raise_codec_error(frame: bytes) -> None:
    with pytest.raises(CodecError):
        codec.unpack_message(frame)


def test_replies_are_read_the_same_way() -> None:
    """`decode_reply` reads results with the message reader: arrays as read-only views, errors as before."""
    result = codec.decode_reply(codec.encode_reply({"close": np.arange(10_000.0), "n": 3}))
    np.testing.assert_array_equal(result["close"], np.arange(10_000.0))
    assert result["n"] == 3 and not result["close"].flags.writeable
    with pytest.raises(CodecError):
        codec.decode_reply(codec.encode_reply({"n": 3}) + b"\x00")  # a result that does not fill the frame


def test_a_timestamp_round_trips_through_both_readers() -> None:
    """The message reader gives a datetime where the request reader keeps msgpack's Timestamp; `packb` writes
    both back as the same extension, so a result holding either can always be encoded."""
    frame = msgpack.packb({"at": msgpack.Timestamp(1_704_164_645, 678_000_000)})
    as_datetime = codec.unpack_message(frame)["at"]
    as_timestamp = codec.unpackb(frame)["at"]
    assert as_datetime.timestamp() == pytest.approx(as_timestamp.to_unix())
    assert codec.packb({"at": as_datetime}) == codec.packb({"at": as_timestamp}) == frame
