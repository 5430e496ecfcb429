"""The ``models`` service: the model registry, inference (REST, bus and the Open Inference Protocol),
training jobs and live learning, each a collaborator of the one actor; every handler here only translates
a declared request to its collaborator:

* `Catalog` (catalog.py): the loaded versions and the registry's changes; registration.py adds uploads;
* `Inference` (inference.py): predictions, the prediction cache, the input checks every route shares;
* `V2Endpoints` (v2_endpoints.py): the Open Inference Protocol;
* `Trainer` (trainer.py): training jobs on the executor (executors.py: the local process pool or Dask);
* `Backfill` (backfill.py): feature rows of many series computed on the executor, stored as datasets
  (datasets.py) that training jobs read;
* `LiveLearning` (live.py) and `EnsembleWeights` (weights.py): predictions on live bars, labels, learning.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ml_processing.sdk import Actor, NoArgs, get_logger, op
from ml_processing.sdk.services.features import Features
from ml_processing.sdk.services.indicators import Indicators
from ml_processing.sdk.services.models import LiveArgs, LiveReport

from . import registration
from .backfill import Backfill
from .catalog import Catalog, Loaded
from .config import ModelsConfig
from .datasets import DatasetStore
from .declarations import (
    BackfillArgs,
    Cancelled,
    DatasetList,
    DeleteArgs,
    Deleted,
    JobArgs,
    JobInfo,
    JobList,
    KindInfo,
    LearnArgs,
    Learned,
    MemberLabelArgs,
    ModelArgs,
    ModelDetails,
    ModelList,
    ModelSummary,
    PredictArgs,
    PredictBatchArgs,
    Predicted,
    PredictedBatch,
    PromoteArgs,
    RegisterArgs,
    Registered,
    V2InferArgs,
    V2Live,
    V2Metadata,
    V2ModelArgs,
    V2ModelReady,
    V2Raw,
    V2Ready,
    V2Server,
    V2VersionArgs,
    V2VersionInferArgs,
    Weights,
)
from .defaults import register_defaults
from .executors import make_executor
from .inference import Inference
from .live import LiveLearning
from .registry import ModelStore
from .train_request import TrainArgs
from .trainer import Trainer
from .training import Jobs
from .v2_endpoints import V2Endpoints
from .weights import EnsembleWeights

__all__ = ["Models", "ModelsConfig"]

log = get_logger(__name__)

LATENCY_BUCKETS = (25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 100e-3, 1.0)


class Models(Actor):
    """Registry, inference, V2, training and live learning (docs/MODELS.md)."""

    name = "models"
    needs = ("features",)  # the default models are built from its pipeline at the first start

    async def on_start(self) -> None:
        config: ModelsConfig = self.config
        store = ModelStore(self.ctx.data_dir / config.directory)
        if not self.ctx.replica:  # a worker process of a serve group reads; only the serve process writes
            store.sweep()
        options = {"native_threads": config.native_threads, "onnx": config.onnx, "onnx_max_rows": config.onnx_max_rows,
                   "onnx_custom_ops": config.onnx_custom_ops}
        self.catalog = Catalog(store, self.registries.get("model_kinds", {}), options, self.run_in_thread)
        self.features = Features(self.request)
        cache = self.settings.cache
        self.inference = Inference(
            self.catalog, self.cache("predictions", cache.model_cache_size, cache.prediction_cache_ttl),
            self.histogram("mlp_model_latency_seconds", "Server-side prediction latency per model", ("model",),
                           LATENCY_BUCKETS),
            self.clock, self.features, config.max_batch, self.run_in_thread)
        self.v2 = V2Endpoints(self.catalog, self.inference, self.settings.service.name, config.max_batch,
                              self.run_in_thread)
        self.weights = EnsembleWeights(store.root, config.hedge_eta, config.hedge_floor, self.inference.invalidate)
        self.catalog.on_change.append(self._rebind)
        self.executor = make_executor(config.executor, config.training_workers, config.dask_timeout_s,
                                      config.dask_partition_rows, self.run_in_thread)
        self.spawn(self.executor.start(), "executor_start", for_message=True)  # never delays serving
        datasets = DatasetStore(self.ctx.data_dir / config.datasets_directory, config.keep_datasets)
        if not self.ctx.replica:
            datasets.sweep()
        jobs = Jobs(clock=self.clock)
        indicators = Indicators(self.request)
        self.trainer = Trainer(self.catalog, jobs, self.executor, datasets, self.features, indicators, self.spawn,
                               self.run_in_thread, self.ctx.changed, self.clock, config.training_threads)
        self.backfill = Backfill(datasets, jobs, self.executor, self.features, indicators, self.registries, self.spawn,
                                 self.run_in_thread, self.clock)
        self.live = LiveLearning(config, self.catalog, self.inference, self.weights, self.trainer, self.publish,
                                 self.clock)
        self.catalog.load_all()
        if not self.catalog.current and config.defaults and not self.ctx.replica:
            await register_defaults(self.catalog, self.features, self.run_in_thread)
        for loaded in self.catalog.current.values():
            self.weights.bind(loaded)
        if not self.ctx.primary:  # the serve process is the one learner: labels joined here are sent there
            self.live.forward = self._forward_label
        for prefix, handler in self.live.subscriptions():
            self.subscribe(prefix, handler)
        if not self.ctx.replica:  # the serve process saves what is learned live; a worker process never writes
            self.spawn(self.live.run_checkpoints(self.ctx.changed), "checkpoints")

    def _rebind(self, name: str, loaded: Loaded | None) -> None:
        if loaded is not None:
            self.weights.bind(loaded)

    async def on_stop(self) -> None:
        for job in list(self.trainer.jobs.jobs.values()):
            if job.active:
                await self.trainer.cancel(job.id)
        await self.executor.close()
        saved = [] if self.ctx.replica else await self.live.checkpoint()
        if saved:
            log.info("models_checkpointed", models=saved)

    # -- a symbol's live state moving between processes (`ml_processing.core.shards`): the predictions
    # awaiting their label stay behind (their labels are not learned); signals start from flat

    def shard_symbols(self) -> set[str]:
        return {symbol for _, symbol, _ in self.live.series}

    def shard_drop(self, symbols: Sequence[str]) -> None:
        gone = set(symbols)
        for key in [k for k in self.live.series if k[1] in gone]:
            del self.live.series[key]

    async def shard_load(self, states: Mapping[str, Any]) -> None:
        self.shard_drop(list(states))

    # -- registry -----------------------------------------------------------------------------------------

    @op(NoArgs, reply=list[KindInfo], role="read")
    def handle_kinds(self, args: NoArgs) -> list[dict[str, Any]]:
        """Registered model kinds and the formats they accept."""
        return [kind.describe() for kind in self.catalog.kinds.values()]

    @op(NoArgs, reply=ModelList, role="read")
    def handle_list(self, args: NoArgs) -> dict[str, Any]:
        """Every model: current and serving version, status, kind, features, load time."""
        return {"models": [self.catalog.summary(name) for name in self.catalog.names()]}

    @op(ModelArgs, reply=ModelDetails, role="read")
    def handle_get(self, args: ModelArgs) -> dict[str, Any]:
        """One model: every version with its kind, metrics, files and status; the promotion history."""
        return self.catalog.details(args.model_id)

    @op(RegisterArgs, reply=Registered, role="admin")
    async def handle_register(self, args: RegisterArgs) -> dict[str, Any]:
        """Register a version from an artifact (xgboost, LightGBM, skops, ONNX, ensemble; base64 in JSON)."""
        config: ModelsConfig = self.config
        return await registration.register(self.catalog, self.features, args, config.max_artifact_bytes,
                                           config.onnx_custom_ops)

    @op(PromoteArgs, reply=ModelSummary, role="admin")
    def handle_promote(self, args: PromoteArgs) -> dict[str, Any]:
        """Make a version the current one."""
        self.catalog.promote(self.catalog.get(args.model_id, args.version, field="model_id"))
        return self.catalog.summary(args.model_id)

    @op(ModelArgs, reply=ModelSummary, role="admin")
    def handle_rollback(self, args: ModelArgs) -> dict[str, Any]:
        """Back to the version that was current before this one."""
        self.catalog.rollback(args.model_id)
        return self.catalog.summary(args.model_id)

    @op(DeleteArgs, reply=Deleted, role="admin")
    def handle_delete(self, args: DeleteArgs) -> dict[str, Any]:
        """Delete a version (the current one only with force=true: the model then serves its previous)."""
        remaining = self.catalog.delete(args.model_id, args.version, args.force)
        return {"model": args.model_id, "deleted": args.version, "versions": remaining}

    # -- inference ------------------------------------------------------------------------------------------

    @op(PredictArgs, reply=Predicted, role="compute", spread=True)
    def handle_predict(self, args: PredictArgs) -> Any:
        """One prediction: a row of features (or OHLCV bars, for a model bound to a feature pipeline)."""
        return self.inference.predict(args)

    @op(PredictBatchArgs, reply=PredictedBatch, role="compute", spread=True)
    def handle_predict_batch(self, args: PredictBatchArgs) -> Any:
        """Predictions (and probabilities) for every row of a batch."""
        return self.inference.predict_batch(args)

    # -- Open Inference Protocol (KServe V2) ----------------------------------------------------------------

    @op(NoArgs, reply=V2Server, role="read")
    def handle_v2_server(self, args: NoArgs) -> Any:
        """V2 server metadata."""
        return self.v2.server()

    @op(NoArgs, reply=V2Live, role="read")
    def handle_v2_live(self, args: NoArgs) -> Any:
        """V2 liveness."""
        return {"live": True}

    @op(NoArgs, reply=V2Ready, role="read")
    def handle_v2_ready(self, args: NoArgs) -> Any:
        """V2 readiness: a model is loaded."""
        return self.v2.ready()

    @op(V2ModelArgs, reply=V2Metadata, role="read")
    def handle_v2_model(self, args: V2ModelArgs) -> Any:
        """V2 model metadata."""
        return self.v2.metadata(self.catalog.get(args.name, field="name"))

    @op(V2VersionArgs, reply=V2Metadata, role="read")
    def handle_v2_version(self, args: V2VersionArgs) -> Any:
        """V2 model metadata of a version."""
        return self.v2.metadata(self.catalog.get(args.name, args.version, field="name"))

    @op(V2ModelArgs, reply=V2ModelReady, role="read")
    def handle_v2_model_ready(self, args: V2ModelArgs) -> Any:
        """V2 model readiness."""
        return self.v2.model_ready(self.catalog.get(args.name, field="name"))

    @op(V2VersionArgs, reply=V2ModelReady, role="read")
    def handle_v2_version_ready(self, args: V2VersionArgs) -> Any:
        """V2 readiness of a version."""
        return self.v2.model_ready(self.catalog.get(args.name, args.version, field="name"))

    @op(V2InferArgs, reply=V2Raw, role="compute", spread=True)
    def handle_v2_infer(self, args: V2InferArgs) -> Any:
        """V2 inference (JSON or binary tensors); errors are the protocol's {"error": "..."}."""
        return self.v2.infer(args)

    @op(V2VersionInferArgs, reply=V2Raw, role="compute")
    def handle_v2_version_infer(self, args: V2VersionInferArgs) -> Any:
        """V2 inference on a version."""
        return self.v2.infer(args, args.version)

    # -- training -------------------------------------------------------------------------------------------

    @op(TrainArgs, reply=JobInfo, role="admin")
    def handle_train(self, args: TrainArgs) -> dict[str, Any]:
        """Start a training job (xgboost, LightGBM, scikit-learn, river) on OHLCV columns or a held series."""
        return self.trainer.train(args)

    @op(NoArgs, reply=JobList, role="read")
    def handle_jobs(self, args: NoArgs) -> dict[str, Any]:
        """Training and backfill jobs, their status, and where they run."""
        jobs = self.trainer.jobs
        return {"jobs": [job.describe() for job in jobs.jobs.values()], "active": jobs.active,
                "executor": self.executor.describe()}

    @op(JobArgs, reply=JobInfo, role="read")
    def handle_job(self, args: JobArgs) -> dict[str, Any]:
        """One training or backfill job."""
        return self.trainer.job(args.job_id).describe()

    @op(JobArgs, reply=Cancelled, role="admin")
    async def handle_cancel(self, args: JobArgs) -> dict[str, Any]:
        """Cancel a training or backfill job."""
        return await self.trainer.cancel(args.job_id)

    @op(BackfillArgs, reply=JobInfo, role="admin")
    async def handle_backfill(self, args: BackfillArgs) -> dict[str, Any]:
        """Start a backfill: a pipeline's feature rows for many series, computed on the executor, stored as a dataset."""
        return await self.backfill.start(args)

    @op(NoArgs, reply=DatasetList, role="read")
    async def handle_datasets(self, args: NoArgs) -> dict[str, Any]:
        """The datasets backfills stored: versions, pipeline, features, series and rows."""
        return {"datasets": await self.run_in_thread(self.backfill.store.describe)}

    # -- live learning --------------------------------------------------------------------------------------

    @op(LearnArgs, reply=Learned, role="admin")
    def handle_learn(self, args: LearnArgs) -> dict[str, Any]:
        """A label: for a row (test then train) or for a live prediction (symbol, timeframe, ts)."""
        return self.live.learn(args)

    @op(MemberLabelArgs, reply=Learned, role="worker")
    def handle_learn_member(self, args: MemberLabelArgs) -> dict[str, Any]:
        """A label joined by the process owning its symbol (a worker process or host): learned here, where
        online models and ensemble weights have their one learner (the row is tested, then trained)."""
        self.live.counts["member_labels"] += 1
        return self.live.learn(args)

    def _forward_label(self, model: str, row: list[float], label: Any) -> None:
        self.spawn(self.request("models", "learn_member", {"model": model, "label": label, "features": row}),
                   "forward_label", for_message=True)

    @op(ModelArgs, reply=Weights, role="read")
    def handle_weights(self, args: ModelArgs) -> dict[str, Any]:
        """An ensemble's adaptive weights (Hedge: learning rate, floor, updates so far)."""
        hedge = self.weights.of(self.catalog.get(args.model_id, field="model_id"))
        return {"model": args.model_id, **hedge.state()}

    @op(ModelArgs, reply=Weights, role="admin")
    def handle_reset_weights(self, args: ModelArgs) -> dict[str, Any]:
        """Put an ensemble's weights back to equal."""
        hedge = self.weights.reset(self.catalog.get(args.model_id, field="model_id"))
        self.live.dirty.add(args.model_id)
        return {"model": args.model_id, **hedge.state()}

    @op(LiveArgs, reply=LiveReport, role="read")
    def handle_live(self, args: LiveArgs) -> dict[str, Any]:
        """Live predictions, signals, labels, prequential scores, ensemble weights, drift."""
        return self.live.report(args.timelines)

    # -- health ---------------------------------------------------------------------------------------------

    def _performance(self) -> dict[str, Any]:
        return {**self.inference.performance(), "model_accuracy": self.live.accuracy()}

    def health(self) -> dict[str, Any]:
        catalog = self.catalog
        models = [catalog.summary(name) for name in catalog.names()]
        for entry in models:
            if entry["model"] in self.live.scores:
                entry["live"] = self.live.scores[entry["model"]].report()
        return {"ml_status": {"models_loaded": len(catalog.current),
                              "models_healthy": sum(1 for m in models if m["status"] == "ok"),
                              "training_active": bool(self.trainer.jobs.active)},
                "performance_metrics": self._performance(),
                "models": models,
                "technical_analysis": {"signals_generated": self.live.counts["signals"]}}

    def counters(self) -> dict[str, float]:
        """Live learning's events (predictions, signals, labels, drifts, retrains ...) for Prometheus."""
        return dict(self.live.counts)

    def metrics(self) -> dict[str, Any]:
        return {"performance_metrics": self._performance(),
                "model_stats": {name: {"version": loaded.version, "load_ms": round(loaded.load_ms, 3),
                                       "paths": loaded.predictor.paths()}
                                for name, loaded in self.catalog.current.items()}}
