"""``[plugins.models]``: the configuration of the models service (plugins.toml documents every key)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ml_processing.sdk import BadRequest

from .online import LiveSpec


@dataclass(frozen=True)
class ModelsConfig:
    """``[plugins.models]``."""

    directory: str = "models"  # under [service] data_dir
    defaults: bool = True  # first start with no models: train and register the default models
    native_threads: int = 1  # xgboost nthread on the native path (large batches)
    onnx: bool = True  # the ONNX fast path for tree ensembles
    onnx_max_rows: int = 64  # requests up to this many rows take the ONNX path
    onnx_custom_ops: bool = False  # onnx models may use operators outside ai.onnx and ai.onnx.ml
    max_batch: int = 100_000  # rows per predict_batch request (more: 413)
    max_artifact_mb: float = 200.0  # uploaded artifact size limit
    live: tuple[dict[str, Any], ...] = (  # models attached to bar series (docs/MODELS.md)
        {"model": "ensemble", "horizon": 1, "buy_above": 0.6, "sell_below": 0.4},)
    checkpoint_s: float = 300.0  # online models that learned are saved as a new version this often (and at stop)
    keep_checkpoints: int = 5  # checkpoint versions kept per model (older ones, if not current, are deleted)
    hedge_eta: float = 0.5  # ensemble weights: learning rate of the Hedge update (per unit of log loss)
    hedge_floor: float = 0.02  # ensemble weights: no member below floor / members
    window: int = 500  # labels in the rolling accuracy
    training_workers: int = 1  # processes in the training pool (spawned on the first job)
    training_threads: int = 1  # threads each training job uses (xgboost nthread, scikit-learn n_jobs)

    def __post_init__(self) -> None:
        if not 1 <= self.native_threads <= 64:
            raise ValueError("native_threads: must be between 1 and 64")
        if not 0 <= self.onnx_max_rows <= 1_000_000:
            raise ValueError("onnx_max_rows: must be between 0 and 1,000,000")
        if not 1 <= self.max_batch <= 10_000_000:
            raise ValueError("max_batch: must be between 1 and 10,000,000")
        if self.checkpoint_s <= 0 or self.keep_checkpoints < 1 or self.window < 1:
            raise ValueError("checkpoint_s, keep_checkpoints and window must be positive")
        if not 0 < self.hedge_eta <= 100 or not 0 <= self.hedge_floor < 1:
            raise ValueError("hedge_eta: (0, 100]; hedge_floor: [0, 1)")
        for i, spec in enumerate(self.live):
            try:
                LiveSpec.parse(spec, i)
            except BadRequest as exc:
                raise ValueError(exc.message) from None

    @property
    def max_artifact_bytes(self) -> int:
        return int(self.max_artifact_mb * 1024 * 1024)
