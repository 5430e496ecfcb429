"""What an uploaded ONNX graph is, read without running it: the checks of the ``onnx`` kind before
onnxruntime sees the graph (`onnx_kind` then loads it and runs probe rows).

* the file parses as an ONNX model and passes ``onnx.checker``; every tensor is inside the file (external
  data would make onnxruntime read other files of the server: refused);
* the standard domains (``ai.onnx``, ``ai.onnx.ml``) are imported at opsets the installed onnxruntime
  knows (`supported_opsets`; ``ai.onnx`` from `MIN_OPSET`);
* operators of any other domain are custom (`custom_ops`), unless the model defines them itself as local
  functions (which are made of standard operators, checked the same way);
* exactly one input: a float or double tensor of shape ``[N, n_features]`` (``N`` a named or unnamed
  dynamic dimension, ``n_features`` fixed);
* outputs: see `onnx_kind`. A ``ZipMap`` at the end (skl2onnx's default for classifiers: a sequence of
  maps) is cut off (`without_zipmap`): its input, the probability tensor, is served, and its labels are the
  classes.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from typing import Any

from ml_processing.sdk import BadRequest, get_logger

log = get_logger(__name__)

#: The standard domains, as models name them.
STANDARD = {"": "ai.onnx", "ai.onnx": "ai.onnx", "ai.onnx.ml": "ai.onnx.ml"}
#: The oldest ``ai.onnx`` opset onnxruntime supports.
MIN_OPSET = 7
#: Element types of tensors: float outputs (probabilities or scores) and label outputs.
FLOATS = {1: "float32", 11: "float64"}
LABELS = {6: "int32", 7: "int64", 8: "string"}


def refuse(message: str) -> BadRequest:
    return BadRequest(message, field="artifact")


def parse(data: bytes) -> Any:
    """The ModelProto of `data`, checked by ``onnx.checker``; `BadRequest` naming what is wrong."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load_model_from_string(data)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise refuse(f"not an ONNX model: {exc}"[:300]) from None
    outside = [t.name or "(unnamed)" for t in tensors(model) if t.data_location == 1 or len(t.external_data)]
    if outside:
        raise refuse(f"tensors stored outside the file (external data) are refused: {', '.join(outside[:5])}; "
                     "save the model as one file")
    try:
        onnx.checker.check_model(model)
    except Exception as exc:  # onnx.checker.ValidationError and the C++ checker's other failures
        raise refuse(f"not a valid ONNX model: {str(exc).splitlines()[0]}"[:300]) from None
    return model


# -- walking the graph ---------------------------------------------------------------------------------------


def graphs(model: Any) -> Iterator[Any]:
    """The main graph and every subgraph (the bodies of If, Loop, Scan), depth first."""
    todo = [model.graph]
    while todo:
        graph = todo.pop()
        yield graph
        for node in graph.node:
            for attribute in node.attribute:
                if attribute.HasField("g"):
                    todo.append(attribute.g)
                todo.extend(attribute.graphs)


def nodes(model: Any) -> Iterator[Any]:
    """Every node: of the graphs, and of the model's local functions."""
    for graph in graphs(model):
        yield from graph.node
    for function in model.functions:
        yield from function.node


def tensors(model: Any) -> Iterator[Any]:
    """Every TensorProto the model holds: initializers and attribute values, of the graphs and functions."""
    for graph in graphs(model):
        yield from graph.initializer
        for sparse in graph.sparse_initializer:
            yield from (sparse.values, sparse.indices)
    for node in nodes(model):
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            if attribute.HasField("sparse_tensor"):
                yield from (attribute.sparse_tensor.values, attribute.sparse_tensor.indices)


# -- opsets and domains ---------------------------------------------------------------------------------------


