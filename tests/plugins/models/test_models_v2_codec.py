"""The Open Inference Protocol codec against the official client: requests built by tritonclient decode to the
same tensors, responses encoded here parse back in tritonclient to the same arrays, bad requests name the field."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import orjson
import pytest

from ml_processing.core.errors import BadRequest, InternalError
from ml_processing.plugins.models.v2 import (
    InferRequest,
    RequestedOutput,
    datatype_of,
    decode_infer_request,
    encode_infer_response,
    model_metadata,
)

httpclient = pytest.importorskip("tritonclient.http")
triton_utils = pytest.importorskip("tritonclient.http._utils")

ARRAYS: dict[str, np.ndarray] = {
    "FP32": np.array([[0.5, -1.25, 3.0], [1e-3, 2e10, -0.0]], dtype=np.float32),
    "FP64": np.array([1 / 3, -2.5e-300, 7.0], dtype=np.float64),
    "INT64": np.array([[2**62, -(2**63)], [0, 7]], dtype=np.int64),
    "BOOL": np.array([[True, False, True]], dtype=bool),
    "BYTES": np.array([[b"abc", b""], ["\u00e9t\u00e9".encode(), b"x y"]], dtype=object),
}
RAW_BYTES = np.array([b"\x00\xff\xfe", b"\x00", b""], dtype=object)  # not UTF-8: binary form only


def infer_input(name: str, array: np.ndarray, binary: bool) -> Any:
    tensor = httpclient.InferInput(name, list(array.shape), datatype_of(array))
    return tensor.set_data_from_numpy(array, binary_data=binary)


def client_request(inputs: list[Any], outputs: list[Any] | None = None, request_id: str = "",
                   parameters: dict[str, Any] | None = None) -> tuple[bytes, dict[str, str]]:
    """The body and headers of tritonclient's HTTP ``infer`` for these inputs and outputs."""
    body, json_size = triton_utils._get_inference_request(
        inputs=inputs, request_id=request_id, outputs=outputs, sequence_id=0, sequence_start=False,
        sequence_end=False, priority=0, timeout=None, custom_parameters=parameters)
    headers = {} if json_size is None else {"inference-header-content-length": str(json_size)}
    return body, headers


def client_result(body: bytes, headers: dict[str, str]) -> Any:
    """Parse a response body as tritonclient's HTTP client does."""
    length = headers.get("Inference-Header-Content-Length")
    return httpclient.InferResult.from_response_body(body, verbose=False,
                                                     header_length=None if length is None else int(length))


def as_bytes(value: Any) -> bytes:
    """A BYTES element as bytes (tritonclient returns JSON BYTES elements as str)."""
    return value.encode() if isinstance(value, str) else bytes(value)


