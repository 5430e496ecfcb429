"""Training jobs as the service runs them: rows from the ``features`` service (and held bars from
``indicators``) or from a dataset a backfill stored, labels and the time-ordered split prepared off the
event loop, the model trained on the executor (`executors`: the local pool or Dask), then the version
written and promoted by the job's rule, and every other process of the service told (``ctx.changed``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import numpy as np

from ml_processing.sdk import BadRequest, Clock, NotFound, get_logger
from ml_processing.sdk.columns import NAMES
from ml_processing.sdk.model import CLASSIFICATION
from ml_processing.sdk.services.features import Features
from ml_processing.sdk.services.indicators import Indicators, columns

from . import training
from .catalog import Catalog
from .datasets import DatasetStore
from .executors import Executor
from .train_request import TrainArgs
from .training import Job, Jobs, run_job, scores

log = get_logger(__name__)


class Trainer:
    def __init__(self, catalog: Catalog, jobs: Jobs, executor: Executor, datasets: DatasetStore, features: Features,
                 indicators: Indicators, spawn: Callable[..., Any], run_in_thread: Callable[..., Awaitable[Any]],
                 changed: Callable[[], Awaitable[None]], clock: Clock, threads: int) -> None:
        self.catalog = catalog
        self.jobs = jobs
        self.executor = executor
        self.datasets = datasets
        self.features = features
        self.indicators = indicators
        self.spawn = spawn
        self.run_in_thread = run_in_thread
        self.changed = changed
        self.clock = clock
        self.threads = threads

    def train(self, request: TrainArgs) -> dict[str, Any]:
        """Start a job; its description (with its id) at once."""
        training.check(request.kind, request.task, request.params)
        kind = self.catalog.kinds.get(request.kind)
        if kind is None:
            raise BadRequest(f"no plugin registers model kind {request.kind!r}", field="kind")
        if request.refresh and not kind.refreshable:
            raise BadRequest(f"'refresh' (continue the current version) is for kinds that can: {request.kind} cannot",
                             field="refresh")
        if request.dataset is not None:
            self.datasets.resolve(request.dataset)  # an unknown dataset or version: 404 now, not a failed job
        job = self.jobs.new(request.model_id, request.kind)
        job.task = self.spawn(run_job(job, self._run(job, request), self.clock), job.id, for_message=True)
        return job.describe()

    def active(self, model: str) -> bool:
        """Is a training job for `model` queued or running?"""
        return any(job.model == model and job.active and job.kind != "backfill" for job in self.jobs.jobs.values())

    def job(self, job_id: str) -> Job:
        job = self.jobs.jobs.get(job_id)
        if job is None:
            raise NotFound(f"no job {job_id!r:.40}", field="job_id")
        return job

    async def cancel(self, job_id: str) -> dict[str, Any]:
        """Cancel a job (training or backfill) that has not begun writing its result: its tasks are stopped
        on the executor and the registry and datasets stay as they were."""
        job = self.job(job_id)
        cancelled = job.active and not job.stage.startswith("writing")
        if cancelled:
            job.status, job.stage, job.finished = "cancelled", "cancelled", self.clock.time()
            if job.task is not None:  # first: from here on the job writes nothing
                job.task.cancel()
            await self.executor.cancel(job)
        return {**job.describe(), "cancelled": cancelled}

    async def _run(self, job: Job, request: TrainArgs) -> dict[str, Any]:
        job.status, job.stage = "running", "preparing rows"
        source: dict[str, Any] = {}
        if request.dataset is not None:
            x, y, names, pipeline, source["dataset"] = await self._dataset_rows(request)
        else:
            bars = request.columns(NAMES)
            if request.close is None:
                assert request.symbol is not None and request.timeframe is not None
                bars = columns(await self.indicators.bars(request.symbol, request.timeframe))
            rows = await self.features.transform(request.pipeline or "default", bars)
            x, y, names = await self.run_in_thread(request.labelled, rows, np.asarray(bars["close"], dtype=np.float64))
            pipeline = rows["pipeline"]
        split = int(len(x) * (1 - request.test_fraction))
        if split < 10 or len(x) - split < 5:
            raise BadRequest(f"{len(x)} labelled rows: too few to train and hold out",
                             field="dataset" if request.dataset is not None else "close")
        base = await self._base(request) if request.refresh else None
        job.stage = "training"
        result = await self.executor.fit(job, request.kind, request.task, dict(request.params), x[:split], y[:split],
                                         x[split:], y[split:], names, base, self.threads)
        job.stage = "writing the version"
        promote = await self._promotion(request, result["metrics"], x[split:], y[split:])
        version = await self.catalog.add(
            request.model_id, self.catalog.kinds[request.kind], result["format"], result["artifact"],
            result["described"], {"features": names, "pipeline": pipeline, "metrics": result["metrics"]},
            promote, {"trained_by": job.id, "label": request.label_spec, **source})
        await self.changed()  # every other process serves the new version before the job says done
        return {"version": version["version"], "promoted": version["promoted"], "metrics": result["metrics"],
                "train_seconds": result["seconds"], "rows": {"train": split, "test": len(x) - split}}

    async def _dataset_rows(self, request: TrainArgs) -> tuple[np.ndarray, np.ndarray, list[str], str, str]:
        """(x, y, features, pipeline, NAME@VERSION) of the dataset the request names, labelled and in bar
        time."""
        assert request.dataset is not None
        manifest, series = await self.run_in_thread(self.datasets.read, request.dataset, request.symbols,
                                                    request.timeframe)
        pipeline: str = manifest["pipeline"]
        if request.pipeline is not None and request.pipeline not in (pipeline, pipeline.split("@")[0]):
            raise BadRequest(f"dataset {request.dataset} holds rows of pipeline {pipeline}, not {request.pipeline}",
                             field="pipeline")
        x, y, names = await self.run_in_thread(request.labelled_series, series, list(manifest["features"]))
        return x, y, names, pipeline, f"{manifest['name']}@{manifest['version']}"

    async def _base(self, request: TrainArgs) -> bytes:
        """The artifact training continues from: the current version's, of the same kind."""
        current = self.catalog.get(request.model_id, field="model_id")
        if current.manifest["kind"] != request.kind:
            raise BadRequest(f"refresh continues the current version, a {current.manifest['kind']} model, not "
                             f"{request.kind}", field="refresh")
        path = self.catalog.store.folder(request.model_id, current.version) / current.manifest["artifact"]
        data: bytes = await self.run_in_thread(path.read_bytes)
        return data

    async def _promotion(self, request: TrainArgs, metrics: Mapping[str, Any], x: np.ndarray,
                         y: np.ndarray) -> bool:
        """The job's rule: always, never, or when the new version beats the current one on the holdout."""
        if request.promote != "if_better":
            return bool(request.promote)
        current = self.catalog.current.get(request.model_id)
        if current is None:
            return True
        prediction = await self.run_in_thread(current.predictor.predict, np.ascontiguousarray(x))
        baseline = scores(request.task, y, prediction.proba, prediction.values)
        key = "log_loss" if request.task == CLASSIFICATION else "rmse"
        return bool(metrics[key] < baseline[key])
