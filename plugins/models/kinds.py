"""The built-in model kinds: xgboost, scikit-learn, river, and ensembles of other models (LightGBM in
`lightgbm_kind`, networks exported to ONNX in `onnx_kind`).

Safe formats only. xgboost models are its own JSON or UBJ (parsed by xgboost, never executed). scikit-learn
models travel through skops, whose loader refuses any type not on an explicit list: scikit-learn's own
estimators are trusted by skops, and `SKOPS_TRUSTED` adds the few tree internals they need. river models
are pickles, so they are never accepted from outside: only the service writes them (training), and the
registry loads one only after checking the manifest's signature and the file's sha256. An ensemble is a
JSON list of other models.

Threads: xgboost runs with ``nthread`` = ``[plugins.models] native_threads`` (1 by default); scikit-learn
estimators get ``n_jobs = 1``; onnxruntime runs on one thread (`onnx_path`). A one-row request never
starts a thread pool.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ml_processing.sdk import BadRequest
from ml_processing.sdk.model import CLASSIFICATION, REGRESSION, Described, ModelKind, Prediction, Predictor

from .lightgbm_kind import LightGBMKind
from .onnx_kind import OnnxKind
from .onnx_path import (
    ONNX_FILE,
    OnnxRunner,
    TreePredictor,
    compiled_runner,
    from_sklearn,
    from_xgboost,
    proba_labels,
)

#: Types skops does not trust by default that scikit-learn tree models are made of.
SKOPS_TRUSTED = ("sklearn.tree._tree.Tree", "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
                 "sklearn._loss.link.LogitLink", "sklearn._loss.link.IdentityLink",
                 "sklearn._loss.link.MultinomialLogit", "sklearn._loss.loss.HalfBinomialLoss",
                 "sklearn._loss.loss.HalfSquaredError", "sklearn._loss.loss.HalfMultinomialLoss")


# -- xgboost -----------------------------------------------------------------------------------------------


def describe_booster(booster: Any) -> Described:
    """What an xgboost booster is: task, number of features, classes, objective and trees."""
    config = json.loads(booster.save_config())["learner"]
    objective = config["objective"]["name"]
    n_features = int(booster.num_features())
    trees = int(config["gradient_booster"].get("gbtree_model_param", {}).get("num_trees", 0) or 0)
    details = {"objective": objective, "trees": trees}
    if objective.startswith("binary:"):
        return Described(CLASSIFICATION, n_features, [0, 1], details)
    if objective.startswith("multi:"):
        classes = int(config["learner_model_param"]["num_class"])
        return Described(CLASSIFICATION, n_features, list(range(classes)), details)
    return Described(REGRESSION, n_features, None, details)


class XGBoostKind(ModelKind):
    name = "xgboost"
    doc = "xgboost Booster, XGBClassifier or XGBRegressor saved as xgboost JSON or UBJ"
    formats = ("json", "ubj")
    refreshable = True  # training continues a booster (more trees)

    def prepare(self) -> None:
        import onnxruntime  # noqa: F401
        import xgboost  # noqa: F401

    def _booster(self, data: bytes) -> Any:
        import xgboost as xgb

        if not data.lstrip()[:1] == b"{":  # JSON and UBJ models open an object; an empty buffer aborts xgboost
            raise BadRequest("not an xgboost model: expected JSON or UBJ (it opens with '{')", field="artifact")
        booster = xgb.Booster()
        try:
            booster.load_model(bytearray(data))
        except xgb.core.XGBoostError as exc:
            raise BadRequest(f"not an xgboost model: {str(exc).splitlines()[0][:200]}", field="artifact") from None
        return booster

    def check(self, data: bytes, fmt: str) -> Described:
        booster = self._booster(data)
        try:
            return describe_booster(booster)
        except (KeyError, ValueError) as exc:
            raise BadRequest(f"unsupported xgboost model: {exc}", field="artifact") from None

    def compile(self, directory: Path, manifest: Mapping[str, Any]) -> dict[str, bytes]:
        booster = self._booster((directory / manifest["artifact"]).read_bytes())
        graph = from_xgboost(booster, int(manifest["n_features"]))
        return {ONNX_FILE: graph} if graph is not None else {}

    def load(self, directory: Path, manifest: Mapping[str, Any], options: Mapping[str, Any]) -> Predictor:
        booster = self._booster((directory / manifest["artifact"]).read_bytes())
        booster.set_param({"nthread": int(options.get("native_threads", 1))})
        return XGBoostPredictor(booster, describe_booster(booster), compiled_runner(directory, manifest, options),
                                int(options.get("onnx_max_rows", 64)))


class XGBoostPredictor(TreePredictor):
    index_labels = True  # the ONNX graph outputs class indexes

    def __init__(self, booster: Any, described: Described, runner: OnnxRunner | None, max_rows: int) -> None:
        super().__init__(runner, max_rows)
        self.booster = booster
        self.task, self.n_features, self.classes = described.task, described.n_features, described.classes
        self.objective = described.details["objective"]

    def native(self, x: np.ndarray) -> Prediction:
        out = np.asarray(self.booster.inplace_predict(x), dtype=np.float64)
        if self.task == REGRESSION:
            return Prediction(out.reshape(-1), None)
        if out.ndim == 1:  # binary: P(class 1)
            proba = np.column_stack([1.0 - out, out])
        else:
            proba = out
        assert self.classes is not None
        return Prediction(proba_labels(proba, self.classes), proba)


# -- scikit-learn ------------------------------------------------------------------------------------------


class SklearnKind(ModelKind):
    name = "sklearn"
    doc = ("scikit-learn estimator or pipeline saved with skops (its safe format); tree ensembles also get an "
           "ONNX fast path")
    formats = ("skops",)

    def prepare(self) -> None:
        import onnxruntime  # noqa: F401
        import skops.io  # noqa: F401

    def _estimator(self, data: bytes) -> Any:
        import skops.io as sio

        try:
            untrusted = sio.get_untrusted_types(data=data)
        except Exception as exc:  # skops reports a malformed file with many exception types
            raise BadRequest(f"not a skops file: {type(exc).__name__}: {exc}"[:300], field="artifact") from None
        refused = [t for t in untrusted if t not in SKOPS_TRUSTED]
        if refused:
            raise BadRequest(f"the skops file holds types outside the trusted list: {', '.join(refused[:5])}",
                             field="artifact")
        try:
            estimator = sio.loads(data, trusted=list(untrusted))
        except Exception as exc:  # as above
            raise BadRequest(f"cannot load the skops file: {type(exc).__name__}: {exc}"[:300], field="artifact") from None
        if not hasattr(estimator, "predict"):
            raise BadRequest(f"{type(estimator).__name__} has no predict method", field="artifact")
        return estimator

    def check(self, data: bytes, fmt: str) -> Described:
        return self.describe_estimator(self._estimator(data))

    def describe_estimator(self, estimator: Any) -> Described:
        """What a fitted estimator is: task, number of features, classes, estimator name."""
        n_features = getattr(estimator, "n_features_in_", None)
        if n_features is None:
            raise BadRequest("the estimator is not fitted (no n_features_in_)", field="artifact")
        details = {"estimator": type(estimator).__name__}
        if hasattr(estimator, "classes_"):
            return Described(CLASSIFICATION, int(n_features), [_plain(c) for c in estimator.classes_], details)
        return Described(REGRESSION, int(n_features), None, details)

    def compile(self, directory: Path, manifest: Mapping[str, Any]) -> dict[str, bytes]:
        estimator = self._estimator((directory / manifest["artifact"]).read_bytes())
        graph = from_sklearn(estimator, int(manifest["n_features"]))
        return {ONNX_FILE: graph} if graph is not None else {}

    def load(self, directory: Path, manifest: Mapping[str, Any], options: Mapping[str, Any]) -> Predictor:
        estimator = self._estimator((directory / manifest["artifact"]).read_bytes())
        if hasattr(estimator, "n_jobs"):
            estimator.n_jobs = 1
        described = self.describe_estimator(estimator)
        return SklearnPredictor(estimator, described, compiled_runner(directory, manifest, options),
                                int(options.get("onnx_max_rows", 64)))


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


class SklearnPredictor(TreePredictor):
    index_labels = False  # skl2onnx graphs output the class labels themselves
    onnx_takes_nan = False

    def __init__(self, estimator: Any, described: Described, runner: OnnxRunner | None, max_rows: int) -> None:
        super().__init__(runner, max_rows)
        self.estimator = estimator
        self.task, self.n_features, self.classes = described.task, described.n_features, described.classes
        tree = described.details["estimator"] in ("RandomForestClassifier", "ExtraTreesClassifier",
                                                  "HistGradientBoostingClassifier", "HistGradientBoostingRegressor")
        self.allows_nan = tree

    def native(self, x: np.ndarray) -> Prediction:
        if self.task == CLASSIFICATION and hasattr(self.estimator, "predict_proba"):
            proba = np.asarray(self.estimator.predict_proba(x), dtype=np.float64)
            assert self.classes is not None
            return Prediction(proba_labels(proba, self.classes), proba)
        values = np.asarray(self.estimator.predict(x))
        return Prediction(values if self.task == CLASSIFICATION else values.astype(np.float64), None)


# -- river -------------------------------------------------------------------------------------------------


class RiverKind(ModelKind):
    name = "river"
    doc = "river online model; written only by this service (training), never accepted as an upload"
    formats = ()

    def artifact_name(self, fmt: str) -> str:
        return "model.river"

    def check(self, data: bytes, fmt: str) -> Described:
        raise BadRequest("river models cannot be uploaded (their format can execute code): train them here",
                         field="kind")

    def load(self, directory: Path, manifest: Mapping[str, Any], options: Mapping[str, Any]) -> Predictor:
        model = pickle.loads((directory / manifest["artifact"]).read_bytes())  # the registry verified and signed it
        return RiverPredictor(model, manifest)


class RiverPredictor(Predictor):
    online = True

    def __init__(self, model: Any, manifest: Mapping[str, Any]) -> None:
        self.model = model
        self.task = manifest["task"]
        self.n_features = int(manifest["n_features"])
        self.classes = manifest.get("classes")
        self.names = list(manifest.get("features") or [f"f{i}" for i in range(self.n_features)])

    def predict(self, x: np.ndarray) -> Prediction:
        rows = [dict(zip(self.names, row, strict=True)) for row in x.tolist()]
        if self.task == REGRESSION:
            return Prediction(np.array([self.model.predict_one(r) or 0.0 for r in rows], dtype=np.float64))
        assert self.classes is not None
        proba = np.array([[self.model.predict_proba_one(r).get(c, 0.0) for c in self.classes] for r in rows],
                         dtype=np.float64)
        totals = proba.sum(axis=1, keepdims=True)
        proba = np.where(totals > 0, proba / np.where(totals > 0, totals, 1.0), 1.0 / len(self.classes))
        return Prediction(proba_labels(proba, self.classes), proba)

    def learn(self, row: np.ndarray, label: Any) -> None:
        self.model.learn_one(dict(zip(self.names, row.tolist(), strict=True)), label)

    def artifact(self) -> bytes:
        return river_artifact(self.model)


def river_artifact(model: Any) -> bytes:
    """The bytes the registry stores for a river model (only the service calls this)."""
    return pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)


# -- ensembles ---------------------------------------------------------------------------------------------


class EnsembleKind(ModelKind):
    name = "ensemble"
    doc = ('other models combined: JSON {"members": ["name" (its current version) or "name@version", ...]}; '
           "probabilities (or values) averaged")
    formats = ("json",)

    def artifact_name(self, fmt: str) -> str:
        return "ensemble.json"

    def check(self, data: bytes, fmt: str) -> Described:
        members = parse_members(data)
        return Described(CLASSIFICATION, 0, None, {"members": members}, members)  # task and shape: the members

    def load(self, directory: Path, manifest: Mapping[str, Any], options: Mapping[str, Any]) -> Predictor:
        resolve: Callable[[str], Predictor] = options["resolve"]
        return EnsemblePredictor(parse_members((directory / manifest["artifact"]).read_bytes()), resolve, manifest)


def parse_members(data: bytes) -> list[str]:
    try:
        spec = json.loads(data)
    except ValueError as exc:
        raise BadRequest(f"an ensemble is JSON {{\"members\": [...]}}: {exc}", field="artifact") from None
    members = spec.get("members") if isinstance(spec, dict) else None
    if not isinstance(members, list) or len(members) < 2 or not all(isinstance(m, str) and m for m in members):
        raise BadRequest("an ensemble needs 'members': a list of at least two model names", field="artifact")
    return members


class EnsemblePredictor(Predictor):
    """A weighted average of its members' probabilities (classification) or values (regression); equal
    weights until `weights` (kept by the service, adapted online) says otherwise. A member named without a
    version follows that model's current version at every request."""

    def __init__(self, members: list[str], resolve: Callable[[str], Predictor], manifest: Mapping[str, Any]) -> None:
        self.members = members
        self.resolve = resolve
        self.task = manifest["task"]
        self.n_features = int(manifest["n_features"])
        self.classes = manifest.get("classes")
        self.weights: list[float] = [1.0 / len(members)] * len(members)

    def set_weights(self, weights: Sequence[float]) -> None:
        if len(weights) != len(self.members):
            raise ValueError(f"{len(weights)} weights for {len(self.members)} members")
        self.weights = list(weights)

    def predict(self, x: np.ndarray) -> Prediction:
        outputs = [self.resolve(m).predict(x) for m in self.members]
        paths = "+".join(sorted({o.path for o in outputs}))
        weights = np.asarray(self.weights)
        if self.task == REGRESSION:
            return Prediction(np.tensordot(weights, [o.values for o in outputs], axes=1), None, paths)
        assert self.classes is not None
        stacked = [o.proba if o.proba is not None else _votes(o.values, self.classes) for o in outputs]
        proba = np.tensordot(weights, stacked, axes=1)
        return Prediction(proba_labels(proba, self.classes), proba, paths,
                          dict(zip(self.members, stacked, strict=True)))


def _votes(labels: np.ndarray, classes: list[Any]) -> np.ndarray:
    """A member that answers labels only (no probabilities) counts as probability 1 for its label."""
    return (np.asarray(labels).reshape(-1, 1) == np.asarray(classes, dtype=object).reshape(1, -1)).astype(np.float64)


def builtin_kinds() -> list[ModelKind]:
    return [XGBoostKind(), LightGBMKind(), SklearnKind(), OnnxKind(), RiverKind(), EnsembleKind()]