def assert_same(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.shape == expected.shape
    if expected.dtype.kind in "OSU":
        assert actual.dtype == object
        assert [as_bytes(v) for v in actual.ravel()] == [as_bytes(v) for v in expected.ravel()]
    else:
        assert actual.dtype == expected.dtype
        np.testing.assert_array_equal(actual, expected)


def decode(doc: Any, tail: bytes | None = None) -> InferRequest:
    header = orjson.dumps(doc)
    if tail is None:
        return decode_infer_request(header, {})
    return decode_infer_request(header + tail, {"inference-header-content-length": str(len(header))})


# requests


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize("datatype", list(ARRAYS))
def test_client_request_decodes_to_the_same_tensor(datatype: str, binary: bool) -> None:
    array = ARRAYS[datatype]
    body, headers = client_request([infer_input("x", array, binary)], [httpclient.InferRequestedOutput("y")])
    assert ("inference-header-content-length" in headers) is binary
    request = decode_infer_request(body, headers)
    (tensor,) = request.inputs
    assert (tensor.name, tensor.datatype, tensor.shape) == ("x", datatype, array.shape)
    assert_same(tensor.data, array)


def test_binary_bytes_need_not_be_utf8() -> None:
    body, headers = client_request([infer_input("raw", RAW_BYTES, True)])
    assert_same(decode_infer_request(body, headers).inputs[0].data, RAW_BYTES)


def test_mixed_request_keeps_input_order_and_binary_offsets() -> None:
    inputs = [infer_input("a", ARRAYS["FP64"], True), infer_input("b", ARRAYS["INT64"], False),
              infer_input("c", ARRAYS["BYTES"], True), infer_input("d", ARRAYS["BOOL"], False),
              infer_input("e", ARRAYS["FP32"], True)]
    outputs = [httpclient.InferRequestedOutput("p", binary_data=True),
               httpclient.InferRequestedOutput("q", binary_data=False)]
    body, headers = client_request(inputs, outputs, request_id="req-7", parameters={"threshold": 0.5})
    request = decode_infer_request(body, headers)
    assert request.id == "req-7"
    assert [t.name for t in request.inputs] == ["a", "b", "c", "d", "e"]
    for tensor, name in zip(request.inputs, ["FP64", "INT64", "BYTES", "BOOL", "FP32"], strict=True):
        assert tensor.datatype == name
        assert_same(tensor.data, ARRAYS[name])
    assert request.outputs == [RequestedOutput("p", True), RequestedOutput("q", False)]
    assert request.binary_default is False
    assert request.parameters == {"threshold": 0.5}


def test_no_requested_outputs_means_all_in_binary_by_default() -> None:
    body, headers = client_request([infer_input("x", ARRAYS["FP32"], False)])
    request = decode_infer_request(body, headers)
    assert request.id is None
    assert request.outputs == []
    assert request.binary_default is True


def test_binary_data_output_is_the_default_for_outputs_that_do_not_say() -> None:
    request = decode({"inputs": [], "parameters": {"binary_data_output": True},
                      "outputs": [{"name": "a"}, {"name": "b", "parameters": {"binary_data": False}}]})
    assert request.outputs == [RequestedOutput("a", True), RequestedOutput("b", False)]


def test_json_data_may_be_nested_row_major() -> None:
    request = decode({"inputs": [
        {"name": "f", "datatype": "FP32", "shape": [2, 2], "data": [[1, 2.5], [3, 4]]},
        {"name": "i", "datatype": "INT8", "shape": [3, 1], "data": [[-128], [0], [127]]},
        {"name": "s", "datatype": "BYTES", "shape": [2], "data": [["x"], ["yz"]]},
        {"name": "u", "datatype": "UINT64", "shape": [1], "data": [2**64 - 1]},
    ]})
    f, i, s, u = request.inputs
    assert_same(f.data, np.array([[1, 2.5], [3, 4]], dtype=np.float32))
    assert_same(i.data, np.array([[-128], [0], [127]], dtype=np.int8))
    assert_same(s.data, np.array([b"x", b"yz"], dtype=object))
    assert_same(u.data, np.array([2**64 - 1], dtype=np.uint64))


def test_empty_and_scalar_tensors() -> None:
    request = decode({"inputs": [{"name": "e", "datatype": "BOOL", "shape": [0, 3], "data": []},
                                 {"name": "s", "datatype": "FP64", "shape": [], "data": [2.0]},
                                 {"name": "b", "datatype": "BYTES", "shape": [0],
                                  "parameters": {"binary_data_size": 0}},
                                 {"name": "n", "datatype": "INT16", "shape": [2, 0],
                                  "parameters": {"binary_data_size": 0}}]}, tail=b"")
    e, s, b, n = request.inputs
    assert e.data.shape == (0, 3) and e.data.dtype == bool
    assert s.data.shape == () and s.data == 2.0
    assert b.data.shape == (0,) and b.data.dtype == object
    assert n.data.shape == (2, 0) and n.data.dtype == np.int16


def test_header_length_equal_to_body_is_all_json() -> None:
    body = orjson.dumps({"inputs": [{"name": "x", "datatype": "INT32", "shape": [1], "data": [5]}]})
    request = decode_infer_request(body, {"inference-header-content-length": str(len(body))})
    assert_same(request.inputs[0].data, np.array([5], dtype=np.int32))


# responses


def respond(outputs: dict[str, np.ndarray], requested: list[RequestedOutput], binary_default: bool = False,
            request_id: str | None = None, version: str | None = "3") -> tuple[bytes, dict[str, str], str]:
    request = InferRequest(request_id, [], requested, binary_default, {})
    return encode_infer_response("model", version, list(outputs.items()), request)


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_response_parses_in_the_client(binary: bool) -> None:
    names = [n for n in ARRAYS if n != "BYTES" or not binary] + (["BYTES"] if binary else [])
    body, headers, content_type = respond({n: ARRAYS[n] for n in names},
                                          [RequestedOutput(n, binary) for n in names], request_id="r1")
    if binary:
        assert content_type == "application/octet-stream"
        assert int(headers["Inference-Header-Content-Length"]) < len(body)
    else:
        assert (content_type, headers) == ("application/json", {})
    result = client_result(body, headers)
    response = result.get_response()
    assert (response["model_name"], response["model_version"], response["id"]) == ("model", "3", "r1")
    for name in names:
        assert_same(result.as_numpy(name), ARRAYS[name])
        assert result.get_output(name)["datatype"] == name
        assert ("data" in result.get_output(name)) is not binary


def test_binary_bytes_output_need_not_be_utf8() -> None:
    body, headers, _ = respond({"raw": RAW_BYTES}, [RequestedOutput("raw", True)])
    assert_same(client_result(body, headers).as_numpy("raw"), RAW_BYTES)


def test_mixed_response_only_sends_the_requested_outputs_in_request_order() -> None:
    outputs = {"a": ARRAYS["FP64"], "b": ARRAYS["BYTES"], "c": ARRAYS["INT64"], "d": ARRAYS["FP32"]}
    body, headers, content_type = respond(outputs, [RequestedOutput("d", True), RequestedOutput("b", False),
                                                    RequestedOutput("a", True)])
    assert content_type == "application/octet-stream"
    result = client_result(body, headers)
    assert [o["name"] for o in result.get_response()["outputs"]] == ["d", "b", "a"]
    for name in "dba":
        assert_same(result.as_numpy(name), outputs[name])
    assert result.get_output("c") is None and result.as_numpy("c") is None
    assert result.get_output("d")["parameters"] == {"binary_data_size": ARRAYS["FP32"].nbytes}


def test_all_outputs_follow_binary_default_when_none_are_listed() -> None:
    outputs = {"a": ARRAYS["FP32"], "b": ARRAYS["BOOL"]}
    for binary_default in (True, False):
        body, headers, _ = respond(outputs, [], binary_default=binary_default, version=None)
        result = client_result(body, headers)
        assert "model_version" not in result.get_response() and "id" not in result.get_response()
        for name, array in outputs.items():
            assert_same(result.as_numpy(name), array)
            assert ("parameters" in result.get_output(name)) is binary_default


def test_nan_and_infinity_are_null_in_json_and_exact_in_binary() -> None:
    array = np.array([1.0, np.nan, np.inf, -np.inf], dtype=np.float32)
    body, headers, _ = respond({"y": array}, [RequestedOutput("y", False)])
    assert json.loads(body)["outputs"][0]["data"] == [1.0, None, None, None]  # strict JSON
    assert np.isnan(client_result(body, headers).as_numpy("y")[1:]).all()
    body, headers, _ = respond({"y": array}, [RequestedOutput("y", True)])
    np.testing.assert_array_equal(client_result(body, headers).as_numpy("y"), array)


def test_other_array_layouts_encode_as_their_values() -> None:
    outputs = {"t": np.arange(12, dtype=np.float64).reshape(3, 4).T, "be": np.arange(3, dtype=">i4"),
               "fp16": np.array([0.5, 65504], dtype=np.float16), "u": np.array(["ab", "\u00e9"]),
               "s": np.array([b"ab", b"c"]), "scalar": np.array(4, dtype=np.uint16)}
    for binary in (False, True):
        body, headers, _ = respond(outputs, [RequestedOutput(n, binary) for n in outputs])
        result = client_result(body, headers)
        for name, array in outputs.items():
            got = result.as_numpy(name)
            if array.dtype.kind in "SU":
                assert_same(got, array)
            else:
                assert_same(got, array.astype(array.dtype.newbyteorder("=")))


def test_unknown_requested_output_is_a_bad_request() -> None:
    with pytest.raises(BadRequest) as err:
        respond({"a": ARRAYS["FP32"]}, [RequestedOutput("a", False), RequestedOutput("nope", False)])
    assert err.value.field == "outputs[1].name"


def test_non_utf8_bytes_asked_for_as_json_is_a_bad_request() -> None:
    with pytest.raises(BadRequest) as err:
        respond({"raw": RAW_BYTES}, [RequestedOutput("raw", False)])
    assert err.value.field == "outputs[0].parameters.binary_data"
    with pytest.raises(BadRequest) as err:
        respond({"raw": RAW_BYTES}, [])
    assert err.value.field == "parameters.binary_data_output"


# datatypes and metadata


def test_datatype_of_every_v2_type() -> None:
    expected = {np.bool_: "BOOL", np.uint8: "UINT8", np.uint16: "UINT16", np.uint32: "UINT32", np.uint64: "UINT64",
                np.int8: "INT8", np.int16: "INT16", np.int32: "INT32", np.int64: "INT64", np.float16: "FP16",
                np.float32: "FP32", np.float64: "FP64", np.object_: "BYTES", np.bytes_: "BYTES", np.str_: "BYTES"}
    for dtype, name in expected.items():
        assert datatype_of(np.zeros(1, dtype=dtype)) == name
    assert datatype_of(np.zeros(1, dtype=">f8")) == "FP64"
    for bad in (np.complex64, "datetime64[ns]", [("a", "i4")]):
        with pytest.raises(InternalError):
            datatype_of(np.zeros(1, dtype=bad))


def test_model_metadata() -> None:
    assert model_metadata("m", ["1", "2"], "sklearn", [("x", "FP32", (-1, 16))], [("y", "INT64", [-1])]) == {
        "name": "m", "versions": ["1", "2"], "platform": "sklearn",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 16]}],
        "outputs": [{"name": "y", "datatype": "INT64", "shape": [-1]}],
    }


