"""The model-kind contract: how a kind of model is checked, stored, loaded, asked for predictions, taught.

Plugins register kinds through the ``register_model_kinds`` hook (``ctx.registries["model_kinds"]``). The
``models`` service keeps every version of every model on disk and, for each, asks its kind to

* `ModelKind.check`: parse an uploaded artifact *without executing anything from it* and describe it
  (task, classes, number of features, the models it is built of); refuse it with `BadRequest` otherwise;
* `ModelKind.compile`: derive extra files once per version (e.g. an ONNX graph for a fast path);
* `ModelKind.load`: turn a version's verified files into a `Predictor`.

A `Predictor` answers `predict(X)` for a float64 matrix (rows x features) with a `Prediction`: the
predicted values (class labels or numbers), class probabilities when the model has them, and which path
computed them. A fixed model's predictor never changes once loaded, so a version being swapped out keeps
answering the requests that already hold it. What else a predictor may do, the service learns from the
predictor itself, never from the kind's name:

* ``online``: it learns from labels (`Predictor.learn`) and gives its learned state as a new artifact
  (`Predictor.artifact`), which the service saves as a checkpoint version;
* ``members``: it combines other models (an ensemble): its task and shape come from them, and the service
  adapts how much each one counts (`Predictor.set_weights`);
* `ModelKind.refreshable`: training can continue from a version's artifact (``train`` with ``refresh``).

Whenever a predictor learns or its weights move, the service drops the cached predictions of that model and
of every model built on it: a cached answer is always the answer the model would give now.

Requests carry rows as `FeatureRow` (one row: a list, a map of feature name -> value, or a 1-D ndarray)
and `FeatureRows` (a batch: a list of rows or a 2-D ndarray); op declarations use them as field types.

>>> from ml_processing.core.ops import Args, convert
>>> class One(Args):
...     features: FeatureRow
>>> convert({"features": [1, None, 2.5]}, One).features.values
array([1. , nan, 2.5])
>>> convert({"features": {"a": 1, "b": None}}, One).features.named
{'a': 1.0, 'b': nan}
>>> convert({"features": [1, True]}, One)
Traceback (most recent call last):
...
ml_processing.bus.errors.BadRequest: features[1]: expected a number, got True
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ml_processing.core.errors import BadRequest
from ml_processing.core.ops import register_type

from .columns import read_column

__all__ = ["CLASSIFICATION", "REGRESSION", "Described", "FeatureRow", "FeatureRows", "ModelKind", "Prediction",
           "Predictor"]

CLASSIFICATION = "classification"
REGRESSION = "regression"


@dataclass(frozen=True)
class Prediction:
    values: np.ndarray  # (rows,): class labels or regression values
    proba: np.ndarray | None = None  # (rows, classes), in the order of `Predictor.classes`
    path: str = "native"  # what computed it: "native", "onnx", ...
    parts: dict[str, np.ndarray] = field(default_factory=dict)  # an ensemble's members' probabilities


@dataclass(frozen=True)
class Described:
    """What a kind reads from an artifact: enough to check requests against it."""

    task: str  # CLASSIFICATION or REGRESSION
    n_features: int
    classes: list[Any] | None = None
    details: dict[str, Any] = field(default_factory=dict)  # kind-specific (trees, objective, estimator, ...)
    #: The models this one is built of (``name`` or ``name@version``), for an ensemble: the service takes the
    #: task, number of features and classes from them (they must agree), not from `task` and `n_features`.
    members: list[str] = field(default_factory=list)


class Predictor(ABC):
    """One loaded model version."""

    task: str = CLASSIFICATION
    n_features: int = 0
    classes: list[Any] | None = None
    allows_nan: bool = False  # does the model take NaN inputs (as missing values)?
    online: bool = False  # does `learn` update the model (river), or is it fixed until retrained?
    members: Sequence[str] = ()  # the models an ensemble combines (``name`` or ``name@version``); () otherwise

    @abstractmethod
    def predict(self, x: np.ndarray) -> Prediction:
        """Predict every row of `x` (a C-contiguous float64 matrix, rows x `n_features`)."""

    def paths(self) -> list[str]:
        """The prediction paths this predictor has (``native`` always)."""
        return ["native"]

    def learn(self, row: np.ndarray, label: Any) -> None:  # noqa: B027 (optional)
        """Learn one labelled row (online predictors only; the others ignore it)."""

    def artifact(self) -> bytes:
        """The learned state as an artifact in the kind's own format (online predictors: the service saves it
        as a new version, a checkpoint). Called on a worker thread."""
        raise NotImplementedError(f"{type(self).__name__} does not learn online: it has no state to save")

    def set_weights(self, weights: Sequence[float]) -> None:
        """How much each of `members` counts, in their order (ensembles; the weights sum to 1)."""
        raise NotImplementedError(f"{type(self).__name__} combines no members")


class ModelKind(ABC):
    """Base of every model kind. Subclasses set the class attributes and implement the methods."""

    name: ClassVar[str]
    doc: ClassVar[str] = ""
    formats: ClassVar[tuple[str, ...]] = ()  # artifact formats accepted for upload, e.g. ("json", "ubj")
    refreshable: ClassVar[bool] = False  # training can continue from a version's artifact (``refresh``)

    def prepare(self) -> None:  # noqa: B027 (optional)
        """Import what loading needs (once per process, before the first load is timed)."""

    def artifact_name(self, fmt: str) -> str:
        """The artifact's file name in a version directory."""
        return f"model.{fmt}"

    @abstractmethod
    def check(self, data: bytes, fmt: str) -> Described:
        """Parse an uploaded artifact safely and describe it; `BadRequest` if it is not a valid one."""

    def compile(self, directory: Path, manifest: Mapping[str, Any]) -> dict[str, bytes]:
        """Files derived from the artifact once per version (name -> content); none by default."""
        return {}

    @abstractmethod
    def load(self, directory: Path, manifest: Mapping[str, Any], options: Mapping[str, Any]) -> Predictor:
        """A predictor for the version in `directory` (its files already verified against the manifest).

        `options`: ``native_threads``, ``onnx``, ``onnx_max_rows``, and ``resolve`` (``ref -> Predictor``:
        another model by ``name`` or ``name@version``, for kinds built of other models)."""

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "formats": list(self.formats), "doc": self.doc}


