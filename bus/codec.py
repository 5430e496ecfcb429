"""The message codec: the only module of ml-processing that calls msgpack.

Bodies are one msgpack frame. A request is ``{"op": str, "args": map, "id": str}`` (``id`` optional, the
request id carried into logs); a reply is ``{"ok": true, "result": ...}`` or
``{"ok": false, "error": {"code": str, "message": str}}``.

numpy arrays travel as msgpack ext type 1 (`NDARRAY_EXT`), whose payload is::

    u8      length L of the dtype string
    L bytes dtype as a numpy type string, ASCII: "<f8", "<f4", "<i8", "<i4", "|u1", "|b1", ...
    u8      number of dimensions N
    N x u64 shape, little-endian
    rest    the elements, C order, little-endian

so a C++ engine decodes them with any msgpack library and one ``memcpy``. Plain lists are accepted
everywhere an array is. Decoding never raises anything but `CodecError`.

JSON bodies (the REST edge) are read by `decode_json`: in a large body, the top-level fields a route
declares as columns (arrays of doubles) are parsed straight to float64 ndarrays, with no Python float per
number, and equal bit for bit to what the general parser gives (docs/PROTOCOL.md, body encodings).

>>> import numpy as np
>>> body = encode_request("compute", {"close": np.arange(3.0)}, rid="r1")
>>> req = decode_request(body)
>>> req.op, req.rid, req.args["close"].tolist()
('compute', 'r1', [0.0, 1.0, 2.0])
>>> decode_reply(encode_reply({"x": 1}))
{'x': 1}
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Collection
from datetime import UTC, datetime
from functools import partial
from typing import Any

import msgpack
import msgspec
import numpy as np
import orjson

from .errors import CodecError, MlpError, error_from_wire

simdjson: Any
try:  # the columnar JSON reader; without it, JSON bodies are read by orjson alone (same values, slower)
    import simdjson
except ImportError:  # pragma: no cover - the tests set `simdjson = None` to check that path
    simdjson = None

NDARRAY_EXT = 1

#: Array element kinds that may travel: bool, signed/unsigned int, float (no objects, no strings).
_ALLOWED_KINDS = frozenset("biuf")
_U64 = struct.Struct("<Q")


class Request(msgspec.Struct, frozen=True):
    """A decoded request body (immutable; a changed copy is ``msgspec.structs.replace(request, ...)``).

    A msgspec structure rather than a frozen dataclass: one is built per request, and this one is built in C
    (about 0.1 us against 0.7 us).
    """

    op: str
    args: dict[str, Any]
    rid: str | None = None
    size: int = 0  # bytes of the frame it came in, when known: a large request is decoded off the loop
    principal: str | None = None  # who asked, when the service authenticates (None: inside the process)
    transport: str = "internal"  # "zmq", "rest" or "internal": where the request came from (audit trail)


def _pack_array(arr: np.ndarray) -> msgpack.ExtType:
    prefix = _PREFIXES.get(arr.dtype)
    if prefix is None:  # a dtype not seen yet, or one to convert first
        arr, prefix = _little_endian(arr)
    ndim = arr.ndim
    header = prefix + _SHAPES[ndim].pack(ndim, *arr.shape)
    if arr.nbytes < _ONE_COPY:
        return _ext((NDARRAY_EXT, header + np.ascontiguousarray(arr).tobytes()))
    # one copy, not two: the elements go straight from the array into the payload
    return _ext((NDARRAY_EXT, b"".join((header, np.ascontiguousarray(arr).reshape(-1).view(np.uint8).data))))


#: ``msgpack.ExtType((code, data))`` without its constructor's type checks (code and data are ours, an int
#: and bytes): ExtType is a named tuple, and its checks cost more than the rest of a small array's header.
_ext = partial(tuple.__new__, msgpack.ExtType)


def _little_endian(arr: np.ndarray) -> tuple[np.ndarray, bytes]:
    """`arr` as little-endian, and its dtype's header prefix (length, then the dtype string); the prefix of a
    dtype that needs no conversion is kept for the next array of that dtype."""
    if arr.dtype.kind not in _ALLOWED_KINDS:
        raise CodecError(f"arrays of dtype {arr.dtype} cannot be encoded")
    native = not (arr.dtype.byteorder == ">" or (arr.dtype.byteorder == "=" and not _LITTLE))
    if not native:
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    name = arr.dtype.str.encode("ascii")
    prefix = bytes((len(name),)) + name
    if native:
        _PREFIXES[arr.dtype] = prefix
    return arr, prefix


_PREFIXES: dict[np.dtype[Any], bytes] = {}  # little-endian dtypes of the allowed kinds -> header prefix
#: Per number of dimensions, up to numpy's limit of 64: the header's dimension count and shape, ``<B`` then
#: that many ``<Q``.
_SHAPES = [struct.Struct(f"<B{n}Q") for n in range(65)]
_ONE_COPY = 65536  # arrays this large are copied once into their payload (the two-copy way is faster below)


def _unpack_array(data: bytes | memoryview) -> np.ndarray:
    try:
        view = memoryview(data)
        n = view[0]
        dtype = np.dtype(bytes(view[1 : 1 + n]).decode("ascii"))
        pos = 1 + n
        ndim = view[pos]
        pos += 1
        shape = tuple(_U64.unpack_from(view, pos + 8 * i)[0] for i in range(ndim))
        pos += 8 * ndim
    except (IndexError, ValueError, TypeError, UnicodeDecodeError, struct.error) as exc:
        raise CodecError(f"malformed ndarray ext payload: {exc}") from None
    if dtype.kind not in _ALLOWED_KINDS:
        raise CodecError(f"ndarray dtype {dtype.str!r} is not allowed")
    count = 1
    for dim in shape:
        count *= dim
    if count * dtype.itemsize != len(view) - pos:
        raise CodecError(f"ndarray payload holds {len(view) - pos} bytes, shape {shape} of {dtype.str} needs "
                         f"{count * dtype.itemsize}")
    arr = np.frombuffer(view, dtype=dtype, count=count, offset=pos).reshape(shape)
    return arr if view.readonly else arr.copy()  # never a view of memory the caller may still change


_LITTLE = np.little_endian


def _default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return _pack_array(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (set, frozenset)):
        return list(obj)
    if isinstance(obj, datetime):  # as the timestamp extension, the way it was read (a naive one as UTC)
        return msgpack.Timestamp.from_datetime(obj if obj.tzinfo is not None else obj.replace(tzinfo=UTC))
    raise TypeError(f"cannot encode {type(obj).__name__}")


def _ext_hook(code: int, data: bytes | memoryview) -> Any:
    if code == NDARRAY_EXT:
        return _unpack_array(data)
    raise CodecError(f"unknown msgpack ext type {code}")


class _Packers(threading.local):
    """One msgpack `Packer` per thread, used for every body: ``msgpack.packb`` makes a new one per call, with a
    256 KiB buffer, which costs more than packing a small body (about 1.6 us a call here). A Packer resets its
    buffer when packing fails, so a failed body leaves nothing behind for the next one."""

    def __init__(self) -> None:
        self.pack = msgpack.Packer(default=_default, use_bin_type=True).pack


_packers = _Packers()
#: A Packer whose buffer grew past this (its buffer never shrinks) is replaced after the body that grew it.
_PACKER_KEEP = 256 * 1024


def packb(obj: Any) -> bytes:
    """Encode any body (dicts, lists, scalars, numpy arrays and scalars); a `Packed` body is encoded already."""
    if type(obj) is Packed:
        return obj
    try:
        out: bytes = _packers.pack(obj)
    except MlpError:
        raise
    except (TypeError, ValueError, OverflowError) as exc:
        raise CodecError(f"cannot encode body: {exc}") from None
    if len(out) > _PACKER_KEEP:
        _packers.__init__()  # type: ignore[misc]
    return out


class Packed(bytes):
    """A body encoded already (by a `Template`): `packb` returns it as it is, so it is never encoded twice."""


class _Slot:
    def __init__(self, code: str, marker: int) -> None:
        self.code, self.marker = code, bytes((marker,))


#: A `Template` slot for an integer, sent as msgpack int64.
INT = _Slot("q", 0xD3)
#: A `Template` slot for a float, sent as msgpack float64.
FLOAT = _Slot("d", 0xCB)


class Template:
    """Encodes maps of one fixed shape fast: the constant parts are packed once, the slots filled per call.

    `shape` is a map (string keys) whose values are constants, the slots `INT` and `FLOAT`, or maps of the
    same kind. `encode` fills the slots in order with one `struct` call and gives the map `packb` would
    (an integer in its int64 form, which every msgpack reader takes); for a body updated on every market
    bar that is several times cheaper. Floats are sent as they are: a caller that sends NaN as null
    encodes such a body with `packb` instead.

    >>> template = Template({"symbol": "ES", "ts": INT, "values": {"a": FLOAT, "b": FLOAT}, "warm": True})
    >>> unpackb(template.encode(7, 1.5, -2.0))
    {'symbol': 'ES', 'ts': 7, 'values': {'a': 1.5, 'b': -2.0}, 'warm': True}
    """

    def __init__(self, shape: dict[str, Any]) -> None:
        parts: list[bytes | _Slot] = []
        self._walk(shape, parts)
        constants, codes = [b""], []  # constants[i] precedes slot i; the last one follows every slot
        for part in parts:
            if isinstance(part, _Slot):
                constants[-1] += part.marker
                codes.append(part.code)
                constants.append(b"")
            else:
                constants[-1] += part
        self.slots = len(codes)
        self._struct = struct.Struct(">" + "".join(f"{len(c)}s{code}" for c, code in zip(constants[:-1], codes, strict=True))
                                     + f"{len(constants[-1])}s")
        self._args: list[Any] = [None] * (2 * self.slots + 1)  # constant, slot, constant, ..., constant
        self._args[0::2] = constants

    def _walk(self, shape: dict[str, Any], parts: list[bytes | _Slot]) -> None:
        n = len(shape)
        parts.append(bytes((0x80 | n,)) if n < 16 else b"\xde" + n.to_bytes(2, "big"))
        for key, value in shape.items():
            parts.append(packb(key))
            if isinstance(value, _Slot):
                parts.append(value)
            elif type(value) is dict:
                self._walk(value, parts)
            else:
                parts.append(packb(value))

    def encode(self, *values: Any) -> Packed:
        """The map with the slots filled by `values`, in order (`struct.error` if one does not fit its slot)."""
        args = self._args.copy()
        args[1::2] = values
        return Packed(self._struct.pack(*args))


def unpackb(data: bytes | memoryview) -> Any:
    """Decode one msgpack frame; any failure is a `CodecError`."""
    try:
        return msgpack.unpackb(data, raw=False, ext_hook=_ext_hook, strict_map_key=False)
    except CodecError:
        raise
    except Exception as exc:  # msgpack raises a zoo of types for malformed input
        raise CodecError(f"frame is not valid msgpack: {type(exc).__name__}: {exc}") from None


def unpack_message(data: bytes | memoryview) -> Any:
    """Decode one pub/sub message body or reply; any failure is a `CodecError`.

    msgspec's decoder reads a bar in less than half the time `unpackb` takes, and hands ndarray payloads
    over as views of the message instead of copies. It is not used for requests: it reads a map keyed by
    arrays (with tuple keys), which `unpackb` refuses, and an op that echoes its arguments could then not
    write its reply as JSON. A message is read by handlers that check what they take and answer nothing; a
    reply comes from a service. A timestamp extension arrives as a datetime (`unpackb` keeps msgpack's
    `Timestamp`); `packb` writes either as the extension.

    >>> unpack_message(packb({"close": 1.5, "v": np.arange(2.0)}))
    {'close': 1.5, 'v': array([0., 1.])}
    """
    try:
        return _messages.decode(data)
    except CodecError:
        raise
    except Exception as exc:  # msgspec.DecodeError, or a RecursionError for nesting too deep
        raise CodecError(f"frame is not valid msgpack: {type(exc).__name__}: {exc}") from None


_messages = msgspec.msgpack.Decoder(ext_hook=_ext_hook)


def encode_request(op: str, args: dict[str, Any] | None = None, *, rid: str | None = None) -> bytes:
    body: dict[str, Any] = {"op": op, "args": args if args is not None else {}}
    if rid is not None:
        body["id"] = rid
    return packb(body)


def check_request(body: Any, principal: str | None = None, transport: str = "internal") -> Request:
    """Validate a decoded request map (also used for JSON bodies already parsed by the edge)."""
    if type(body) is dict:  # the common case in the fewest steps; anything else takes the checks below
        op, args, rid = body.get("op"), body.get("args"), body.get("id")
        if type(op) is str and op and type(args) is dict and (rid is None or type(rid) is str):
            return Request(op, args, rid, 0, principal, transport)
    if not isinstance(body, dict):
        raise CodecError(f"request body must be a map, got {type(body).__name__}")
    op = body.get("op")
    if not isinstance(op, str) or not op:
        raise CodecError("request field 'op' must be a non-empty string")
    args = body.get("args", {})
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise CodecError(f"request field 'args' must be a map, got {type(args).__name__}")
    rid = body.get("id")
    if rid is not None and not isinstance(rid, str):
        rid = str(rid)
    return Request(op, args, rid, 0, principal, transport)


_OP_KEY = b"\xa2op"  # the msgpack string "op"


def peek_op(frame: bytes | memoryview) -> str:
    """The ``op`` of a request frame without decoding its arguments (the broker checks roles with it).

    A map whose first key is ``op`` with a string of up to 31 bytes (`encode_request` writes it so) is read
    straight from the bytes; any other frame by a msgpack reader, with the same answer.

    >>> peek_op(encode_request("predict", {"features": [1.0]})), peek_op(packb({"args": {}, "op": "ping"}))
    ('predict', 'ping')
    """
    if len(frame) > 4 and 0x81 <= frame[0] <= 0x8F and frame[1:4] == _OP_KEY and 0xA0 <= frame[4] <= 0xBF:
        end = 5 + (frame[4] & 0x1F)
        if len(frame) >= end:
            try:
                return str(frame[5:end], "utf-8")
            except UnicodeDecodeError:
                pass  # the reader below says what is wrong
    unpacker = msgpack.Unpacker(max_buffer_size=len(frame) or 1)
    unpacker.feed(frame)
    try:
        size = unpacker.read_map_header()
        for _ in range(size):
            key = unpacker.unpack()
            if key == "op":
                op = unpacker.unpack()
                if isinstance(op, str):
                    return op
                break
            unpacker.skip()
    except (msgpack.UnpackException, ValueError, TypeError, msgpack.OutOfData) as exc:
        raise CodecError(f"request body is not a msgpack map: {exc}") from None
    raise CodecError("request body carries no 'op' string")


def decode_request(frame: bytes | memoryview, principal: str | None = None, transport: str = "internal") -> Request:
    return check_request(unpackb(frame), principal, transport)


_OK_PREFIX: bytes = msgpack.packb({"ok": True, "result": None})[:-1]  # fixmap(2) "ok" true "result"


def encode_reply(result: Any) -> bytes:
    """Encode a successful reply."""
    return _OK_PREFIX + packb(result)


def encode_error(error: MlpError) -> bytes:
    return packb({"ok": False, "error": error.to_wire()})


_OK_LEN = len(_OK_PREFIX)
_COPY_TAIL = 4096  # a shorter reply's result is sliced off as bytes; a longer one's read in place


def decode_reply(frame: bytes | memoryview) -> Any:
    """Return the result of a reply frame, or raise the error it carries as its `MlpError` type.

    A reply that starts as `encode_reply` writes it is the map ``{ok: true, result: R}``: only R is decoded
    (for a small reply, less than half the cost of decoding the map), and it must fill the rest of the frame.
    Replies are read like pub/sub messages (`unpack_message`): their arrays are views of the frame.

    >>> decode_reply(encode_reply({"x": [1, 2]})), decode_reply(packb({"result": 3, "ok": True}))
    ({'x': [1, 2]}, 3)
    """
    if frame[:_OK_LEN] == _OK_PREFIX:
        return unpack_message(frame[_OK_LEN:] if len(frame) < _COPY_TAIL else memoryview(frame)[_OK_LEN:])
    body = unpack_message(frame)
    if not isinstance(body, dict) or "ok" not in body:
        raise CodecError("reply must be a map with an 'ok' field")
    if body["ok"] is True:
        return body.get("result")
    raise error_from_wire(body.get("error"))


def self_check() -> None:
    """Round-trip every shape the protocol promises; run once at start-up."""
    sample = {
        "f8": np.linspace(0.0, 1.0, 7),
        "i4": np.arange(6, dtype=np.int32).reshape(2, 3),
        "b1": np.array([True, False]),
        "empty": np.empty((0, 3)),
        "list": [1, 2.5, None, "x"],
    }
    back = decode_request(encode_request("check", sample, rid="self")).args
    for key, value in sample.items():
        got = back[key]
        if isinstance(value, np.ndarray):
            ok = got.dtype == value.dtype and got.shape == value.shape and np.array_equal(got, value)
        else:
            ok = got == value
        if not ok:
            raise CodecError(f"codec self-check failed for {key!r}")
    if decode_reply(encode_reply(sample["list"])) != sample["list"]:
        raise CodecError("codec self-check failed for replies")


# -- JSON bodies ------------------------------------------------------------------------------------------

#: JSON bodies at least this large read their columns straight to float64 arrays; smaller ones (and any
#: body the columnar reader does not take) are read by orjson alone.
COLUMNAR_JSON = 64 * 1024
_BOM = b"\xef\xbb\xbf"
_OPEN_BRACKET = ord("[")
_parsers = threading.local()


def decode_json(raw: bytes, columns: Collection[str] = ()) -> Any:
    """A JSON body as Python values; `CodecError` for text that is not JSON.

    In an object body of at least `COLUMNAR_JSON` bytes, each top-level field named in `columns` whose
    array holds only numbers comes as a float64 ndarray instead of a list: the same numbers, bit for bit,
    as orjson reads them (integers rounded to the nearest double as ``float()`` does). An array with a
    ``null``, a string, a boolean or a nested array stays a list, so the op's own reader names the element.

    >>> decode_json(b'{"close": [1, 2.5]}', ["close"])
    {'close': [1, 2.5]}
    >>> body = b'{"close": [' + b"1.5, " * 20_000 + b'2], "n": [3]}'
    >>> read = decode_json(body, ["close"])
    >>> read["close"].dtype, len(read["close"]), read["close"][-1], read["n"]
    (dtype('float64'), 20001, np.float64(2.0), [3])
    """
    if columns and simdjson is not None and len(raw) >= COLUMNAR_JSON and not raw.startswith(_BOM):
        body = _decode_columnar(raw, columns)
        if body is not None:
            return body
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise CodecError(str(exc)) from None


def _decode_columnar(raw: bytes, columns: Collection[str]) -> dict[str, Any] | None:
    """`raw` read by simdjson with `columns` as float64 arrays; None when orjson must decide (the text is
    not JSON simdjson takes, not an object, repeats a key, or may hold an array nested in a column)."""
    parser = getattr(_parsers, "parser", None)
    if parser is None:
        parser = _parsers.parser = simdjson.Parser()
    try:
        return _read_columns(parser.parse(raw), raw, columns)  # no proxy outlives the call: the parser is free
    except Exception:  # anything simdjson refuses goes to orjson, which reads it or names what is wrong
        _parsers.parser = None  # a parser that failed mid-way is not trusted again
        return None


def _read_columns(doc: Any, raw: bytes, columns: Collection[str]) -> dict[str, Any] | None:
    if not isinstance(doc, simdjson.Object):
        return None
    keys = list(doc.keys())
    if len(set(keys)) != len(keys):
        return None  # a repeated key: the general reader keeps the last one
    body: dict[str, Any] = {}
    arrays = 0  # arrays read as columns: each opened one "[" of the text
    for key in keys:
        value: Any = doc[key]  # a proxy for an array or an object: nothing converted yet
        if isinstance(value, simdjson.Array):
            if key in columns:
                try:
                    body[key] = np.frombuffer(value.as_buffer(of_type="d"), dtype=np.float64)
                    arrays += 1
                    continue
                except (TypeError, ValueError):  # null, a string, a boolean: the op's reader names it
                    pass
            value = value.as_list()
        elif isinstance(value, simdjson.Object):
            value = value.as_dict()
        body[key] = value
    # simdjson flattens nested arrays into one buffer: every "[" of the text must be an array seen here
    brackets = int(np.count_nonzero(np.frombuffer(raw, dtype=np.uint8) == _OPEN_BRACKET))
    if brackets != arrays + _lists_in(body):
        return None
    return body


def _lists_in(body: dict[str, Any]) -> int:
    """How many lists `body` holds, at any depth (ndarrays are not lists)."""
    count, stack = 0, list(body.values())
    while stack:
        item = stack.pop()
        if type(item) is list:
            count += 1
            stack.extend(item)
        elif type(item) is dict:
            stack.extend(item.values())
    return count


_JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def encode_json(obj: Any) -> bytes:
    """A JSON body: numpy arrays and scalars written by orjson in one pass, without a Python object per
    element, NaN (and an infinity) as ``null``; a non-contiguous array is made contiguous first.
    `orjson.JSONEncodeError` for what JSON cannot hold.

    >>> encode_json({"v": np.array([np.nan, 1.5, 2.0])[::-1]})
    b'{"v":[2.0,1.5,null]}'
    """
    return orjson.dumps(obj, default=_json_default, option=_JSON_OPTIONS)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray) and not obj.flags.c_contiguous:
        return np.ascontiguousarray(obj)
    raise TypeError(f"cannot encode {type(obj).__name__}")
