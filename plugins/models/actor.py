"""The ``models`` service: the model registry (register, promote, roll back, delete, list) and inference.

Every model's current version is loaded at start, before the service is ready (the load time of each is in
``/health/models``). A version that fails verification is refused with the reason and the model keeps
serving the newest version that loads. Swapping versions replaces one reference: a request that already
holds the old predictor finishes on it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from ml_processing.sdk import (
    VERSION,
    Actor,
    BadRequest,
    MlpError,
    NotFound,
    TooLarge,
    Unavailable,
    get_logger,
)
from ml_processing.sdk.bars import FIELDS
from ml_processing.sdk.model import CLASSIFICATION, Described, ModelKind, Prediction, Predictor

from . import v2
from .kinds import river_artifact
from .live import Live
from .online import LiveSpec, Scores
from .registry import ModelStore, Refused, check_name
from .train_request import TrainRequest
from .training import Job, Jobs, scores

log = get_logger(__name__)

#: Rows above which a batch is predicted on the thread pool, off the event loop.
INLINE_ROWS = 2_000
LATENCY_BUCKETS = (25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 100e-3, 1.0)


@dataclass(frozen=True)
class ModelsConfig:
    """``[plugins.models]``."""

    directory: str = "models"  # under [service] data_dir
    defaults: bool = True  # first start with no models: train and register the default models
    native_threads: int = 1  # xgboost nthread on the native path (large batches)
    onnx: bool = True  # the ONNX fast path for tree ensembles
    onnx_max_rows: int = 64  # requests up to this many rows take the ONNX path
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


@dataclass
class Loaded:
    name: str
    version: int
    manifest: dict[str, Any]
    predictor: Predictor
    load_ms: float

    @property
    def features(self) -> list[str] | None:
        names = self.manifest.get("features")
        return list(names) if names else None

    def describe(self) -> dict[str, Any]:
        m = self.manifest
        return {"model": self.name, "version": self.version, "kind": m["kind"], "format": m["format"],
                "task": m["task"], "classes": m.get("classes"), "n_features": m["n_features"],
                "features": m.get("features"), "pipeline": m.get("pipeline"), "metrics": m.get("metrics", {}),
                "details": m.get("details", {}), "created": m["created"], "load_ms": round(self.load_ms, 3),
                "paths": self.predictor.paths()}


@dataclass
class _Throughput:
    """Predictions per second over the last `window` seconds."""

    window: int = 10
    buckets: deque[list[int]] = field(default_factory=deque)

    def add(self, count: int) -> None:
        second = int(time.monotonic())
        if self.buckets and self.buckets[-1][0] == second:
            self.buckets[-1][1] += count
        else:
            self.buckets.append([second, count])
        while self.buckets and self.buckets[0][0] <= second - self.window:
            self.buckets.popleft()

    def rate(self) -> float:
        now = int(time.monotonic())
        total = sum(c for s, c in self.buckets if s > now - self.window)
        return total / self.window


class Models(Actor):
    """Ops: ``kinds``, ``list``, ``get``, ``register``, ``promote``, ``rollback``, ``delete``, ``predict``,
    ``predict_batch``."""

    name = "models"

    async def on_start(self) -> None:
        self.kinds: Mapping[str, ModelKind] = self.registries.get("model_kinds", {})
        self.store = ModelStore(self.ctx.data_dir / self.config.directory)
        self.store.sweep()
        self.current: dict[str, Loaded] = {}
        self.others: dict[tuple[str, int], Loaded] = {}  # non-current versions loaded on request
        self.refused: dict[str, dict[int, str]] = {}
        self.predictions = 0
        self.latency_ns = 0
        self.throughput = _Throughput()
        cache = self.settings.cache
        self.cache_ = self.cache("predictions", cache.model_cache_size, cache.prediction_cache_ttl)
        self.latency = self.histogram("mlp_model_latency_seconds", "Server-side prediction latency per model",
                                      ("model",), LATENCY_BUCKETS)
        self._latency_of: dict[str, Any] = {}
        self._load_all()
        if not self.current and self.config.defaults:
            from .defaults import register_defaults

            await register_defaults(self)
        self.live = Live(self)
        self.live.start()
        self.jobs = Jobs(self.config.training_workers)
        self.spawn(self._checkpoints(), "checkpoints")

    async def on_stop(self) -> None:
        for job in list(self.jobs.jobs.values()):
            self.jobs.cancel(job)
        self.jobs.close()
        saved = await self.live.checkpoint()
        if saved:
            log.info("models_checkpointed", models=saved)

    async def _checkpoints(self) -> None:
        while True:
            await asyncio.sleep(self.config.checkpoint_s)
            await self.live.checkpoint()

    async def checkpoint(self, loaded: Loaded) -> None:
        """Save an online model's current state as a new, current version; keep the newest checkpoints."""
        kind = self.kinds[loaded.manifest["kind"]]
        data = await self.run_in_thread(river_artifact, loaded.predictor.model)  # type: ignore[attr-defined]
        kept = ("kind", "format", "artifact", "task", "classes", "n_features", "features", "pipeline", "details")
        manifest = {k: loaded.manifest[k] for k in kept if k in loaded.manifest}
        manifest["metrics"] = {**loaded.manifest.get("metrics", {}),
                               **self.live.scores.get(loaded.name, _NO_SCORES).report()}
        manifest["checkpoint_of"] = loaded.manifest.get("checkpoint_of", loaded.version)
        await self._store_version(loaded.name, kind, manifest, data, True)
        checkpoints = [v for v in self.store.versions(loaded.name)
                       if self._is_checkpoint(loaded.name, v) and v != self.current[loaded.name].version]
        for version in checkpoints[:-(self.config.keep_checkpoints - 1) or None]:
            self.store.delete(loaded.name, version)
            self.others.pop((loaded.name, version), None)

    def _is_checkpoint(self, name: str, version: int) -> bool:
        try:
            return "checkpoint_of" in self.store.manifest(name, version)
        except Refused:
            return False

    # -- loading ----------------------------------------------------------------------------------------

    def _options(self) -> dict[str, Any]:
        return {"native_threads": self.config.native_threads, "onnx": self.config.onnx,
                "onnx_max_rows": self.config.onnx_max_rows, "resolve": self._resolve}

    def _load(self, name: str, version: int) -> Loaded:
        """Verify and load one version; `Refused` with the reason."""
        start = time.perf_counter()
        manifest = self.store.manifest(name, version)
        kind = self.kinds.get(manifest.get("kind", ""))
        if kind is None:
            raise Refused(f"{name}@{version}: no plugin registers model kind {manifest.get('kind')!r}")
        try:
            predictor = kind.load(self.store.folder(name, version), manifest, self._options())
        except Exception as exc:  # the kind's library failed on verified files: refuse, keep serving
            raise Refused(f"{name}@{version}: {manifest['kind']} could not load it: {type(exc).__name__}: {exc}") from exc
        return Loaded(name, version, manifest, predictor, (time.perf_counter() - start) * 1000)

    def _load_all(self) -> None:
        names = self.store.names()
        start = time.perf_counter()
        for kind in {self._kind_on_disk(n) for n in names}:
            if kind in self.kinds:
                self.kinds[kind].prepare()
        if names:
            log.info("model_libraries_ready", ms=round((time.perf_counter() - start) * 1000, 1))
        ensembles = [n for n in names if self._kind_on_disk(n) == "ensemble"]
        for name in [n for n in names if n not in ensembles] + ensembles:  # members before their ensembles
            self._load_serving(name)

    def _kind_on_disk(self, name: str) -> str | None:
        pointer = self.store.pointer(name)
        version = pointer["version"] or max(self.store.versions(name), default=0)
        try:
            return str(self.store.manifest(name, version)["kind"]) if version else None
        except Refused:
            return None

    def _load_serving(self, name: str) -> None:
        """Load the current version, or (refused) the newest earlier one that loads."""
        pointer = self.store.pointer(name)
        versions = self.store.versions(name)
        order = [v for v in [pointer["version"], *reversed(pointer["history"])] if v in versions]
        order += [v for v in reversed(versions) if v not in order]
        for version in order:
            try:
                loaded = self._load(name, version)
            except Refused as exc:
                self.refused.setdefault(name, {})[version] = exc.reason
                log.error("model_version_refused", model=name, version=version, reason=exc.reason)
                continue
            self.current[name] = loaded
            log.info("model_loaded", model=name, version=version, kind=loaded.manifest["kind"],
                     load_ms=round(loaded.load_ms, 1), paths=loaded.predictor.paths(),
                     fallback=version != pointer["version"])
            return

    def _resolve(self, ref: str) -> Predictor:
        """A model by ``name`` (its current version) or ``name@version``: for ensembles' members."""
        name, _, version = ref.partition("@")
        return self._get(name, int(version) if version else None).predictor

    def _get(self, name: Any, version: Any = None) -> Loaded:
        if not isinstance(name, str) or not name:
            raise BadRequest("'model' must be a model name (GET /api/v1/models lists them)", field="model")
        if version is None:
            loaded = self.current.get(name)
            if loaded is None:
                if name in self.refused:
                    raise Unavailable(f"model {name!r} has no version that loads: "
                                      f"{'; '.join(self.refused[name].values())}", field="model")
                raise NotFound(f"no model {name!r} (models: {', '.join(sorted(self.current)) or 'none'})",
                               field="model")
            return loaded
        number = _int(version, "version")
        current = self.current.get(name)
        if current is not None and current.version == number:
            return current
        loaded = self.others.get((name, number))
        if loaded is None:
            if number not in self.store.versions(name):
                raise NotFound(f"model {name!r} has no version {number}", field="version")
            try:
                loaded = self._load(name, number)
            except Refused as exc:
                raise Unavailable(exc.reason, field="version") from None
            self.others[(name, number)] = loaded
        return loaded

    # -- registry ops -----------------------------------------------------------------------------------

    def handle_kinds(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        return [kind.describe() for kind in self.kinds.values()]

    def handle_list(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"models": [self._summary(name) for name in sorted(set(self.store.names()) | set(self.current))]}

    def _summary(self, name: str) -> dict[str, Any]:
        loaded = self.current.get(name)
        pointer = self.store.pointer(name)
        out: dict[str, Any] = {"model": name, "current": pointer["version"], "versions": self.store.versions(name),
                               "version": loaded.version if loaded else None,
                               "serving": loaded.version if loaded else None,
                               "status": self._status(name)}
        if loaded is not None:
            out.update({k: v for k, v in loaded.describe().items() if k not in ("model", "version")})
        if name in self.refused:
            out["refused"] = {str(v): reason for v, reason in self.refused[name].items()}
        return out

    def _status(self, name: str) -> str:
        loaded = self.current.get(name)
        if loaded is None:
            return "unavailable"
        return "ok" if loaded.version == self.store.pointer(name)["version"] else "degraded"

    def handle_get(self, args: dict[str, Any]) -> dict[str, Any]:
        name = check_name(args.get("model_id") or args.get("model"), "model_id")
        if not self.store.versions(name):
            raise NotFound(f"no model {name!r}", field="model_id")
        versions = []
        for version in self.store.versions(name):
            try:
                manifest = self.store.manifest(name, version)
                versions.append({"version": version, "kind": manifest["kind"], "created": manifest["created"],
                                 "metrics": manifest.get("metrics", {}), "pipeline": manifest.get("pipeline"),
                                 "files": manifest["files"], "status": "ok"})
            except Refused as exc:
                versions.append({"version": version, "status": "refused", "reason": exc.reason})
        return {**self._summary(name), "history": self.store.pointer(name)["history"], "versions": versions}

    async def handle_register(self, args: dict[str, Any]) -> dict[str, Any]:
        """Register a version from an uploaded artifact: ``{model_id, kind, format, artifact (bytes, or
        base64 in JSON), features (names) or pipeline (NAME@VERSION), metrics?, promote?}``."""
        name = check_name(args.get("model_id") or args.get("model"), "model_id")
        kind = self.kinds.get(args.get("kind"))  # type: ignore[arg-type]
        if kind is None:
            raise BadRequest(f"unknown model kind {args.get('kind')!r:.40} (kinds: {', '.join(self.kinds)})",
                             field="kind")
        fmt = args.get("format") or (kind.formats[0] if kind.formats else "")
        if fmt not in kind.formats:
            raise BadRequest(f"{kind.name} models are uploaded as {', '.join(kind.formats) or 'nothing'}, not "
                             f"{fmt!r:.40}", field="format")
        data = _artifact(args.get("artifact"), self.config.max_artifact_mb)
        return await self.register(name, kind, fmt, data, args)

    async def register(self, name: str, kind: ModelKind, fmt: str, data: bytes, args: Mapping[str, Any],
                       extra: Mapping[str, Any] | None = None, described: Described | None = None) -> dict[str, Any]:
        """Check, write (compiling the fast path off the event loop), load, and maybe promote a version.
        `described` is given only by the service itself, for artifacts it wrote (river)."""
        if described is None:
            described = await self.run_in_thread(kind.check, data, fmt)
        task, n_features, classes = described.task, described.n_features, described.classes
        if kind.name == "ensemble":
            task, n_features, classes = self._ensemble_shape(described.details["members"])
        names = await self._binding(args, n_features)
        metrics = args.get("metrics") or {}
        if not isinstance(metrics, dict):
            raise BadRequest("'metrics' must be a map of name -> number", field="metrics")
        manifest = {"kind": kind.name, "format": fmt, "artifact": kind.artifact_name(fmt), "task": task,
                    "classes": classes, "n_features": n_features, "features": names, "pipeline": names and
                    args.get("pipeline"), "metrics": metrics, "details": described.details, **(extra or {})}
        if not manifest["pipeline"]:
            manifest.pop("pipeline")
        return await self._store_version(name, kind, manifest, data, args.get("promote"))

    async def _store_version(self, name: str, kind: ModelKind, manifest: dict[str, Any], data: bytes,
                             promote: bool | None) -> dict[str, Any]:
        """Write a checked version (compiling the fast path off the event loop), load it, maybe promote it."""
        written = await self.run_in_thread(self.store.write, name, manifest, {manifest["artifact"]: data},
                                           kind.compile)
        version = written["version"]
        try:
            loaded = self._load(name, version)
        except Refused as exc:
            raise BadRequest(f"the new version does not load: {exc.reason}", field="artifact") from None
        if promote is None:
            promote = name not in self.current
        if promote:
            self._swap(loaded)
        else:
            self.others[(name, version)] = loaded
        return {**loaded.describe(), "current": self.store.pointer(name)["version"], "promoted": bool(promote)}

    def _ensemble_shape(self, members: list[str]) -> tuple[str, int, list[Any] | None]:
        shapes = []
        for ref in members:
            try:
                predictor = self._resolve(ref)
            except MlpError as exc:
                raise BadRequest(f"ensemble member {ref!r}: {exc.message}", field="artifact") from None
            shapes.append((predictor.task, predictor.n_features, predictor.classes))
        if len(set(map(repr, shapes))) != 1:
            raise BadRequest(f"ensemble members disagree on task, feature count or classes: {shapes}", field="artifact")
        task, n_features, classes = shapes[0]
        return task, n_features, classes

    async def _binding(self, args: Mapping[str, Any], n_features: int) -> list[str] | None:
        """The feature names a version is bound to: given, or those of its feature pipeline."""
        pipeline, names = args.get("pipeline"), args.get("features")
        if pipeline is not None:
            if not isinstance(pipeline, str) or "@" not in pipeline:
                raise BadRequest("'pipeline' must be NAME@VERSION of a feature pipeline", field="pipeline")
            name, _, version = pipeline.partition("@")
            try:
                found = await self.request("features", "pipelines", {"pipeline": name})
            except MlpError as exc:
                raise BadRequest(f"pipeline {pipeline}: {exc.message}", field="pipeline") from None
            versions = {str(v["version"]): v for v in found["pipelines"][0]["versions"]}
            if version not in versions:
                raise BadRequest(f"pipeline {name!r} has no version {version}", field="pipeline")
            names = versions[version]["features"]
        if names is None:
            return None
        if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
            raise BadRequest("'features' must be a list of feature names", field="features")
        if n_features and len(names) != n_features:
            raise BadRequest(f"{len(names)} feature names for a model of {n_features} features", field="features")
        if len(set(names)) != len(names):
            raise BadRequest("feature names must be unique", field="features")
        return list(names)

    def _swap(self, loaded: Loaded) -> None:
        """Make `loaded` the current version: pointer first (durable), then the serving reference."""
        name = loaded.name
        pointer = self.store.pointer(name)
        history = pointer["history"]
        if pointer["version"] is not None and pointer["version"] != loaded.version:
            history = [*history, pointer["version"]]
        self.store.set_pointer(name, loaded.version, history)
        previous = self.current.get(name)
        self.current[name] = loaded
        self.others.pop((name, loaded.version), None)
        if previous is not None and previous.version != loaded.version:
            self.others[(name, previous.version)] = previous
        self.refused.get(name, {}).pop(loaded.version, None)
        if loaded.manifest["kind"] == "ensemble" and hasattr(self, "live"):
            self.live.hedge(name, loaded)
        dropped = self.cache_.discard(lambda key: key[0] != name)
        log.info("model_promoted", model=name, version=loaded.version,
                 previous=previous.version if previous else None, cache_dropped=dropped)

    def handle_promote(self, args: dict[str, Any]) -> dict[str, Any]:
        name = check_name(args.get("model_id"), "model_id")
        loaded = self._get(name, args.get("version"))
        self._swap(loaded)
        return self._summary(name)

    def handle_rollback(self, args: dict[str, Any]) -> dict[str, Any]:
        """Back to the version that was current before this one."""
        name = check_name(args.get("model_id"), "model_id")
        pointer = self.store.pointer(name)
        history = [v for v in pointer["history"] if v in self.store.versions(name)]
        if not history:
            raise BadRequest(f"model {name!r} has no earlier current version to roll back to", field="model_id")
        target = history[-1]
        loaded = self._get(name, target)
        self.store.set_pointer(name, target, history[:-1])
        previous = self.current.get(name)
        self.current[name] = loaded
        self.others.pop((name, target), None)
        if previous is not None:
            self.others[(name, previous.version)] = previous
        self.cache_.discard(lambda key: key[0] != name)
        log.info("model_rolled_back", model=name, version=target, previous=pointer["version"])
        return self._summary(name)

    def handle_delete(self, args: dict[str, Any]) -> dict[str, Any]:
        """Delete one version; the current one only with ``force`` (then the model serves its previous)."""
        name = check_name(args.get("model_id"), "model_id")
        version = _int(args.get("version"), "version")
        force = args.get("force") in (True, "true", "1")
        pointer = self.store.pointer(name)
        if version == pointer["version"] and not force:
            raise BadRequest(f"version {version} is the current version of {name!r}: promote another first, or "
                             "pass force=true", field="version")
        self.store.delete(name, version)
        self.others.pop((name, version), None)
        self.refused.get(name, {}).pop(version, None)
        remaining = self.store.versions(name)
        history = [v for v in pointer["history"] if v in remaining]
        if version == pointer["version"]:
            self.current.pop(name, None)
            if remaining:
                target = history[-1] if history else remaining[-1]
                self.store.set_pointer(name, target, history[:-1] if history else [])
                self._load_serving(name)
        elif pointer["version"] is not None:
            self.store.set_pointer(name, pointer["version"], history)
        if not remaining:
            self.store.delete_model(name)
            self.refused.pop(name, None)
        self.cache_.discard(lambda key: key[0] != name or key[1] != version)
        return {"model": name, "deleted": version, "versions": remaining}

    # -- inference --------------------------------------------------------------------------------------

    def handle_predict(self, args: dict[str, Any]) -> Any:
        """``{model, features: [...] or {name: value}, version?}`` (or ``bars``: OHLCV columns, for a model
        bound to a feature pipeline) -> prediction, probabilities, model, version, server-side latency."""
        start = time.perf_counter_ns()
        loaded = self._get(args.get("model"), args.get("version"))
        if "bars" in args and "features" not in args:
            return self._predict_bars(loaded, args, start)
        return self._predict_one(loaded, self._row(loaded, args.get("features")), start)

    def _predict_one(self, loaded: Loaded, x: np.ndarray, start: int) -> dict[str, Any]:
        key = (loaded.name, loaded.version, x.tobytes())
        hit = self.cache_.get(key)
        if hit is None:
            prediction = loaded.predictor.predict(x)
            hit = _one(prediction)
            self.cache_.put(key, hit)
            cached = False
        else:
            cached = True
        elapsed = time.perf_counter_ns() - start
        self._count(loaded.name, 1, elapsed)
        return {"model": loaded.name, "version": loaded.version, **hit, "classes": loaded.predictor.classes,
                "latency_us": round(elapsed / 1000, 1), "cached": cached}

    async def _predict_bars(self, loaded: Loaded, args: Mapping[str, Any], start: int) -> dict[str, Any]:
        pipeline = loaded.manifest.get("pipeline")
        if not pipeline:
            raise BadRequest(f"model {loaded.name}@{loaded.version} is not bound to a feature pipeline: send "
                             "'features'", field="bars")
        bars = args["bars"]
        if not isinstance(bars, dict):
            raise BadRequest("'bars' must be a map of OHLCV columns", field="bars")
        out = await self.request("features", "extract", {**bars, "pipeline": pipeline, "transform": True})
        row = np.asarray(out["values"][-1], dtype=np.float64).reshape(1, -1)
        if np.isnan(row).any():
            raise BadRequest(f"the last bar has no complete feature row yet: pipeline {pipeline} needs more than "
                             f"{out['first_complete'] or 'its lookback of'} bars", field="bars")
        result = self._predict_one(loaded, np.ascontiguousarray(row), start)
        return {**result, "features": out["features"], "row": row[0]}

    def handle_predict_batch(self, args: dict[str, Any]) -> Any:
        """``{model, rows: [[...], ...], version?}`` -> predictions (and probabilities) for every row."""
        start = time.perf_counter_ns()
        loaded = self._get(args.get("model"), args.get("version"))
        x = self._matrix(loaded, args.get("rows"))
        if len(x) > INLINE_ROWS:
            return self._batch_in_thread(loaded, x, start)
        return self._batch_reply(loaded, loaded.predictor.predict(x), start, len(x))

    async def _batch_in_thread(self, loaded: Loaded, x: np.ndarray, start: int) -> dict[str, Any]:
        prediction = await self.run_in_thread(loaded.predictor.predict, x)
        return self._batch_reply(loaded, prediction, start, len(x))

    def _batch_reply(self, loaded: Loaded, prediction: Prediction, start: int, rows: int) -> dict[str, Any]:
        elapsed = time.perf_counter_ns() - start
        self._count(loaded.name, rows, elapsed)
        return {"model": loaded.name, "version": loaded.version, "rows": rows, "predictions": prediction.values,
                "probabilities": prediction.proba, "classes": loaded.predictor.classes, "path": prediction.path,
                "latency_us": round(elapsed / 1000, 1)}

    def _count(self, name: str, rows: int, elapsed_ns: int) -> None:
        self.predictions += rows
        self.latency_ns += elapsed_ns
        self.throughput.add(rows)
        child = self._latency_of.get(name)
        if child is None:  # the labelled child, looked up once per model (labels() costs microseconds)
            child = self._latency_of[name] = self.latency.labels(name)
        child.observe(elapsed_ns / 1e9)

    def _row(self, loaded: Loaded, features: Any) -> np.ndarray:
        """One request row as a (1, n) float64 array, checked against the model."""
        n = loaded.predictor.n_features
        if isinstance(features, Mapping):
            names = loaded.features
            if names is None:
                raise BadRequest(f"model {loaded.name}@{loaded.version} has no feature names: send a list",
                                 field="features")
            missing = [k for k in names if k not in features]
            extra = [k for k in features if k not in names]
            if missing or extra:
                raise BadRequest(f"features: missing {missing[:3]}, unknown {extra[:3]} (the model takes "
                                 f"{', '.join(names)})", field="features")
            features = [features[k] for k in names]
        if isinstance(features, np.ndarray):
            features = features.reshape(-1).tolist()
        if not isinstance(features, list):
            raise BadRequest(f"'features' must be a list of {n} numbers or a map of feature name -> number",
                             field="features")
        if len(features) != n:
            raise BadRequest(f"model {loaded.name}@{loaded.version} takes {n} features, got {len(features)}",
                             field="features")
        for i, v in enumerate(features):
            if type(v) is not float and (isinstance(v, bool) or not isinstance(v, (int, float))):
                if v is None and loaded.predictor.allows_nan:
                    continue
                raise BadRequest(f"features[{i}] must be a number, got {v!r:.40}", field=f"features[{i}]")
        x = np.array([features], dtype=np.float64)
        self._check_values(loaded, x, "features")
        return x

    def _matrix(self, loaded: Loaded, rows: Any) -> np.ndarray:
        n = loaded.predictor.n_features
        if isinstance(rows, list):
            if len(rows) > self.config.max_batch:
                raise TooLarge(f"{len(rows):,} rows; at most {self.config.max_batch:,} per batch", field="rows")
            try:
                x = np.array(rows, dtype=np.float64)
            except (TypeError, ValueError):
                raise BadRequest(f"'rows' must be a list of rows of {n} numbers", field="rows") from None
        elif isinstance(rows, np.ndarray) and rows.dtype.kind in "biuf":
            x = np.ascontiguousarray(rows, dtype=np.float64)
        else:
            raise BadRequest(f"'rows' must be a list of rows of {n} numbers", field="rows")
        if x.ndim != 2 or x.shape[1] != n or not len(x):
            raise BadRequest(f"model {loaded.name}@{loaded.version} takes rows of {n} features, got shape "
                             f"{list(x.shape)}", field="rows")
        if len(x) > self.config.max_batch:
            raise TooLarge(f"{len(x):,} rows; at most {self.config.max_batch:,} per batch", field="rows")
        self._check_values(loaded, x, "rows")
        return x

    def _check_values(self, loaded: Loaded, x: np.ndarray, field: str) -> None:
        finite = np.isfinite(x)
        if finite.all():
            return
        bad = ~finite if not loaded.predictor.allows_nan else np.isinf(x)
        if bad.any():
            where = tuple(int(i) for i in np.argwhere(bad)[0])
            what = "inf" if np.isinf(x[where]) else "NaN"
            position = f"{field}[{where[-1]}]" if field == "features" else f"{field}[{where[0]}][{where[1]}]"
            raise BadRequest(f"{position} is {what}: model {loaded.name}@{loaded.version} takes finite values"
                             + ("" if loaded.predictor.allows_nan else " only"), field=position)

    # -- Open Inference Protocol (KServe V2) -------------------------------------------------------------

    def handle_v2_server(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"name": self.settings.service.name, "version": VERSION, "extensions": ["binary_tensor_data"]}

    def handle_v2_live(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"live": True}

    def handle_v2_ready(self, args: dict[str, Any]) -> dict[str, Any]:
        if not self.current:
            raise Unavailable("no model is loaded yet", field="models")
        return {"ready": True}

    def handle_v2_model(self, args: dict[str, Any]) -> dict[str, Any]:
        loaded = self._get(args.get("name"), args.get("version"))
        n = loaded.predictor.n_features
        outputs = [("predict", "FP64" if loaded.predictor.task != "classification" else "INT64", [-1])]
        if loaded.predictor.task == "classification":
            outputs.append(("predict_proba", "FP64", [-1, len(loaded.predictor.classes or [])]))
        return v2.model_metadata(loaded.name, [str(v) for v in self.store.versions(loaded.name)],
                                 f"ml-processing_{loaded.manifest['kind']}", [("input-0", "FP64", [-1, n])], outputs)

    def handle_v2_model_ready(self, args: dict[str, Any]) -> dict[str, Any]:
        loaded = self._get(args.get("name"), args.get("version"))
        return {"name": loaded.name, "version": str(loaded.version), "ready": True}

    def handle_v2_infer(self, args: dict[str, Any]) -> dict[str, Any]:
        """An inference request in the protocol's JSON tensors (or Triton's binary extension): one input of
        shape [rows, features] (or [features]); outputs ``predict`` and, for classifiers, ``predict_proba``."""
        start = time.perf_counter_ns()
        try:
            loaded = self._get(args.get("name"), args.get("version"))
            request = v2.decode_infer_request(args.get("body") or b"", args.get("headers") or {})
            if len(request.inputs) != 1:
                raise BadRequest(f"send one input tensor of shape [rows, {loaded.predictor.n_features}], got "
                                 f"{len(request.inputs)}", field="inputs")
            data = request.inputs[0].data
            if data.dtype.kind not in "biuf":
                raise BadRequest(f"input {request.inputs[0].name!r} must be numeric, not {request.inputs[0].datatype}",
                                 field="inputs[0].datatype")
            x = np.ascontiguousarray(data, dtype=np.float64)
            x = x.reshape(1, -1) if x.ndim == 1 else x
            if x.ndim != 2 or x.shape[1] != loaded.predictor.n_features:
                raise BadRequest(f"input shape {list(data.shape)}: model {loaded.name}@{loaded.version} takes "
                                 f"[rows, {loaded.predictor.n_features}]", field="inputs[0].shape")
            if len(x) > self.config.max_batch:
                raise TooLarge(f"{len(x):,} rows; at most {self.config.max_batch:,}", field="inputs[0].shape")
            self._check_values(loaded, x, "rows")
            prediction = loaded.predictor.predict(x)
            outputs: list[tuple[str, np.ndarray]] = [("predict", np.asarray(prediction.values))]
            if prediction.proba is not None:
                outputs.append(("predict_proba", prediction.proba))
            body, headers, content_type = v2.encode_infer_response(loaded.name, str(loaded.version), outputs, request)
        except MlpError as exc:
            return {"status": exc.http_status, "body": orjson.dumps({"error": exc.message}),
                    "content_type": "application/json"}
        self._count(loaded.name, len(x), time.perf_counter_ns() - start)
        return {"body": body, "headers": headers, "content_type": content_type}

    # -- training ---------------------------------------------------------------------------------------

    def handle_train(self, args: dict[str, Any]) -> dict[str, Any]:
        """Start a training job; its id comes back at once (op ``job`` follows it). See docs/MODELS.md."""
        request = TrainRequest.parse(args, self.kinds)
        job = self.jobs.new(request.model, request.kind)
        self.spawn(self._train(job, request), job.id)
        return job.describe()

    async def _train(self, job: Job, request: TrainRequest) -> None:
        try:
            job.stage = "preparing rows"
            columns = request.columns or await self.request(
                "indicators", "bars", {"symbol": request.symbol, "timeframe": request.timeframe})
            rows = await self.request("features", "transform", {**{k: columns[k] for k in columns
                                                                   if k in ("ts", *FIELDS)},
                                                                "pipeline": request.pipeline})
            x, y, names = request.labelled(rows, np.asarray(columns["close"], dtype=np.float64))
            split = int(len(x) * (1 - request.test_fraction))
            if split < 10 or len(x) - split < 5:
                raise BadRequest(f"{len(x)} labelled rows: too few to train and hold out", field="close")
            base = None
            if request.refresh:
                current = self._get(request.model)
                if current.manifest["kind"] != "xgboost":
                    raise BadRequest("refresh continues an xgboost booster only", field="refresh")
                base = (self.store.folder(request.model, current.version) / current.manifest["artifact"]).read_bytes()
            result = await self.jobs.run(job, request.kind, request.task, dict(request.params), x[:split], y[:split],
                                         x[split:], y[split:], names, base, self.config.training_threads)
            job.stage = "writing the version"
            promote = await self._promotion(request, result["metrics"], x[split:], y[split:])
            kind = self.kinds[request.kind]
            described = (Described(request.task, x.shape[1], [0, 1] if request.task == CLASSIFICATION else None,
                                   result["details"]) if request.kind == "river" else None)
            version = await self.register(request.model, kind, result["format"], result["artifact"],
                                          {"pipeline": rows["pipeline"], "metrics": result["metrics"],
                                           "promote": promote},
                                          {"trained_by": job.id, "label": request.label_spec}, described)
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
            job.finished = job.finished or time.time()

    async def _promotion(self, request: TrainRequest, metrics: Mapping[str, Any], x: np.ndarray,
                         y: np.ndarray) -> bool:
        """The job's rule: always, never, or when the new version beats the current one on the holdout."""
        if request.promote != "if_better":
            return bool(request.promote)
        current = self.current.get(request.model)
        if current is None:
            return True
        prediction = await self.run_in_thread(current.predictor.predict, np.ascontiguousarray(x))
        baseline = scores(request.task, y, prediction.proba, prediction.values)
        key = "log_loss" if request.task == CLASSIFICATION else "rmse"
        return bool(metrics[key] < baseline[key])

    def handle_jobs(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"jobs": [job.describe() for job in self.jobs.jobs.values()], "active": self.jobs.active}

    def handle_job(self, args: dict[str, Any]) -> dict[str, Any]:
        return self._job(args).describe()

    def handle_cancel(self, args: dict[str, Any]) -> dict[str, Any]:
        job = self._job(args)
        cancelled = self.jobs.cancel(job)
        return {**job.describe(), "cancelled": cancelled}

    def _job(self, args: Mapping[str, Any]) -> Job:
        job = self.jobs.jobs.get(str(args.get("job_id") or args.get("id")))
        if job is None:
            raise NotFound(f"no job {args.get('job_id')!r:.40}", field="job_id")
        return job

    # -- online ---------------------------------------------------------------------------------------------

    def handle_learn(self, args: dict[str, Any]) -> dict[str, Any]:
        """A label for one row (``features``) or for a live prediction (``symbol``, ``timeframe``, ``ts``)."""
        return self.live.learn(args)

    def _ensemble(self, args: Mapping[str, Any]) -> tuple[Loaded, Any]:
        name = check_name(args.get("model_id") or args.get("model"), "model_id")
        loaded = self._get(name)
        if loaded.manifest["kind"] != "ensemble":
            raise BadRequest(f"model {name!r} is not an ensemble", field="model_id")
        return loaded, self.live.hedge(name, loaded)

    def handle_weights(self, args: dict[str, Any]) -> dict[str, Any]:
        """An ensemble's adaptive weights (Hedge: learning rate, floor, updates so far)."""
        loaded, hedge = self._ensemble(args)
        return {"model": loaded.name, **hedge.state()}

    def handle_reset_weights(self, args: dict[str, Any]) -> dict[str, Any]:
        """Put an ensemble's weights back to equal."""
        loaded, hedge = self._ensemble(args)
        hedge.reset()
        loaded.predictor.weights = hedge.weights  # type: ignore[attr-defined]
        self.live.dirty.add(loaded.name)
        return {"model": loaded.name, **hedge.state()}

    def handle_live(self, args: dict[str, Any]) -> dict[str, Any]:
        """Live predictions, signals, labels, prequential scores, ensemble weights, drift; ``timelines: true``
        adds rolling accuracy and weights over time."""
        return self.live.report(args.get("timelines") in (True, "true", "1"))

    # the same answers for a route that names the version
    handle_v2_version = handle_v2_model
    handle_v2_version_ready = handle_v2_model_ready
    handle_v2_version_infer = handle_v2_infer

    # -- health -----------------------------------------------------------------------------------------

    def _performance(self) -> dict[str, Any]:
        stats = self.cache_.stats()
        return {"avg_prediction_time_ms": round(self.latency_ns / self.predictions / 1e6, 4) if self.predictions
                else 0.0, "predictions_per_second": round(self.throughput.rate(), 2),
                "cache_hit_rate": f"{100 * stats['hit_rate']:.1f}%", "predictions_total": self.predictions}

    def health(self) -> dict[str, Any]:
        models = [self._summary(name) for name in sorted(set(self.store.names()) | set(self.current))]
        healthy = sum(1 for m in models if m["status"] == "ok")
        scores = self.live.scores if hasattr(self, "live") else {}
        for entry in models:
            if entry["model"] in scores:
                entry["live"] = scores[entry["model"]].report()
        return {"ml_status": {"models_loaded": len(self.current), "models_healthy": healthy,
                              "training_active": bool(self.jobs.active) if hasattr(self, "jobs") else False},
                "performance_metrics": {**self._performance(),
                                        "model_accuracy": {m: round(s.rolling.get(), 4) for m, s in scores.items()}},
                "models": models,
                "technical_analysis": {"signals_generated": self.live.counts["signals"] if hasattr(self, "live")
                                       else 0}}

    def metrics(self) -> dict[str, Any]:
        return {"performance_metrics": self._performance(),
                "model_stats": {name: {"version": loaded.version, "load_ms": round(loaded.load_ms, 3),
                                       "paths": loaded.predictor.paths()} for name, loaded in self.current.items()}}


_NO_SCORES = Scores()


def _one(prediction: Prediction) -> dict[str, Any]:
    value = prediction.values[0]
    return {"prediction": value.item() if isinstance(value, np.generic) else value,
            "probabilities": None if prediction.proba is None else prediction.proba[0].tolist(),
            "path": prediction.path}


def _int(value: Any, field: str) -> int:
    if isinstance(value, bool):
        raise BadRequest(f"'{field}' must be an integer", field=field)
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise BadRequest(f"'{field}' must be an integer, got {value!r:.40}", field=field) from None
    if number < 1 or (isinstance(value, float) and not value.is_integer()):
        raise BadRequest(f"'{field}' must be a positive integer, got {value!r:.40}", field=field)
    return number


def _artifact(value: Any, max_mb: float) -> bytes:
    if isinstance(value, str):
        try:
            value = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise BadRequest("'artifact' must be base64 (JSON) or bytes (msgpack)", field="artifact") from None
    if not isinstance(value, (bytes, bytearray)) or not value:
        raise BadRequest("'artifact' must be the model file: base64 in JSON, bytes in msgpack", field="artifact")
    if len(value) > max_mb * 1024 * 1024:
        raise TooLarge(f"artifact of {len(value) / 2**20:.1f} MiB; at most {max_mb:g} MiB", field="artifact")
    return bytes(value)