# -- rows in requests -------------------------------------------------------------------------------------


class FeatureRow:
    """One row of features as a request sends it, read by the op's declaration: a list of numbers (``null``
    for a missing value, read as NaN) or a 1-D numeric ndarray gives `values` (float64); a map of feature
    name -> number gives `named`. Booleans and strings are refused naming the element. `finite` says the
    values hold neither NaN nor an infinity (so a model's check of its inputs has nothing left to do)."""

    __slots__ = ("finite", "named", "values")

    def __init__(self, values: np.ndarray | None = None, named: dict[str, float] | None = None,
                 finite: bool = False) -> None:
        self.values = values
        self.named = named
        self.finite = finite

    @classmethod
    def read(cls, value: Any) -> FeatureRow:
        if type(value) is list and value and set(map(type, value)) <= _PLAIN:  # the usual case, kept short
            try:
                return cls(np.array(value, dtype=np.float64), None, math.isfinite(sum(value)))
            except OverflowError:  # an integer beyond float64: named below
                pass
        if isinstance(value, dict):
            return cls(None, {str(k): _number(v, k) for k, v in value.items()})
        if isinstance(value, list):
            return cls(np.array([_number(v, i) for i, v in enumerate(value)] or _empty(), dtype=np.float64))
        if isinstance(value, np.ndarray) and value.ndim == 2 and value.shape[0] == 1:
            value = value.reshape(-1)
        return cls(read_column(value), None)


_PLAIN = frozenset({float, int})


def _number(value: Any, name: Any) -> float:
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"[{name}]: expected a number, got {value!r:.40}")
    try:
        return float(value)
    except OverflowError:
        raise ValueError(f"[{name}]: an integer of {len(str(value))} digits is beyond the range of a number") from None