# bad requests

FP32_2 = {"name": "x", "datatype": "FP32", "shape": [2], "data": [1.0, 2.0]}


def with_input(**changes: Any) -> dict[str, Any]:
    tensor = {**FP32_2, **changes}
    return {"inputs": [{k: v for k, v in tensor.items() if v is not None}]}


def binary_input(datatype: str, shape: list[int], size: Any) -> dict[str, Any]:
    return {"name": "x", "datatype": datatype, "shape": shape, "parameters": {"binary_data_size": size}}


JSON_CASES: dict[str, tuple[Any, str]] = {
    "array body": ([1], "body"),
    "id not a string": ({"id": 5, "inputs": []}, "id"),
    "parameters not an object": ({"inputs": [], "parameters": [1]}, "parameters"),
    "binary_data_output not bool": ({"inputs": [], "parameters": {"binary_data_output": 1}},
                                    "parameters.binary_data_output"),
    "missing inputs": ({"outputs": []}, "inputs"),
    "inputs not an array": ({"inputs": {"x": 1}}, "inputs"),
    "input not an object": ({"inputs": [5]}, "inputs[0]"),
    "missing name": (with_input(name=None), "inputs[0].name"),
    "empty name": (with_input(name=""), "inputs[0].name"),
    "unknown datatype": (with_input(datatype="FP8"), "inputs[0].datatype"),
    "BF16 unsupported": (with_input(datatype="BF16"), "inputs[0].datatype"),
    "datatype not a string": (with_input(datatype=["FP32"]), "inputs[0].datatype"),
    "missing shape": (with_input(shape=None), "inputs[0].shape"),
    "negative dim": (with_input(shape=[-1, 2]), "inputs[0].shape"),
    "float dim": (with_input(shape=[2.0]), "inputs[0].shape"),
    "bool dim": (with_input(shape=[True, 2]), "inputs[0].shape"),
    "too few elements": (with_input(shape=[3]), "inputs[0].shape"),
    "too many nested elements": (with_input(shape=[1], data=[[1.0], [2.0]]), "inputs[0].shape"),
    "missing data": (with_input(data=None), "inputs[0].data"),
    "data not an array": (with_input(shape=[1], data=1.0), "inputs[0].data"),
    "ragged data": (with_input(shape=[3], data=[[1.0], [2.0, 3.0]]), "inputs[0].data"),
    "strings for FP32": (with_input(data=["1", "2"]), "inputs[0].data"),
    "null in FP32": (with_input(data=[1.0, None]), "inputs[0].data"),
    "bools for FP32": (with_input(data=[True, False]), "inputs[0].data"),
    "floats for INT64": (with_input(datatype="INT64", data=[1.5, 2]), "inputs[0].data"),
    "out of range INT8": (with_input(datatype="INT8", data=[1, 300]), "inputs[0].data"),
    "negative UINT8": (with_input(datatype="UINT8", data=[-1, 2]), "inputs[0].data"),
    "too large INT64": (with_input(datatype="INT64", shape=[1], data=[2**63]), "inputs[0].data"),
    "numbers for BOOL": (with_input(datatype="BOOL", data=[1, 0]), "inputs[0].data"),
    "numbers for BYTES": (with_input(datatype="BYTES", data=["a", 2]), "inputs[0].data"),
    "ragged BYTES": (with_input(datatype="BYTES", data=["a", ["b", "c"]]), "inputs[0].data"),
    "input parameters not an object": (with_input(parameters=5), "inputs[0].parameters"),
    "shared memory input": (with_input(data=None, parameters={"shared_memory_region": "r"}),
                            "inputs[0].parameters.shared_memory_region"),
    "binary size without bytes": ({"inputs": [binary_input("FP32", [2], 8)]},
                                  "inputs[0].parameters.binary_data_size"),
    "data and binary size": (with_input(parameters={"binary_data_size": 8}), "inputs[0].data"),
    "negative binary size": ({"inputs": [binary_input("FP32", [2], -8)]}, "inputs[0].parameters.binary_data_size"),
    "string binary size": ({"inputs": [binary_input("FP32", [2], "8")]}, "inputs[0].parameters.binary_data_size"),
    "duplicate input": ({"inputs": [FP32_2, {**FP32_2, "datatype": "FP64"}]}, "inputs[1].name"),
    "second input bad datatype": ({"inputs": [FP32_2, {**FP32_2, "name": "y", "datatype": "fp32"}]},
                                  "inputs[1].datatype"),
    "outputs not an array": ({"inputs": [], "outputs": "y"}, "outputs"),
    "output not an object": ({"inputs": [], "outputs": ["y"]}, "outputs[0]"),
    "output without name": ({"inputs": [], "outputs": [{"parameters": {}}]}, "outputs[0].name"),
    "output parameters not an object": ({"inputs": [], "outputs": [{"name": "y", "parameters": 1}]},
                                        "outputs[0].parameters"),
    "output binary_data not bool": ({"inputs": [], "outputs": [{"name": "y", "parameters": {"binary_data": "yes"}}]},
                                    "outputs[0].parameters.binary_data"),
    "classification": ({"inputs": [], "outputs": [{"name": "y", "parameters": {"classification": 2}}]},
                       "outputs[0].parameters.classification"),
    "duplicate output": ({"inputs": [], "outputs": [{"name": "y"}, {"name": "y"}]}, "outputs[1].name"),
}


