"""The model-kind contract over every kind a real kernel registers (entry points included), through the
checks ml-processing ships (`ml_processing.checks.models`): garbage refused without being executed, the
check / compile / load / predict round trip, the ONNX fast path equal to the native library."""

from __future__ import annotations

from pathlib import Path

import pytest

from ml_processing import checks
from ml_processing.sdk.model import ModelKind
from tests.support.registries import FOUND

#: What the built-in kinds must get through: the round trips, and the paths compared with each other.
BUILTIN = {
    "xgboost": (["json: trained by the checks (xgboost)", "ubj: trained by the checks (xgboost)"], ["native", "onnx"]),
    "sklearn": (["skops: trained by the checks (scikit-learn)"], ["native", "onnx"]),
    "lightgbm": (["txt: offered by the kind"], ["native", "onnx"]),
    "onnx": (["onnx: offered by the kind"], []),  # one path: onnxruntime
    "river": ([], []),  # only the service writes river models: garbage refused, nothing to load
    "ensemble": ([], []),  # built of other models
}


def test_the_registry_holds_the_builtin_kinds() -> None:
    assert set(BUILTIN) <= set(FOUND["model_kinds"]), FOUND.broken()


@pytest.mark.parametrize("kind", checks.pytest_cases(FOUND, "model_kinds"))
def test_every_kind_meets_the_contract(kind: ModelKind, tmp_path: Path) -> None:
    report = checks.models.check_model_kind(kind, tmp_path)
    assert report.garbage_formats == (list(kind.formats) or [""])
    if kind.name in BUILTIN:
        assert (report.round_trips, report.paths_compared) == BUILTIN[kind.name], report
