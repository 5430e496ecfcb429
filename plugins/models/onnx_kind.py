"""The ``onnx`` model kind: any network or pipeline exported to ONNX (a PyTorch or Keras network, a
scikit-learn MLP or pipeline converted with skl2onnx), served by onnxruntime on the fast path's settings
(one thread, sequential: `onnx_path.session`).

An upload is checked before it is stored (`onnx_graph` reads the file without running it; then onnxruntime
loads it and answers `PROBE_ROWS` probe rows), and refused with a 400 naming what is wrong:

* one input, a float or double tensor ``[N, n_features]`` (N dynamic); standard opsets the installed
  onnxruntime supports; no external data;
* operators outside ``ai.onnx`` and ``ai.onnx.ml`` only with ``[plugins.models] onnx_custom_ops = true``,
  and only those onnxruntime itself implements (it loads no custom-op library);
* outputs, one or two, each with one row per input row:

  - probabilities: a float tensor ``[N, classes]`` (at least two columns), each row in [0, 1] summing to 1
    (end a network on logits with a Softmax); with or without a label tensor ``[N]`` beside it (integers or
    strings). The answer's label is the class of the highest probability; the classes are the metadata
    ``classes`` (a JSON list in the model's ``metadata_props``), else those the graph names (a ZipMap, a
    classifier operator, the constant skl2onnx picks labels from), else the indexes ``0 .. classes - 1``;
    where the graph also outputs labels, the classes chosen are the first list the labels agree with;
  - a label tensor alone: a classifier without probabilities, whose classes the graph or the metadata
    ``classes`` name;
  - one score: a float tensor ``[N]`` or ``[N, 1]``: a regressor.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ml_processing.sdk import BadRequest
from ml_processing.sdk.model import CLASSIFICATION, REGRESSION, Described, ModelKind, Prediction, Predictor
from ml_processing.sdk.synthetic import SEED

from .onnx_graph import class_lists, custom_ops, opsets, parse, refuse, single_input, without_zipmap
from .onnx_path import session

#: Rows run through an uploaded graph to read its outputs (the first is all zeros).
PROBE_ROWS = 16
FLOAT_TYPES = ("tensor(float)", "tensor(double)")
LABEL_TYPES = ("tensor(int64)", "tensor(int32)", "tensor(string)")
OUTPUT_RULE = ("outputs must be probabilities [N, classes] with or without a label [N], a label [N] alone, or "
               "one score [N] or [N, 1]")


@dataclass(frozen=True)
class Outputs:
    """What a graph answers: which output holds what, the task and the classes."""

    task: str
    classes: list[Any] | None
    probabilities: str | None = None
    label: str | None = None
    score: str | None = None


class OnnxKind(ModelKind):
    name = "onnx"
    doc = ("a network or pipeline exported to ONNX (PyTorch, Keras, skl2onnx): one float input [N, n_features]; "
           "outputs probabilities and/or a label, or one score; served by onnxruntime")
    formats = ("onnx",)

    def prepare(self) -> None:
        import onnxruntime  # noqa: F401  (loading needs no more; `onnx` is for checking uploads)

    def check(self, data: bytes, fmt: str) -> Described:
        model = parse(data)
        imported = opsets(model)
        custom = custom_ops(model)
        name, dtype, n_features = single_input(model)
        served, zipmap_classes = without_zipmap(model)
        try:
            runner = session(data if served is model else served.SerializeToString())
        except Exception as exc:  # onnxruntime's load failures are one untyped exception per cause
            if custom:
                raise refuse(f"the graph uses operators outside the standard ONNX domains that onnxruntime does "
                             f"not implement: {', '.join(custom[:5])} (custom operators are refused unless "
                             "[plugins.models] onnx_custom_ops = true, and onnxruntime loads no custom-op "
                             "library)") from None
            raise refuse(f"onnxruntime cannot load the graph: {str(exc).splitlines()[0]}"[:300]) from None
        outputs = read_outputs(runner, served, name, np.dtype(dtype), n_features, zipmap_classes)
        details = {"input": name, "dtype": dtype, "probabilities": outputs.probabilities, "label": outputs.label,
                   "score": outputs.score, "zipmap": zipmap_classes is not None, "opsets": imported,
                   "custom_ops": custom, "nodes": len(model.graph.node),
                   "producer": f"{model.producer_name} {model.producer_version}".strip()}
        return Described(outputs.task, n_features, outputs.classes, details)

    def artifact_name(self, fmt: str) -> str:
        return "network.onnx"

    def load(self, directory: Path, manifest: Mapping[str, Any], options: Mapping[str, Any]) -> OnnxPredictor:
        details = manifest["details"]
        if details.get("custom_ops") and not options.get("onnx_custom_ops", False):
            raise PermissionError(f"it uses operators outside the standard ONNX domains "
                                  f"({', '.join(details['custom_ops'][:5])}) and [plugins.models] onnx_custom_ops "
                                  "is false")
        data = (directory / manifest["artifact"]).read_bytes()
        if details.get("zipmap"):
            data = without_zipmap(parse(data))[0].SerializeToString()
        return OnnxPredictor(session(data), manifest)

    def example(self) -> tuple[bytes, str]:
        """A small network over 4 features (the contract checks' round trip)."""
        return network(4, 8, 2), "onnx"


def read_outputs(runner: Any, model: Any, name: str, dtype: np.dtype, n_features: int,
                 zipmap_classes: list[Any] | None) -> Outputs:
    """Which output is what, from the declared types and the answers to probe rows; `BadRequest` by the rules."""
    declared = [(o.name, o.type) for o in runner.get_outputs()]
    floats = [n for n, t in declared if t in FLOAT_TYPES]
    labels = [n for n, t in declared if t in LABEL_TYPES]
    other = [f"{n} ({t})" for n, t in declared if t not in FLOAT_TYPES + LABEL_TYPES]
    if other or len(floats) > 1 or len(labels) > 1 or not declared:
        listed = ", ".join(f"{n} ({t})" for n, t in declared) or "none"
        raise refuse(f"{OUTPUT_RULE}; the graph outputs {listed}")
    rows = np.vstack([np.zeros((1, n_features)), np.random.default_rng(SEED).normal(size=(PROBE_ROWS - 1, n_features))])
    answers = _probe(runner, name, rows.astype(dtype))
    label = answers[labels[0]].reshape(-1) if labels else None
    if not floats:
        seen = set(label.tolist())
        classes = next((c for c in class_lists(model, None, zipmap_classes) if seen <= set(c)), None)
        if classes is None:
            raise refuse(f"a label output without probabilities needs its classes: name them in the model's "
                         f"metadata_props 'classes' (a JSON list); the probe rows answered {sorted(seen)[:10]}")
        return Outputs(CLASSIFICATION, classes, label=labels[0])
    values = answers[floats[0]]
    if values.ndim == 1 or values.shape[1] == 1:
        if labels:
            raise refuse(f"{OUTPUT_RULE}; the graph outputs a label beside one score column ({floats[0]})")
        if not np.isfinite(values).all():
            raise refuse(f"output {floats[0]!r} is not finite on the probe rows")
        return Outputs(REGRESSION, None, score=floats[0])
    _check_probabilities(floats[0], values)
    candidates = class_lists(model, values.shape[1], zipmap_classes)
    if label is None:
        return Outputs(CLASSIFICATION, candidates[0], probabilities=floats[0])
    top = np.sort(values, axis=1)
    clear = top[:, -1] - top[:, -2] > 1e-6  # ties may break either way
    for classes in candidates:
        if np.asarray(classes, dtype=object)[values.argmax(axis=1)][clear].tolist() == label[clear].tolist():
            return Outputs(CLASSIFICATION, classes, probabilities=floats[0], label=labels[0])
    raise refuse(f"the label output {labels[0]!r} does not follow the probabilities under any class list the "
                 f"graph names ({candidates}): name the classes in probability order in the model's "
                 "metadata_props 'classes' (a JSON list)")


def _probe(runner: Any, name: str, rows: np.ndarray) -> dict[str, np.ndarray]:
    """Each output's answer to `rows`, checked to have one row per input row (also for a single row)."""
    answers: dict[str, np.ndarray] = {}
    for batch in (rows, rows[:1]):
        try:
            results = runner.run(None, {name: batch})
        except Exception as exc:  # onnxruntime's run failures are untyped
            raise refuse(f"onnxruntime failed on {len(batch)} probe rows: {str(exc).splitlines()[0]}"[:300]) from None
        for output, result in zip(runner.get_outputs(), results, strict=True):
            result = np.asarray(result)
            if result.ndim == 0 or result.shape[0] != len(batch) or result.ndim > 2:
                raise refuse(f"output {output.name!r} has shape {list(result.shape)} for {len(batch)} rows: "
                             f"{OUTPUT_RULE}")
            answers.setdefault(output.name, result)
    return answers


def _check_probabilities(name: str, values: np.ndarray) -> None:
    sums = values.sum(axis=1)
    if not np.isfinite(values).all() or values.min() < -1e-4 or values.max() > 1 + 1e-4 or \
            np.abs(sums - 1).max() > 1e-3:
        raise refuse(f"output {name!r} of {values.shape[1]} columns is not probabilities (each row in [0, 1], "
                     f"summing to 1; a probe row sums to {sums[np.abs(sums - 1).argmax()]:.4g}): end the network "
                     "with a Softmax; several regression targets are not served")


class OnnxPredictor(Predictor):
    """An uploaded graph on onnxruntime: one path, ``onnx``, for every request."""

    def __init__(self, runner: Any, manifest: Mapping[str, Any]) -> None:
        details = manifest["details"]
        self.input = details["input"]
        self.dtype = np.dtype(details["dtype"])
        self.task = manifest["task"]
        self.n_features = int(manifest["n_features"])
        self.classes = manifest.get("classes")
        self.labels = np.asarray(self.classes if self.classes is not None else [])
        self.answer = "probabilities" if details["probabilities"] else "score" if details["score"] else "label"
        self.fetch = [details[self.answer]]
        self.session = runner
        self._run = runner.run

    def predict(self, x: np.ndarray) -> Prediction:
        rows = x.astype(self.dtype, copy=False)
        if rows is not x:  # float64 values past float32's range became infinite
            finite = np.isfinite(rows)
            if not finite.flat[finite.argmin()]:  # the first False, if any (argmin: cheaper than all())
                row, column = (int(i) for i in np.argwhere(~finite)[0])
                raise BadRequest(f"row {row}, feature {column}: {x[row, column]:g} is beyond the range of float32, "
                                 "the type of this network's input")
        (out,) = self._run(self.fetch, {self.input: rows})
        if self.answer == "probabilities":
            proba = np.asarray(out, dtype=np.float64)
            return Prediction(self.labels[proba.argmax(axis=1)], proba, "onnx")
        if self.answer == "score":
            return Prediction(np.asarray(out, dtype=np.float64).reshape(-1), None, "onnx")
        return Prediction(np.asarray(out).reshape(-1), None, "onnx")

    def paths(self) -> list[str]:
        return ["onnx"]


def network(n_features: int, hidden: int, classes: int, seed: int = SEED) -> bytes:
    """A small network written with the onnx helper API: Gemm, Relu, Gemm, Softmax; input ``input``
    ``[N, n_features]``, output ``probabilities`` ``[N, classes]``.

    >>> import onnx
    >>> model = onnx.load_model_from_string(network(4, 8, 2))
    >>> [node.op_type for node in model.graph.node]
    ['Gemm', 'Relu', 'Gemm', 'Softmax']
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    weights = [numpy_helper.from_array(rng.normal(size=shape).astype(np.float32), name) for name, shape in
               (("w1", (n_features, hidden)), ("b1", (hidden,)), ("w2", (hidden, classes)), ("b2", (classes,)))]
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["input", "w1", "b1"], ["h"]), helper.make_node("Relu", ["h"], ["a"]),
         helper.make_node("Gemm", ["a", "w2", "b2"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1)],
        "network", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", n_features])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", classes])], initializer=weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="ml-processing")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def refused_by_policy(described: Described, allowed: bool) -> BadRequest | None:
    """The refusal of a graph with custom operators when ``onnx_custom_ops`` is off (None: admitted)."""
    custom = described.details.get("custom_ops") or []
    if not custom or allowed:
        return None
    return refuse(f"the graph uses operators outside the standard ONNX domains (ai.onnx, ai.onnx.ml): "
                  f"{', '.join(custom[:5])}; they are allowed only with [plugins.models] onnx_custom_ops = true")