@pytest.mark.parametrize("doc, field", JSON_CASES.values(), ids=JSON_CASES.keys())
def test_bad_json_request(doc: Any, field: str) -> None:
    with pytest.raises(BadRequest) as err:
        decode(doc)
    assert err.value.field == field
    assert err.value.message


def length_prefixed(*items: bytes) -> bytes:
    return b"".join(len(item).to_bytes(4, "little") + item for item in items)


BINARY_CASES: dict[str, tuple[dict[str, Any], bytes, str]] = {
    "size past the body": ({"inputs": [binary_input("FP32", [2], 12)]}, bytes(8),
                           "inputs[0].parameters.binary_data_size"),
    "bytes left over": ({"inputs": [binary_input("FP32", [2], 8)]}, bytes(12), "body"),
    "bytes without binary inputs": ({"inputs": [FP32_2]}, b"\x00", "body"),
    "size not matching shape": ({"inputs": [binary_input("FP32", [2], 4)]}, bytes(4), "inputs[0].shape"),
    "size not a whole element": ({"inputs": [binary_input("INT64", [1], 7)]}, bytes(7), "inputs[0].shape"),
    "second input past the body": ({"inputs": [binary_input("UINT8", [2], 2), {**binary_input("INT8", [2], 2),
                                                                              "name": "y"}]},
                                   bytes(3), "inputs[1].parameters.binary_data_size"),
    "BYTES count not matching shape": ({"inputs": [binary_input("BYTES", [3], 12)]}, length_prefixed(b"ab", b"cd"),
                                       "inputs[0].shape"),
    "BYTES element past its data": ({"inputs": [binary_input("BYTES", [1], 6)]}, b"\x05\x00\x00\x00ab",
                                    "inputs[0]"),
    "BYTES length cut short": ({"inputs": [binary_input("BYTES", [2], 8)]}, length_prefixed(b"ab") + b"\x01\x00",
                               "inputs[0]"),
}


