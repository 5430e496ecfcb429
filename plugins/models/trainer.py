"""Training jobs as the service runs them: rows from the ``features`` service (and held bars from
``indicators``), labels and the time-ordered split prepared off the event loop, the model trained in the
process pool (`training`), then the version written and promoted by the job's rule.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import numpy as np

from ml_processing.sdk import BadRequest, Clock, MlpError, NotFound, get_logger
from ml_processing.sdk.columns import NAMES
from ml_processing.sdk.model import CLASSIFICATION
from ml_processing.sdk.services.features import Features
from ml_processing.sdk.services.indicators import Indicators, columns

from . import training
from .catalog import Catalog
from .train_request import TrainArgs
from .training import Job, Jobs, scores

log = get_logger(__name__)


class Trainer:
    def __init__(self, catalog: Catalog, jobs: Jobs, features: Features, indicators: Indicators,
                 spawn: Callable[..., Any], run_in_thread: Callable[..., Awaitable[Any]],
                 clock: Clock, threads: int) -> None:
        self.catalog = catalog
        self.jobs = jobs
        self.features = features
        self.indicators = indicators
        self.spawn = spawn
        self.run_in_thread = run_in_thread
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
        job = self.jobs.new(request.model_id, request.kind)
        self.spawn(self._run(job, request), job.id, for_message=True)
        return job.describe()

    def active(self, model: str) -> bool:
        """Is a job for `model` queued or running?"""
        return any(job.model == model and job.status in ("queued", "running") for job in self.jobs.jobs.values())

    def job(self, job_id: str) -> Job:
        job = self.jobs.jobs.get(job_id)
        if job is None:
            raise NotFound(f"no job {job_id!r:.40}", field="job_id")
        return job

    def cancel(self, job_id: str) -> dict[str, Any]:
        job = self.job(job_id)
        cancelled = self.jobs.cancel(job)
        return {**job.describe(), "cancelled": cancelled}

    async def _run(self, job: Job, request: TrainArgs) -> None:
        try:
            job.stage = "preparing rows"
            bars = request.columns(NAMES)
            if request.close is None:
                assert request.symbol is not None and request.timeframe is not None
                bars = columns(await self.indicators.bars(request.symbol, request.timeframe))
            rows = await self.features.transform(request.pipeline, bars)
            x, y, names = await self.run_in_thread(request.labelled, rows, np.asarray(bars["close"], dtype=np.float64))
            split = int(len(x) * (1 - request.test_fraction))
            if split < 10 or len(x) - split < 5:
                raise BadRequest(f"{len(x)} labelled rows: too few to train and hold out", field="close")
            base = await self._base(request) if request.refresh else None
            result = await self.jobs.run(job, request.kind, request.task, dict(request.params), x[:split], y[:split],
                                         x[split:], y[split:], names, base, self.threads)
            job.stage = "writing the version"
            promote = await self._promotion(request, result["metrics"], x[split:], y[split:])
            version = await self.catalog.add(
                request.model_id, self.catalog.kinds[request.kind], result["format"], result["artifact"],
                result["described"], {"features": names, "pipeline": rows["pipeline"], "metrics": result["metrics"]},
                promote, {"trained_by": job.id, "label": request.label_spec})
            job.status, job.stage = "done", "done"
            job.result = {"version": version["version"], "promoted": version["promoted"],
                          "metrics": result["metrics"], "train_seconds": result["seconds"],
                          "rows": {"train": split, "test": len(x) - split}}
        except asyncio.CancelledError:
            job.status = "cancelled"
            raise
        except MlpError as exc:
            job.status, job.error = "failed", exc.message
        except Exception as exc:  # the worker's failure (or a cancelled pool): the registry is as it was
            if job.status != "cancelled":
                job.status, job.error = "failed", f"{type(exc).__name__}: {exc}"
                log.error("training_job_failed", job=job.id, model=job.model, error=job.error)
        finally:
            job.finished = job.finished or self.clock.time()

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