def _empty() -> list[float]:
    raise ValueError("needs at least one value")


class FeatureRows:
    """A batch of rows as a request sends it: a list of rows of numbers or a 2-D numeric ndarray. The
    declaration checks only the outer shape; `matrix` reads the values (on a worker thread for a large batch,
    so a big request never holds the event loop)."""

    __slots__ = ("raw",)

    def __init__(self, raw: list[Any] | np.ndarray) -> None:
        self.raw = raw

    @classmethod
    def read(cls, value: Any) -> FeatureRows:
        if isinstance(value, np.ndarray):
            if value.ndim != 2 or value.dtype.kind not in "biuf":
                raise ValueError(f"expected a 2-D numeric array, got {value.ndim}-D {value.dtype}")
            return cls(value)
        if not isinstance(value, list):
            raise ValueError(f"expected a list of rows, got {type(value).__name__}")
        return cls(value)

    def __len__(self) -> int:
        return len(self.raw)

    def matrix(self, n_features: int) -> np.ndarray:
        """The rows as a C-contiguous float64 matrix (``null`` -> NaN), `n_features` wide; `BadRequest`
        naming ``rows`` or the element (``rows[3][1]``) otherwise. Lists are read in slices of `CHUNK` rows,
        so a worker thread reading a large batch lets the event loop run between slices."""
        raw = self.raw
        if isinstance(raw, np.ndarray):
            if raw.shape[1] != n_features or not len(raw):
                raise BadRequest(f"expected rows of {n_features} numbers, got shape {list(raw.shape)}", field="rows")
            return np.ascontiguousarray(raw, dtype=np.float64)
        if not raw:
            raise BadRequest(f"expected rows of {n_features} numbers, got none", field="rows")
        out = np.empty((len(raw), n_features), dtype=np.float64)
        for start in range(0, len(raw), CHUNK):
            _read_slice(raw, start, min(start + CHUNK, len(raw)), out, n_features)
        return out


#: Rows read per slice of a batch (one C call each: the GIL changes hands between slices).
CHUNK = 2048


def _read_slice(raw: list[Any], start: int, stop: int, out: np.ndarray, n_features: int) -> None:
    chunk = raw[start:stop]
    try:
        types = set(map(type, chain.from_iterable(chunk)))
    except TypeError:  # a row that is not a list
        types = {object}
    if types <= _PLAIN:
        try:
            block = np.array(chunk, dtype=np.float64)
        except ValueError:  # ragged
            block = None
        if block is not None and block.ndim == 2 and block.shape[1] == n_features:
            out[start:stop] = block
            return
    for i, row in enumerate(chunk, start):  # the slow path: gaps (null), or a fault to name
        if not isinstance(row, list) or len(row) != n_features:
            raise BadRequest(f"rows[{i}] must be a list of {n_features} numbers", field=f"rows[{i}]")
        for j, v in enumerate(row):
            if v is None:
                out[i, j] = math.nan
            elif type(v) is float or type(v) is int:
                out[i, j] = v
            else:
                raise BadRequest(f"rows[{i}][{j}] must be a number, got {v!r:.40}", field=f"rows[{i}][{j}]")


_NUMBER_OR_NULL: dict[str, Any] = {"type": ["number", "null"]}
register_type(FeatureRow, FeatureRow.read, {
    "anyOf": [{"type": "array", "minItems": 1, "items": _NUMBER_OR_NULL},
              {"type": "object", "additionalProperties": _NUMBER_OR_NULL}],
    "description": "one row: numbers in the model's feature order (null for a missing value), or a map of "
                   "feature name -> number; in msgpack also a 1-D ndarray"})
register_type(FeatureRows, FeatureRows.read, {
    "type": "array", "items": {"type": "array", "items": _NUMBER_OR_NULL},
    "description": "rows of numbers in the model's feature order (null for a missing value); in msgpack also "
                   "a 2-D ndarray"})