@functools.cache
def supported_opsets() -> dict[str, int]:
    """The highest opset of each standard domain the installed onnxruntime knows (its operator schemas)."""
    highest = {"ai.onnx": 0, "ai.onnx.ml": 0}
    try:
        from onnxruntime.capi import _pybind_state

        schemas = _pybind_state.get_all_operator_schema()
    except (ImportError, AttributeError) as exc:  # a build without schemas: onnx's own table instead
        import onnx

        log.warning("onnxruntime_schemas_unavailable", error=str(exc))
        return {"ai.onnx": onnx.defs.onnx_opset_version(), "ai.onnx.ml": onnx.defs.onnx_opset_version("ai.onnx.ml")}
    for schema in schemas:
        domain = STANDARD.get(schema.domain)
        if domain is not None:
            highest[domain] = max(highest[domain], int(schema.since_version))
    return highest


def opsets(model: Any) -> dict[str, int]:
    """The model's opsets (domain -> version); `BadRequest` for a standard one onnxruntime cannot run."""
    import onnxruntime

    imported = {STANDARD.get(o.domain, o.domain): int(o.version) for o in model.opset_import}
    supported = supported_opsets()
    for domain, version in imported.items():
        if domain not in supported:
            continue
        lowest = MIN_OPSET if domain == "ai.onnx" else 1
        if not lowest <= version <= supported[domain]:
            raise refuse(f"opset {domain} {version} is outside what onnxruntime {onnxruntime.__version__} supports "
                         f"({lowest} to {supported[domain]})")
    if "ai.onnx" not in imported and "ai.onnx.ml" not in imported:
        raise refuse("the model imports no standard opset (ai.onnx or ai.onnx.ml)")
    return imported


def custom_ops(model: Any) -> list[str]:
    """The operators outside the standard domains (``domain:OpType``), but for the model's local functions."""
    local = {(f.domain, f.name) for f in model.functions}
    return sorted({f"{n.domain}:{n.op_type}" for n in nodes(model)
                   if n.domain not in STANDARD and (n.domain, n.op_type) not in local})


# -- the input ------------------------------------------------------------------------------------------------


def single_input(model: Any) -> tuple[str, str, int]:
    """(name, "float32" or "float64", n_features) of the one input; `BadRequest` naming the rule otherwise."""
    graph = model.graph
    constants = {t.name for t in graph.initializer} | {t.values.name for t in graph.sparse_initializer}
    inputs = [i for i in graph.input if i.name not in constants]
    if len(inputs) != 1:
        raise refuse(f"the graph has {len(inputs)} inputs ({', '.join(i.name for i in inputs)}): it must have "
                     "exactly one, a float tensor of shape [N, n_features]")
    (value,) = inputs
    kind = value.type.WhichOneof("value")
    if kind != "tensor_type" or value.type.tensor_type.elem_type not in FLOATS:
        raise refuse(f"input {value.name!r} must be a float or double tensor of shape [N, n_features], not "
                     f"{describe_type(value.type)}")
    tensor = value.type.tensor_type
    dims = list(tensor.shape.dim) if tensor.HasField("shape") else None
    shape = "unknown" if dims is None else "[" + ", ".join(_dim(d) for d in dims) + "]"
    if dims is None or len(dims) != 2:
        raise refuse(f"input {value.name!r} has shape {shape}: it must be [N, n_features]")
    batch, width = dims
    if batch.HasField("dim_value"):
        raise refuse(f"input {value.name!r} has shape {shape}: its first (batch) dimension must be dynamic "
                     "(a name such as N, or unset), so one graph answers any number of rows")
    if not width.HasField("dim_value") or width.dim_value < 1:
        raise refuse(f"input {value.name!r} has shape {shape}: its second dimension, the number of features, "
                     "must be a fixed number")
    return value.name, FLOATS[tensor.elem_type], int(width.dim_value)


def _dim(dim: Any) -> str:
    if dim.HasField("dim_value"):
        return str(dim.dim_value)
    return dim.dim_param or "None"


