"""Codec of the Open Inference Protocol over REST/JSON, with Triton's binary tensor data extension.

Implements the inference request and response bodies of the KServe "Open Inference Protocol"
(predict protocol version 2, the V2 protocol served by Triton, KServe and MLServer) and Triton's
"Binary Tensor Data Extension" (the ``binary_data_size``, ``binary_data`` and ``binary_data_output``
parameters and the ``Inference-Header-Content-Length`` header). Pure functions of bytes, headers and
numpy arrays: no I/O, no model lookup.

Binary tensor data is little-endian, row-major, unpadded; BOOL is one byte per element; BYTES is, per
element, a 4-byte little-endian length followed by the bytes. Every fault of a request raises
`BadRequest` with ``field`` naming the culprit (``"body"``, ``"inputs[1].shape"``, ...).

In JSON form, float outputs holding NaN or an infinity are written as ``null`` (JSON has no such
numbers); clients that need them exactly ask for the output in binary form.

>>> req = decode_infer_request(b'{"inputs":[{"name":"x","datatype":"FP32","shape":[1,2],"data":[1,2]}]}', {})
>>> req.inputs[0].data
array([[1., 2.]], dtype=float32)
>>> encode_infer_response("m", "1", [("y", np.array([0.5], np.float32))], req)
(b'{"model_name":"m","model_version":"1","outputs":[{"name":"y","datatype":"FP32","shape":[1],"data":[0.5]}]}', {}, 'application/json')
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from ml_processing.sdk import BadRequest, InternalError

__all__ = [
    "DATATYPES",
    "HEADER_LENGTH",
    "InferRequest",
    "RequestedOutput",
    "Tensor",
    "datatype_of",
    "decode_infer_request",
    "encode_infer_response",
    "model_metadata",
]

#: The request header naming the JSON length of a body followed by binary data (lowercase, as looked up).
HEADER_LENGTH = "inference-header-content-length"
_RESPONSE_HEADER_LENGTH = "Inference-Header-Content-Length"
_JSON = "application/json"
_OCTETS = "application/octet-stream"

#: V2 datatype -> numpy dtype of its binary form (little-endian); BYTES -> object.
DATATYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(object),
}

_BY_KIND_SIZE: dict[tuple[str, int], str] = {
    (dtype.kind, dtype.itemsize): name for name, dtype in DATATYPES.items() if name != "BYTES"
}

# numpy kinds a JSON array may parse to for each datatype family ("b" bool, "i"/"u" integers, "f" floats)
_JSON_KINDS: dict[str, str] = {"b": "b", "i": "iu", "u": "iu", "f": "iuf"}
_KIND_WORDS: dict[str, str] = {"b": "JSON booleans", "i": "JSON integers", "u": "JSON integers",
                               "f": "JSON numbers"}
_LENGTH = struct.Struct("<I")


@dataclass(frozen=True, eq=False, slots=True)
class Tensor:
    """A named input tensor; ``data`` has shape ``shape`` (BYTES: an object array of ``bytes``).

    Numeric data decoded from binary form is a read-only view of the request body.
    """

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray


@dataclass(frozen=True, slots=True)
class RequestedOutput:
    """An output the client asked for; ``binary`` sends it as binary data (Triton extension)."""

    name: str
    binary: bool


@dataclass(frozen=True, eq=False, slots=True)
class InferRequest:
    """A decoded inference request; ``outputs`` empty means every output is wanted.

    ``binary_default`` is the request's ``parameters.binary_data_output``; it is already applied to the
    listed outputs that do not say ``binary_data`` themselves. ``parameters`` is the request's
    ``parameters`` object as sent (empty when absent).
    """

    id: str | None
    inputs: list[Tensor]
    outputs: list[RequestedOutput]
    binary_default: bool
    parameters: dict[str, Any]


def decode_infer_request(body: bytes, headers: Mapping[str, str]) -> InferRequest:
    """Decode a V2 inference request body; ``headers`` has lowercase keys.

    With ``inference-header-content-length`` the body is that many bytes of JSON followed by the binary
    data of the inputs carrying ``parameters.binary_data_size``, in input order; without it the whole
    body is JSON. Raises `BadRequest` for any fault of the request.
    """
    view = memoryview(body)
    header_length = _header_length(len(view), headers)
    if header_length is None:
        doc = _load_json(view)
        binary = view[len(view):]
    else:
        doc = _load_json(view[:header_length])
        binary = view[header_length:]
    if not isinstance(doc, dict):
        raise BadRequest("the inference request must be a JSON object", field="body")

    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise BadRequest("'id' must be a string", field="id")
    parameters = _request_parameters(doc.get("parameters"))
    binary_default = parameters.get("binary_data_output", False)
    if not isinstance(binary_default, bool):
        raise BadRequest("'binary_data_output' must be true or false", field="parameters.binary_data_output")

    inputs = _decode_inputs(doc.get("inputs"), binary, header_length is not None)
    outputs = _decode_outputs(doc.get("outputs"), binary_default)
    return InferRequest(request_id, inputs, outputs, binary_default, parameters)


def encode_infer_response(model_name: str, model_version: str | None, outputs: Sequence[tuple[str, np.ndarray]],
                          request: InferRequest) -> tuple[bytes, dict[str, str], str]:
    """Encode a V2 inference response: ``(body, extra headers, content type)``.

    When the request lists outputs, only those are sent, in the request's order; a listed output the model
    did not produce raises `BadRequest` (``field`` ``outputs[i].name``), as does a BYTES output that is not
    UTF-8 but was asked for as JSON. Outputs sent as binary data follow the JSON in order, the extra
    headers then carry ``Inference-Header-Content-Length`` and the content type is
    ``application/octet-stream``; otherwise the body is JSON, ``application/json``, no extra header.
    In JSON form NaN and infinities are ``null``. BYTES elements: bytes as they are, str as UTF-8,
    anything else as its ``str()``.
    """
    entries: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    any_binary = False
    for name, array, binary, field in _selected_outputs(model_name, outputs, request):
        datatype = datatype_of(array)
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        if binary:
            raw = _binary_data(array, datatype)
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
            any_binary = True
        else:
            entry["data"] = _json_data(array, datatype, name, field)
        entries.append(entry)

    doc: dict[str, Any] = {"model_name": model_name}
    if model_version is not None:
        doc["model_version"] = model_version
    if request.id is not None:
        doc["id"] = request.id
    doc["outputs"] = entries
    header = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    if not any_binary:
        return header, {}, _JSON
    return b"".join((header, *chunks)), {_RESPONSE_HEADER_LENGTH: str(len(header))}, _OCTETS


def datatype_of(array: np.ndarray) -> str:
    """The V2 datatype of a numpy array; object, bytes and str arrays are BYTES.

    Raises `InternalError` for dtypes V2 cannot carry (complex, datetime, structured, ...).
    """
    dtype = array.dtype
    if dtype.kind in "OSU":
        return "BYTES"
    datatype = _BY_KIND_SIZE.get((dtype.kind, dtype.itemsize))
    if datatype is None:
        raise InternalError(f"numpy dtype {dtype} has no V2 datatype")
    return datatype


def model_metadata(name: str, versions: Sequence[str], platform: str,
                   inputs: Sequence[tuple[str, str, Sequence[int]]],
                   outputs: Sequence[tuple[str, str, Sequence[int]]]) -> dict[str, Any]:
    """The V2 model metadata object; tensors are ``(name, datatype, shape)``, -1 for a variable dimension."""
    return {
        "name": name,
        "versions": list(versions),
        "platform": platform,
        "inputs": [_tensor_metadata(tensor) for tensor in inputs],
        "outputs": [_tensor_metadata(tensor) for tensor in outputs],
    }


# request


def _header_length(body_length: int, headers: Mapping[str, str]) -> int | None:
    value = headers.get(HEADER_LENGTH)
    if value is None:
        return None
    text = value.strip()
    if not (text.isascii() and text.isdigit()):
        raise BadRequest(f"Inference-Header-Content-Length {value!r} is not a non-negative integer",
                         field=HEADER_LENGTH)
    length = int(text)
    if length > body_length:
        raise BadRequest(f"Inference-Header-Content-Length {length} exceeds the body's {body_length} bytes",
                         field=HEADER_LENGTH)
    return length


def _load_json(data: memoryview) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the inference request is not valid JSON: {exc}", field="body") from None


def _request_parameters(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadRequest("'parameters' must be a JSON object", field="parameters")
    return value


def _decode_inputs(raw: Any, binary: memoryview, has_header: bool) -> list[Tensor]:
    if not isinstance(raw, list):
        raise BadRequest("the request needs an 'inputs' array", field="inputs")
    tensors: list[Tensor] = []
    offset = 0
    for index, raw_input in enumerate(raw):
        tensor, offset = _decode_input(raw_input, index, binary, offset, has_header)
        tensors.append(tensor)
    if len(tensors) > 1:
        _check_unique([tensor.name for tensor in tensors], "input", "inputs")
    if offset != len(binary):
        raise BadRequest(f"{len(binary) - offset} bytes of binary data after the JSON header belong to no input",
                         field="body")
    return tensors


def _check_unique(names: list[str], what: str, field: str) -> None:
    seen: set[str] = set()
    for index, name in enumerate(names):
        if name in seen:
            raise BadRequest(f"{what} {name!r} appears twice", field=f"{field}[{index}].name")
        seen.add(name)


def _decode_input(raw: Any, index: int, binary: memoryview, offset: int,
                  has_header: bool) -> tuple[Tensor, int]:
    if not isinstance(raw, dict):
        raise BadRequest(f"inputs[{index}] must be a JSON object", field=f"inputs[{index}]")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise BadRequest(f"inputs[{index}] needs a non-empty string 'name'", field=f"inputs[{index}].name")
    datatype = raw.get("datatype")
    if not isinstance(datatype, str) or datatype not in DATATYPES:
        raise BadRequest(f"input {name!r} has datatype {datatype!r}; expected one of {', '.join(DATATYPES)}",
                         field=f"inputs[{index}].datatype")
    shape = _shape(raw.get("shape"), name, index)
    count = math.prod(shape)
    parameters = raw.get("parameters")
    size = None
    if parameters is not None:
        if not isinstance(parameters, dict):
            raise BadRequest(f"input {name!r}: 'parameters' must be a JSON object",
                             field=f"inputs[{index}].parameters")
        if "shared_memory_region" in parameters:
            raise BadRequest(f"input {name!r}: shared memory is not supported",
                             field=f"inputs[{index}].parameters.shared_memory_region")
        size = parameters.get("binary_data_size")

    if size is None:
        if "data" not in raw:
            raise BadRequest(f"input {name!r} has neither 'data' nor parameters.binary_data_size",
                             field=f"inputs[{index}].data")
        data = _json_tensor(raw["data"], datatype, shape, count, name, index)
        return Tensor(name, datatype, shape, data.reshape(shape)), offset

    if "data" in raw:
        raise BadRequest(f"input {name!r} has both 'data' and parameters.binary_data_size",
                         field=f"inputs[{index}].data")
    if type(size) is not int or size < 0:
        raise BadRequest(f"input {name!r}: binary_data_size must be a non-negative integer",
                         field=f"inputs[{index}].parameters.binary_data_size")
    end = offset + size
    if end > len(binary):
        missing = "" if has_header else " (the request has no Inference-Header-Content-Length header)"
        raise BadRequest(f"input {name!r} needs {size} bytes of binary data at offset {offset} "
                         f"but {len(binary) - offset} remain{missing}",
                         field=f"inputs[{index}].parameters.binary_data_size")
    data = _binary_tensor(binary[offset:end], datatype, shape, count, name, index)
    return Tensor(name, datatype, shape, data.reshape(shape)), end


def _shape(value: Any, name: str, index: int) -> tuple[int, ...]:
    if isinstance(value, list):
        for dim in value:
            if type(dim) is not int or dim < 0:
                break
        else:
            return tuple(value)
    raise BadRequest(f"input {name!r} has shape {value!r}; expected an array of non-negative integers",
                     field=f"inputs[{index}].shape")


def _count_mismatch(name: str, found: int, shape: tuple[int, ...], count: int, index: int) -> BadRequest:
    return BadRequest(f"input {name!r} holds {found} elements but shape {list(shape)} needs {count}",
                      field=f"inputs[{index}].shape")


def _bad_data(name: str, problem: str, index: int) -> BadRequest:
    return BadRequest(f"input {name!r}: 'data' {problem}", field=f"inputs[{index}].data")


def _json_tensor(data: Any, datatype: str, shape: tuple[int, ...], count: int, name: str,
                 index: int) -> np.ndarray:
    if not isinstance(data, list):
        raise _bad_data(name, "must be a JSON array", index)
    if datatype == "BYTES":
        return _json_bytes(data, shape, count, name, index)
    try:
        array = np.asarray(data)
    except (ValueError, TypeError):
        raise _bad_data(name, "is not a rectangular array", index) from None
    if array.size != count:
        raise _count_mismatch(name, array.size, shape, count, index)
    target = DATATYPES[datatype]
    if array.dtype == target or count == 0:
        return array.astype(target, copy=False)
    if array.dtype.kind not in _JSON_KINDS[target.kind]:
        raise _bad_data(name, f"of a {datatype} input must hold {_KIND_WORDS[target.kind]}", index)
    if target.kind in "iu":
        limits = np.iinfo(target)
        if int(array.min()) < limits.min or int(array.max()) > limits.max:
            raise _bad_data(name, f"holds values outside the range of {datatype}", index)
        return array.astype(target)
    if target.itemsize == 8:
        return array.astype(target)
    with np.errstate(over="ignore"):
        return array.astype(target)


def _json_bytes(data: list[Any], shape: tuple[int, ...], count: int, name: str, index: int) -> np.ndarray:
    try:
        flat = np.asarray(data, dtype=object).ravel()
    except (ValueError, TypeError):
        raise _bad_data(name, "is not a rectangular array", index) from None
    if flat.size != count:
        raise _count_mismatch(name, flat.size, shape, count, index)
    try:
        encoded = [item.encode() for item in flat]
    except (AttributeError, UnicodeEncodeError):
        raise _bad_data(name, "of a BYTES input must hold strings", index) from None
    return _object_array(encoded)


def _binary_tensor(buffer: memoryview, datatype: str, shape: tuple[int, ...], count: int, name: str,
                   index: int) -> np.ndarray:
    if datatype == "BYTES":
        elements = _split_bytes(buffer, name, index)
        if len(elements) != count:
            raise _count_mismatch(name, len(elements), shape, count, index)
        return _object_array(elements)
    dtype = DATATYPES[datatype]
    if len(buffer) != count * dtype.itemsize:
        raise BadRequest(f"input {name!r} has {len(buffer)} bytes of binary data but shape {list(shape)} "
                         f"of {datatype} needs {count * dtype.itemsize}", field=f"inputs[{index}].shape")
    if datatype == "BOOL":
        return np.not_equal(np.frombuffer(buffer, dtype=np.uint8), 0)
    return np.frombuffer(buffer, dtype=dtype)


def _split_bytes(buffer: memoryview, name: str, index: int) -> list[bytes]:
    elements: list[bytes] = []
    position, end = 0, len(buffer)
    while position < end:
        if position + 4 > end:
            raise BadRequest(f"input {name!r}: BYTES binary data ends inside an element length",
                             field=f"inputs[{index}]")
        (length,) = _LENGTH.unpack_from(buffer, position)
        position += 4
        if position + length > end:
            raise BadRequest(f"input {name!r}: BYTES element {len(elements)} claims {length} bytes "
                             f"but {end - position} remain", field=f"inputs[{index}]")
        elements.append(bytes(buffer[position:position + length]))
        position += length
    return elements


def _object_array(items: list[bytes]) -> np.ndarray:
    array = np.empty(len(items), dtype=object)
    array[:] = items
    return array


def _decode_outputs(raw: Any, binary_default: bool) -> list[RequestedOutput]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise BadRequest("'outputs' must be a JSON array", field="outputs")
    outputs = [_decode_output(raw_output, index, binary_default) for index, raw_output in enumerate(raw)]
    if len(outputs) > 1:
        _check_unique([output.name for output in outputs], "output", "outputs")
    return outputs


def _decode_output(raw: Any, index: int, binary_default: bool) -> RequestedOutput:
    if not isinstance(raw, dict):
        raise BadRequest(f"outputs[{index}] must be a JSON object", field=f"outputs[{index}]")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise BadRequest(f"outputs[{index}] needs a non-empty string 'name'", field=f"outputs[{index}].name")
    parameters = raw.get("parameters")
    if parameters is None:
        return RequestedOutput(name, binary_default)
    if not isinstance(parameters, dict):
        raise BadRequest(f"output {name!r}: 'parameters' must be a JSON object", field=f"outputs[{index}].parameters")
    for unsupported, what in (("classification", "classification"), ("shared_memory_region", "shared memory")):
        if unsupported in parameters:
            raise BadRequest(f"output {name!r}: {what} is not supported",
                             field=f"outputs[{index}].parameters.{unsupported}")
    binary = parameters.get("binary_data", binary_default)
    if not isinstance(binary, bool):
        raise BadRequest(f"output {name!r}: 'binary_data' must be true or false",
                         field=f"outputs[{index}].parameters.binary_data")
    return RequestedOutput(name, binary)


# response


def _selected_outputs(model_name: str, outputs: Sequence[tuple[str, np.ndarray]],
                      request: InferRequest) -> list[tuple[str, np.ndarray, bool, str]]:
    """``(name, array, binary, field naming the choice of form)`` for each output to send."""
    if not request.outputs:
        return [(name, array, request.binary_default, "parameters.binary_data_output") for name, array in outputs]
    produced = dict(outputs)
    selected = []
    for index, wanted in enumerate(request.outputs):
        array = produced.get(wanted.name)
        if array is None:
            raise BadRequest(f"model {model_name!r} has no output {wanted.name!r}", field=f"outputs[{index}].name")
        selected.append((wanted.name, array, wanted.binary, f"outputs[{index}].parameters.binary_data"))
    return selected


def _binary_data(array: np.ndarray, datatype: str) -> bytes:
    if datatype == "BYTES":
        return b"".join(part for item in array.ravel() for part in _length_prefixed(item))
    return array.astype(DATATYPES[datatype], copy=False).tobytes()


def _length_prefixed(item: Any) -> tuple[bytes, bytes]:
    raw = _element_bytes(item)
    return _LENGTH.pack(len(raw)), raw


def _element_bytes(item: Any) -> bytes:
    """A BYTES element: bytes as they are, anything else as its UTF-8 ``str()``."""
    if isinstance(item, bytes):
        return item
    if isinstance(item, bytearray | memoryview):
        return bytes(item)
    return str(item).encode()


def _json_data(array: np.ndarray, datatype: str, name: str, field: str) -> Any:
    if datatype != "BYTES":
        return np.ascontiguousarray(array.astype(DATATYPES[datatype], copy=False)).reshape(-1)
    try:
        return [item if isinstance(item, str) else _element_bytes(item).decode() for item in array.ravel()]
    except UnicodeDecodeError:
        raise BadRequest(f"output {name!r} holds bytes that are not UTF-8; request it as binary data",
                         field=field) from None


def _tensor_metadata(tensor: tuple[str, str, Sequence[int]]) -> dict[str, Any]:
    name, datatype, shape = tensor
    return {"name": name, "datatype": datatype, "shape": list(shape)}
