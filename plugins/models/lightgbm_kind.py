"""LightGBM as a model kind: boosters in LightGBM's own text format, served natively and through ONNX.

The text format (``Booster.save_model`` / ``model_to_string``; ``LGBMClassifier.booster_`` saves the same) is
parsed by LightGBM, never executed. Its classes are indexes: ``[0, 1]`` for a binary objective,
``[0 .. num_class - 1]`` for a multiclass one (a scikit-learn wrapper's own labels are not in the file).
Registration compiles the booster to ONNX (onnxmltools) for the fast path, as for xgboost; the native path
predicts on ``native_threads`` threads. The converter does not follow splits that treat zero as missing
(``zero_as_missing``): for such a booster, rows holding a zero or a NaN take the native path.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ml_processing.sdk import BadRequest
from ml_processing.sdk.model import CLASSIFICATION, REGRESSION, Described, ModelKind, Prediction

from .onnx_path import ONNX_FILE, OnnxRunner, TreePredictor, compiled_runner, from_lightgbm, proba_labels

#: How every LightGBM model file begins.
MAGIC = b"tree\n"
#: Objectives whose models answer class probabilities, and how many classes (None: ``num_class``).
BINARY = ("binary", "cross_entropy", "xentropy")
MULTICLASS = ("multiclass", "softmax", "multiclassova", "multiclass_ova", "ova", "ovr")
RANKING = ("lambdarank", "rank_xendcg", "xendcg", "xe_ndcg", "xe_ndcg_mart", "xendcg_mart")


def objective_of(text: bytes) -> str:
    """The objective a model file names in its header (``custom`` when it names none).

    >>> objective_of(b"tree\\nversion=v4\\nobjective=binary sigmoid:1\\n\\nTree=0\\n")
    'binary'
    """
    header = text.split(b"\n\n", 1)[0]
    for line in header.splitlines():
        if line.startswith(b"objective="):
            return line[len(b"objective="):].split(b" ")[0].decode("ascii", "replace")
    return "custom"


def zero_missing(text: bytes) -> bool:
    """Does a split of the model treat zero as missing (missing type ``Zero`` in a node's decision type)?

    >>> zero_missing(b"Tree=0\\ndecision_type=2 10\\n"), zero_missing(b"Tree=0\\ndecision_type=2 6\\n")
    (False, True)
    """
    return any((int(value) >> 2) & 3 == 1 for line in re.findall(rb"^decision_type=(.*)$", text, re.MULTILINE)
               for value in line.split())


def describe_lightgbm(booster: Any, text: bytes) -> Described:
    """What a LightGBM booster (read from `text`) is: task, number of features, classes, objective and trees."""
    objective = objective_of(text)
    details = {"objective": objective, "trees": int(booster.num_trees())}
    n_features = int(booster.num_feature())
    if objective in BINARY:
        return Described(CLASSIFICATION, n_features, [0, 1], details)
    if objective in MULTICLASS:
        return Described(CLASSIFICATION, n_features, list(range(int(booster.num_model_per_iteration()))), details)
    if objective in RANKING:
        raise BadRequest(f"a LightGBM ranking model ({objective}) is not a classifier or regressor", field="artifact")
    return Described(REGRESSION, n_features, None, details)


class LightGBMKind(ModelKind):
    name = "lightgbm"
    doc = "LightGBM booster (or LGBMClassifier/LGBMRegressor's booster_) in LightGBM's text format"
    formats = ("txt",)
    refreshable = True  # training continues a booster (more trees)

    def prepare(self) -> None:
        import lightgbm  # noqa: F401
        import onnxruntime  # noqa: F401

    def _booster(self, data: bytes) -> Any:
        import lightgbm as lgb

        if not data.startswith(MAGIC):
            raise BadRequest("not a LightGBM model: its text format opens with 'tree'", field="artifact")
        try:
            return lgb.Booster(model_str=data.decode("utf-8"))
        except (UnicodeDecodeError, lgb.basic.LightGBMError, ValueError) as exc:
            raise BadRequest(f"not a LightGBM model: {str(exc).splitlines()[0][:200]}", field="artifact") from None

    def check(self, data: bytes, fmt: str) -> Described:
        booster = self._booster(data)
        try:
            return describe_lightgbm(booster, data)
        except (KeyError, ValueError, IndexError) as exc:
            raise BadRequest(f"unsupported LightGBM model: {exc}", field="artifact") from None

    def compile(self, directory: Path, manifest: Mapping[str, Any]) -> dict[str, bytes]:
        booster = self._booster((directory / manifest["artifact"]).read_bytes())
        graph = from_lightgbm(booster, int(manifest["n_features"]))
        return {ONNX_FILE: graph} if graph is not None else {}

    def load(self, directory: Path, manifest: Mapping[str, Any], options: Mapping[str, Any]) -> LightGBMPredictor:
        data = (directory / manifest["artifact"]).read_bytes()
        booster = self._booster(data)
        predictor = LightGBMPredictor(booster, describe_lightgbm(booster, data),
                                      compiled_runner(directory, manifest, options),
                                      int(options.get("onnx_max_rows", 64)), int(options.get("native_threads", 1)))
        predictor.zero_missing = zero_missing(data)
        return predictor

    def example(self) -> tuple[bytes, str]:
        """A small binary classifier over 4 features (the contract checks' round trip)."""
        import lightgbm as lgb

        rng = np.random.default_rng(0)
        x = rng.normal(size=(300, 4))
        y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(int)
        booster = lgb.train({"objective": "binary", "num_leaves": 7, "num_threads": 1, "verbose": -1, "seed": 0},
                            lgb.Dataset(x, y), num_boost_round=8)
        return booster.model_to_string().encode(), "txt"


class LightGBMPredictor(TreePredictor):
    index_labels = True  # the ONNX graph outputs class indexes

    def __init__(self, booster: Any, described: Described, runner: OnnxRunner | None, max_rows: int,
                 threads: int) -> None:
        super().__init__(runner, max_rows)
        self.booster = booster
        self.threads = threads
        self.task, self.n_features, self.classes = described.task, described.n_features, described.classes

    zero_missing = False  # rows holding a zero or a NaN take the native path (see the module's doc)

    def onnx_fits(self, x: np.ndarray) -> bool:
        return not self.zero_missing or not (np.isnan(x).any() or (x == 0).any())

    def native(self, x: np.ndarray) -> Prediction:
        out = np.asarray(self.booster.predict(x, num_threads=self.threads), dtype=np.float64)
        if self.task == REGRESSION:
            return Prediction(out.reshape(-1), None)
        proba = np.column_stack([1.0 - out, out]) if out.ndim == 1 else out
        assert self.classes is not None
        return Prediction(proba_labels(proba, self.classes), proba)