def describe_type(type_: Any) -> str:
    """A TypeProto as onnxruntime writes it: ``tensor(float)``, ``seq(map(int64,tensor(float)))``."""
    kind = type_.WhichOneof("value")
    if kind == "tensor_type":
        return f"tensor({_element(type_.tensor_type.elem_type)})"
    if kind == "sequence_type":
        return f"seq({describe_type(type_.sequence_type.elem_type)})"
    if kind == "map_type":
        return f"map({_element(type_.map_type.key_type)},{describe_type(type_.map_type.value_type)})"
    return str(kind)


def _element(elem_type: int) -> str:
    import onnx

    return str(onnx.helper.tensor_dtype_to_string(elem_type)).removeprefix("TensorProto.").lower()


# -- outputs and classes --------------------------------------------------------------------------------------


def without_zipmap(model: Any) -> tuple[Any, list[Any] | None]:
    """`model` with a final ZipMap cut off (its input becomes the output), and the ZipMap's class labels;
    `model` itself and None when it has no such ZipMap."""
    import onnx

    outputs = {o.name for o in model.graph.output}
    zipmaps = [n for n in model.graph.node if n.op_type == "ZipMap" and n.domain == "ai.onnx.ml"
               and n.output[0] in outputs]
    if not zipmaps:
        return model, None
    (zipmap,) = zipmaps[:1]
    labels = next((list(onnx.helper.get_attribute_value(a)) for a in zipmap.attribute
                   if a.name in ("classlabels_int64s", "classlabels_strings")), None)
    cut = onnx.ModelProto()
    cut.CopyFrom(model)
    graph = cut.graph
    index = [n.output[0] for n in graph.node].index(zipmap.output[0])
    del graph.node[index]
    position = [o.name for o in graph.output].index(zipmap.output[0])
    graph.output.remove(graph.output[position])
    graph.output.insert(position, onnx.helper.make_tensor_value_info(zipmap.input[0], onnx.TensorProto.FLOAT, None))
    return cut, [_plain(label) for label in labels] if labels is not None else None


def class_lists(model: Any, n_classes: int | None, zipmap: list[Any] | None = None) -> list[list[Any]]:
    """The lists of class labels a classifier graph may answer in, most trusted first: its metadata
    ``classes`` (a JSON list), the labels of a final ZipMap (`zipmap`) and of its ai.onnx.ml classifier
    operators, the 1-D constants an ArrayFeatureExtractor or Gather picks labels from (skl2onnx's networks),
    then the indexes. Lists of `n_classes` labels (of any length for None; then no indexes)."""
    import onnx
    from onnx import numpy_helper

    def fits(values: list[Any]) -> bool:
        return bool(values) and (n_classes is None or len(values) == n_classes)

    found: list[list[Any]] = []
    meta = {p.key: p.value for p in model.metadata_props}
    if "classes" in meta:
        try:
            classes = json.loads(meta["classes"])
        except ValueError:
            classes = None
        if not isinstance(classes, list) or not fits(classes) or \
                not all(isinstance(c, (int, str)) and not isinstance(c, bool) for c in classes):
            raise refuse(f"metadata 'classes' must be a JSON list of {n_classes or 'the'} class labels (integers "
                         f"or strings), got {meta['classes']!r:.80}")
        found.append(classes)
    if zipmap is not None and fits(zipmap):
        found.append(zipmap)
    for node in nodes(model):
        for attribute in node.attribute:
            if attribute.name in ("classlabels_int64s", "classlabels_strings", "classlabels_ints"):
                values = [_plain(v) for v in onnx.helper.get_attribute_value(attribute)]
                if fits(values):
                    found.append(values)
    constants = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type in ("ArrayFeatureExtractor", "Gather") and node.input and node.input[0] in constants:
            array = numpy_helper.to_array(constants[node.input[0]])
            if array.ndim == 1 and array.dtype.kind in "iuOSU" and fits(array.tolist()):
                found.append([_plain(v) for v in array.tolist()])
    if n_classes is not None:
        found.append(list(range(n_classes)))
    unique: list[list[Any]] = []
    for classes in found:
        if classes not in unique:
            unique.append(classes)
    return unique


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value.item() if hasattr(value, "item") else value
