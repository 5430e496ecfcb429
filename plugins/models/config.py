"""``[plugins.models]``: the configuration of the models service (plugins.toml documents every key)."""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from typing import Any

from ml_processing.sdk import BadRequest

from .online import LiveSpec

#: A Dask scheduler's address: a protocol Dask speaks, a host and a port.
_ADDRESS = re.compile(r"^(tcp|tls|ws|wss|ucx)://[A-Za-z0-9_.\-\[\]:]+:[0-9]{1,5}/?$")


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
    executor: str = "local"  # where training and backfill tasks run: "local" (the pool) or a Dask scheduler address
    dask_timeout_s: float = 10.0  # connecting to the Dask scheduler (and each of its answers) may take this long
    dask_partition_rows: int = 100_000  # xgboost on Dask: rows per partition (at least one partition per worker)
    datasets_directory: str = "datasets"  # under [service] data_dir: the feature rows backfills write
    keep_datasets: int = 3  # versions kept per dataset (older ones are deleted after a backfill writes a new one)

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
        if self.executor != "local" and not _ADDRESS.fullmatch(self.executor):
            raise ValueError(f"executor: 'local' or a Dask scheduler address such as tcp://HOST:8786, got "
                             f"{self.executor!r:.80}")
        if self.dask and importlib.util.find_spec("distributed") is None:
            raise ValueError("executor: a Dask scheduler needs Dask's client: pip install 'ml-processing[dask]'")
        if not 0 < self.dask_timeout_s <= 600 or not 1_000 <= self.dask_partition_rows <= 100_000_000:
            raise ValueError("dask_timeout_s: (0, 600]; dask_partition_rows: 1,000 to 100,000,000")
        if self.keep_datasets < 1:
            raise ValueError("keep_datasets: must be at least 1")
        for i, spec in enumerate(self.live):
            try:
                LiveSpec.parse(spec, i)
            except BadRequest as exc:
                raise ValueError(exc.message) from None

    @property
    def dask(self) -> bool:
        """Do training and backfill tasks run on a Dask cluster?"""
        return self.executor != "local"

    @property
    def max_artifact_bytes(self) -> int:
        return int(self.max_artifact_mb * 1024 * 1024)