@pytest.mark.parametrize("doc, tail, field", BINARY_CASES.values(), ids=BINARY_CASES.keys())
def test_bad_binary_request(doc: dict[str, Any], tail: bytes, field: str) -> None:
    with pytest.raises(BadRequest) as err:
        decode(doc, tail)
    assert err.value.field == field


HEADER_CASES: dict[str, tuple[bytes, str, str]] = {
    "not JSON": (b"{nope", "", "body"),
    "empty body": (b"", "", "body"),
    "header not a number": (b"{}", "abc", "inference-header-content-length"),
    "negative header": (b"{}", "-1", "inference-header-content-length"),
    "header with digit separators": (b"{}", "1_0", "inference-header-content-length"),
    "header past the body": (b"{}", "3", "inference-header-content-length"),
    "header cuts the JSON": (b'{"inputs": []}', "5", "body"),
    "JSON not UTF-8": (b'{"inputs": [], "id": "\xff"}', "", "body"),
}


@pytest.mark.parametrize("body, length, field", HEADER_CASES.values(), ids=HEADER_CASES.keys())
def test_bad_body_or_header(body: bytes, length: str, field: str) -> None:
    headers = {"inference-header-content-length": length} if length else {}
    with pytest.raises(BadRequest) as err:
        decode_infer_request(body, headers)
    assert err.value.field == field


def test_damaged_client_requests_raise_only_bad_request() -> None:
    inputs = [infer_input("a", ARRAYS["FP32"], True), infer_input("b", ARRAYS["BYTES"], True),
              infer_input("c", ARRAYS["INT64"], False)]
    body, headers = client_request(inputs, [httpclient.InferRequestedOutput("y")])
    header_length = int(headers["inference-header-content-length"])
    rng = np.random.default_rng(7)
    damaged = [body[:cut] for cut in range(header_length, len(body))]
    damaged += [bytes(np.where(rng.random(len(body)) < 0.02, rng.integers(0, 256, len(body)),
                               np.frombuffer(body, np.uint8)).astype(np.uint8)) for _ in range(300)]
    for candidate in damaged:
        for length in (str(header_length), str(header_length - 1), ""):
            try:
                decode_infer_request(candidate, {"inference-header-content-length": length} if length else {})
            except BadRequest:
                pass
