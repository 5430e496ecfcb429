"""The ONNX fast path: tree ensembles compiled to one ONNX graph per version, and every graph (compiled or
uploaded, `onnx_kind`) run by onnxruntime on one thread.

xgboost boosters and LightGBM boosters (through onnxmltools) and scikit-learn forests and boosted trees
(through skl2onnx) are compiled once, when a version is registered, to ``model.onnx`` in the version's
directory (listed and hashed in its manifest like the artifact). A small request (at most ``onnx_max_rows``
rows) runs on the graph: about 6-30 us for one row of a 200-tree model, where xgboost's own
``inplace_predict`` takes 100+ us. Larger batches run on the native library. The tests prove both give the
same outputs (1e-5).

onnxruntime runs with ``intra_op_num_threads = inter_op_num_threads = 1`` and sequential execution: a
one-row request never wakes a thread pool.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ml_processing.sdk import get_logger
from ml_processing.sdk.model import CLASSIFICATION, Prediction, Predictor

log = get_logger(__name__)

ONNX_FILE = "model.onnx"
SKLEARN_TREES = ("RandomForestClassifier", "RandomForestRegressor", "ExtraTreesClassifier", "ExtraTreesRegressor",
                 "GradientBoostingClassifier", "GradientBoostingRegressor", "DecisionTreeClassifier",
                 "DecisionTreeRegressor", "HistGradientBoostingClassifier", "HistGradientBoostingRegressor")


def session(graph: bytes) -> Any:
    """An onnxruntime session of `graph` on the CPU, one thread, sequential execution."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    return ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])


def from_xgboost(booster: Any, n_features: int) -> bytes | None:
    """The booster as an ONNX graph, or None (logged) when the converter cannot express it."""
    try:
        import onnxmltools
        from onnxmltools.convert.common.data_types import FloatTensorType

        model = onnxmltools.convert_xgboost(booster, initial_types=[("input", FloatTensorType([None, n_features]))])
        return bytes(model.SerializeToString())
    except Exception as exc:  # the converter's errors are many and untyped: run natively instead
        log.warning("onnx_conversion_failed", library="xgboost", error=f"{type(exc).__name__}: {exc}")
        return None


def from_lightgbm(booster: Any, n_features: int) -> bytes | None:
    """A LightGBM booster as an ONNX graph (probabilities as a plain tensor), or None (logged)."""
    try:
        import onnxmltools
        from onnxmltools.convert.common.data_types import FloatTensorType

        model = onnxmltools.convert_lightgbm(booster, initial_types=[("input", FloatTensorType([None, n_features]))],
                                             zipmap=False)
        return bytes(model.SerializeToString())
    except Exception as exc:  # as above
        log.warning("onnx_conversion_failed", library="lightgbm", error=f"{type(exc).__name__}: {exc}")
        return None


def from_sklearn(estimator: Any, n_features: int) -> bytes | None:
    """A scikit-learn tree model as an ONNX graph (probabilities as a plain tensor), or None."""
    if type(estimator).__name__ not in SKLEARN_TREES:
        return None
    try:
        from skl2onnx import to_onnx
        from skl2onnx.common.data_types import FloatTensorType

        options = {id(estimator): {"zipmap": False}} if hasattr(estimator, "predict_proba") else None
        model = to_onnx(estimator, initial_types=[("input", FloatTensorType([None, n_features]))], options=options,
                        target_opset={"": 17, "ai.onnx.ml": 3})
        return bytes(model.SerializeToString())
    except Exception as exc:  # as above: a model the converter cannot express runs natively
        log.warning("onnx_conversion_failed", library="scikit-learn", error=f"{type(exc).__name__}: {exc}")
        return None


class OnnxRunner:
    """An onnxruntime session of a tree-ensemble graph: (labels or values, probabilities or None)."""

    def __init__(self, graph: bytes) -> None:
        self.session = session(graph)
        self.input = self.session.get_inputs()[0].name
        self.outputs = [o.name for o in self.session.get_outputs()]
        self._run = self.session.run

    def run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        results = self._run(None, {self.input: x.astype(np.float32, copy=False)})
        values = results[0].reshape(-1)
        proba = results[1] if len(results) > 1 else None
        return values, proba


def proba_labels(proba: np.ndarray, classes: list[Any]) -> np.ndarray:
    """The class of the highest probability of each row."""
    return np.asarray(classes)[np.argmax(proba, axis=1)]


class TreePredictor(Predictor):
    """A predictor with an optional ONNX graph for requests of at most `max_rows` rows, and its native
    library (`native`) for the rest."""

    allows_nan = True  # tree models treat NaN as missing, in both paths

    def __init__(self, runner: OnnxRunner | None, max_rows: int) -> None:
        self.runner = runner
        self.max_rows = max_rows if runner is not None else -1

    #: Does the ONNX graph treat NaN as the native library does? (skl2onnx's trees do not follow the
    #: missing-value directions scikit-learn learns, so rows with NaN take the native path there.)
    onnx_takes_nan = True
    #: Does the graph output class indexes (True) or the class labels themselves?
    index_labels = False

    def onnx_fits(self, x: np.ndarray) -> bool:
        """Does the graph answer these rows as the native library would?"""
        return self.onnx_takes_nan or not np.isnan(x).any()

    def predict(self, x: np.ndarray) -> Prediction:
        if len(x) <= self.max_rows and self.onnx_fits(x):
            assert self.runner is not None
            values, proba = self.runner.run(x)
            if self.task == CLASSIFICATION and proba is not None:
                return Prediction(np.asarray(self.classes)[values] if self.index_labels else values,
                                  proba.astype(np.float64), "onnx")
            return Prediction(values.astype(np.float64), None, "onnx")
        return self.native(x)

    def native(self, x: np.ndarray) -> Prediction:
        raise NotImplementedError

    def paths(self) -> list[str]:
        return ["onnx", "native"] if self.runner is not None else ["native"]


def compiled_runner(directory: Path, manifest: Mapping[str, Any], options: Mapping[str, Any]) -> OnnxRunner | None:
    """The runner of the graph a version's kind compiled, if it has one and ``onnx`` is on."""
    if ONNX_FILE not in manifest.get("files", {}) or not options.get("onnx", True):
        return None
    return OnnxRunner((directory / ONNX_FILE).read_bytes())
