"""The model-kind contract: how a kind of model is checked, stored, loaded and asked for predictions.

Plugins register kinds through the ``register_model_kinds`` hook (``ctx.registries["model_kinds"]``). The
``models`` service keeps every version of every model on disk and, for each, asks its kind to

* `ModelKind.check`: parse an uploaded artifact *without executing anything from it* and describe it
  (task, classes, number of features); refuse it with `BadRequest` otherwise;
* `ModelKind.compile`: derive extra files once per version (e.g. an ONNX graph for a fast path);
* `ModelKind.load`: turn a version's verified files into a `Predictor`.

A `Predictor` answers `predict(X)` for a float64 matrix (rows x features) with a `Prediction`: the
predicted values (class labels or numbers), class probabilities when the model has them, and which path
computed them. Predictors are immutable once loaded, so a version being swapped out keeps answering the
requests that already hold it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

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


class Predictor(ABC):
    """One loaded model version."""

    task: str = CLASSIFICATION
    n_features: int = 0
    classes: list[Any] | None = None
    allows_nan: bool = False  # does the model take NaN inputs (as missing values)?

    @abstractmethod
    def predict(self, x: np.ndarray) -> Prediction:
        """Predict every row of `x` (a C-contiguous float64 matrix, rows x `n_features`)."""

    def paths(self) -> list[str]:
        """The prediction paths this predictor has (``native`` always)."""
        return ["native"]

    online: bool = False  # does `learn` update the model (river), or is it fixed until retrained?

    def learn(self, row: np.ndarray, label: Any) -> None:  # noqa: B027 (optional)
        """Learn one labelled row (online models only; the others ignore it)."""


class ModelKind(ABC):
    """Base of every model kind. Subclasses set the class attributes and implement the methods."""

    name: ClassVar[str]
    doc: ClassVar[str] = ""
    formats: ClassVar[tuple[str, ...]] = ()  # artifact formats accepted for upload, e.g. ("json", "ubj")

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
        """A predictor for the version in `directory` (its files already verified against the manifest)."""

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "formats": list(self.formats), "doc": self.doc}
