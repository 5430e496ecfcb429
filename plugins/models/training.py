"""Training jobs: each has an id, a status, a stage and a result; the work runs on an executor
(`executors`: the local process pool or a Dask cluster), never on the event loop.

`fit` is what a worker runs: given time-ordered training and holdout rows it trains one model (xgboost,
LightGBM, scikit-learn, river: `TRAINABLE`), scores it on the holdout and returns the artifact bytes in the
kind's own format with its description (task, features, classes, details). It never touches the registry:
the service writes the version only when a job succeeds, so a crashed or cancelled job leaves the registry as
it was. xgboost on Dask trains with ``xgboost.dask`` instead (`dask_xgboost`) and ends the same way
(`booster_result`, `result`).

Local workers are started with the ``spawn`` method (a fork of a process running ZeroMQ and an event loop
is not safe) and import their libraries once, when the pool starts. Each job trains on ``training_threads``
threads (1 by default: on a small machine the event loop keeps its core).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import time
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ml_processing.sdk import BadRequest, Clock, MlpError, get_logger
from ml_processing.sdk.model import CLASSIFICATION, Described

from .kinds import SklearnKind, describe_booster
from .lightgbm_kind import describe_lightgbm

log = get_logger(__name__)

#: The model kinds `fit` trains.
TRAINABLE = ("xgboost", "lightgbm", "sklearn", "river")

XGBOOST_DEFAULTS = {"objective": "binary:logistic", "max_depth": 6, "eta": 0.1, "tree_method": "hist",
                    "nthread": 1, "seed": 0}
LIGHTGBM_DEFAULTS = {"num_leaves": 31, "learning_rate": 0.1, "seed": 0, "deterministic": True, "verbose": -1}
SKLEARN_ESTIMATORS = ("RandomForestClassifier", "RandomForestRegressor", "ExtraTreesClassifier",
                      "ExtraTreesRegressor", "GradientBoostingClassifier", "GradientBoostingRegressor",
                      "HistGradientBoostingClassifier", "HistGradientBoostingRegressor", "LogisticRegression",
                      "Ridge")


def warm() -> None:
    """Pool initializer: import the training libraries once per worker (LightGBM, whose import takes over a
    second, on its first job)."""
    import sklearn.ensemble  # noqa: F401
    import xgboost  # noqa: F401


def scores(task: str, y: np.ndarray, proba: np.ndarray | None, values: np.ndarray) -> dict[str, float]:
    """Holdout metrics: accuracy, log loss and AUC (binary) for classifiers; RMSE for regressors."""
    from sklearn.metrics import accuracy_score, log_loss, mean_squared_error, roc_auc_score

    if task == "regression":
        return {"rmse": round(float(np.sqrt(mean_squared_error(y, values))), 6), "test_rows": len(y)}
    assert proba is not None
    out = {"accuracy": round(float(accuracy_score(y, values)), 4), "test_rows": len(y)}
    labels = list(range(proba.shape[1]))
    out["log_loss"] = round(float(log_loss(y, proba, labels=labels)), 4)
    if proba.shape[1] == 2 and len(np.unique(y)) == 2:
        out["auc"] = round(float(roc_auc_score(y, proba[:, 1])), 4)
    return out


def check(kind: str, task: str, params: Mapping[str, Any]) -> None:
    """Refuse, before a job starts, what `fit` cannot train (`BadRequest` naming the field)."""
    if kind not in TRAINABLE:
        raise BadRequest(f"'kind' must be one of {', '.join(TRAINABLE)}, got {kind!r:.40}", field="kind")
    if kind == "river" and task == "regression" and params.get("estimator", "LogisticRegression") != \
            "LinearRegression":
        raise BadRequest("a river model for returns needs params.estimator = 'LinearRegression'", field="params")


def fit(kind: str, task: str, params: dict[str, Any], x: np.ndarray, y: np.ndarray, x_test: np.ndarray,
        y_test: np.ndarray, names: list[str], base: bytes | None, threads: int = 1) -> dict[str, Any]:
    """Train one model (in a worker process); ``{"format", "artifact", "metrics", "seconds", "described"}``
    (``described``: the artifact's `Described`: task, number of features, classes, details)."""
    start = time.perf_counter()
    if kind == "xgboost":
        import xgboost as xgb

        rounds, full = xgboost_params(task, params, threads)
        booster = None
        if base is not None:  # incremental refresh: continue from the current booster
            booster = xgb.Booster()
            booster.load_model(bytearray(base))
        model = xgb.train(full, xgb.DMatrix(x, label=y), num_boost_round=rounds, xgb_model=booster)
        p = model.predict(xgb.DMatrix(x_test))
        return result(task, y_test, start, *booster_result(model, task, p, base is not None))
    if kind == "lightgbm":
        proba, values, artifact, fmt, described = _lightgbm(task, params, x, y, x_test, base, threads)
    elif kind == "sklearn":
        import sklearn.ensemble
        import sklearn.linear_model
        import skops.io as sio

        name = params.pop("estimator", "RandomForestClassifier" if task == "classification" else
                          "RandomForestRegressor")
        if name not in SKLEARN_ESTIMATORS:
            raise ValueError(f"estimator {name!r} is not one of {', '.join(SKLEARN_ESTIMATORS)}")
        module = sklearn.linear_model if name in ("LogisticRegression", "Ridge") else sklearn.ensemble
        estimator = getattr(module, name)(**params)
        if hasattr(estimator, "n_jobs"):
            estimator.n_jobs = threads
        estimator.fit(x, y)
        proba = estimator.predict_proba(x_test) if task == "classification" else None
        values = estimator.predict(x_test)
        artifact, fmt, described = sio.dumps(estimator), "skops", SklearnKind().describe_estimator(estimator)
    elif kind == "river":
        import pickle

        from river import linear_model, tree

        name = params.pop("estimator", "LogisticRegression")
        model = {"LogisticRegression": linear_model.LogisticRegression,
                 "HoeffdingTreeClassifier": tree.HoeffdingTreeClassifier,
                 "LinearRegression": linear_model.LinearRegression}[name](**params)
        for row, label in zip(x.tolist(), y.tolist(), strict=True):
            model.learn_one(dict(zip(names, row, strict=True)), label)
        rows = [dict(zip(names, row, strict=True)) for row in x_test.tolist()]
        if task == "classification":
            proba = np.array([[model.predict_proba_one(r).get(c, 0.0) for c in (0, 1)] for r in rows])
            proba = proba / np.where(proba.sum(axis=1, keepdims=True) > 0, proba.sum(axis=1, keepdims=True), 1)
            values = proba.argmax(axis=1)
        else:
            proba, values = None, np.array([model.predict_one(r) or 0.0 for r in rows])
        artifact, fmt = pickle.dumps(model), "river"
        described = Described(task, int(x.shape[1]), [0, 1] if task == CLASSIFICATION else None,
                              {"model": f"river.{name}"})
    else:
        raise ValueError(f"cannot train model kind {kind!r}")
    return result(task, y_test, start, proba, values, artifact, fmt, described)


def xgboost_params(task: str, params: dict[str, Any], threads: int) -> tuple[int, dict[str, Any]]:
    """(boosting rounds, xgboost's parameters) of a request's `params` (``n_estimators`` is the rounds)."""
    params = dict(params)
    rounds = int(params.pop("n_estimators", params.pop("num_boost_round", 100)))
    objective = "binary:logistic" if task == CLASSIFICATION else "reg:squarederror"
    return rounds, {**XGBOOST_DEFAULTS, "objective": objective, "nthread": threads, **params}


def booster_result(model: Any, task: str, p: np.ndarray, refreshed: bool
                   ) -> tuple[np.ndarray | None, np.ndarray, bytes, str, Described]:
    """A trained xgboost booster and its holdout predictions `p` -> (probabilities, values, artifact,
    format, description)."""
    p = np.asarray(p, dtype=np.float64)
    proba = np.column_stack([1 - p, p]) if task == CLASSIFICATION else None
    values = (p > 0.5).astype(int) if task == CLASSIFICATION else p
    about = describe_booster(model)
    described = dataclasses.replace(about, details={**about.details, "refreshed": refreshed})
    return proba, values, bytes(model.save_raw(raw_format="ubj")), "ubj", described


def result(task: str, y_test: np.ndarray, start: float, proba: np.ndarray | None, values: np.ndarray,
           artifact: bytes, fmt: str, described: Described) -> dict[str, Any]:
    """What a training job returns: ``{"format", "artifact", "metrics", "seconds", "described"}``."""
    return {"format": fmt, "artifact": artifact, "metrics": scores(task, y_test, proba, values),
            "seconds": round(time.perf_counter() - start, 4), "described": described}


def _lightgbm(task: str, params: dict[str, Any], x: np.ndarray, y: np.ndarray, x_test: np.ndarray,
              base: bytes | None, threads: int) -> tuple[np.ndarray | None, np.ndarray, bytes, str, Described]:
    """A LightGBM booster (continued from `base` when given): (holdout probabilities, holdout values,
    artifact, format, description)."""
    import lightgbm as lgb

    rounds = int(params.pop("n_estimators", params.pop("num_boost_round", 100)))
    objective = "binary" if task == CLASSIFICATION else "regression"
    init = lgb.Booster(model_str=base.decode("utf-8")) if base is not None else None
    booster = lgb.train({**LIGHTGBM_DEFAULTS, "objective": objective, "num_threads": threads, **params},
                        lgb.Dataset(x, label=y), num_boost_round=rounds, init_model=init)
    p = np.asarray(booster.predict(x_test, num_threads=threads), dtype=np.float64)
    proba = np.column_stack([1 - p, p]) if task == CLASSIFICATION else None
    values = (p > 0.5).astype(int) if task == CLASSIFICATION else p
    artifact = booster.model_to_string().encode()
    about = describe_lightgbm(booster, artifact)
    described = dataclasses.replace(about, details={**about.details, "refreshed": base is not None})
    return proba, values, artifact, "txt", described


@dataclass
class Job:
    """A training job (``kind``: a model kind) or a backfill (``kind`` ``backfill``; ``model`` names the
    dataset)."""

    id: str
    model: str
    kind: str
    status: str = "queued"  # queued, running, done, failed, cancelled
    stage: str = "queued"  # preparing rows, training, writing the version (backfill: its own stages)
    created: float = 0.0
    finished: float | None = None
    result: dict[str, Any] | None = None
    error: str | None = None
    task: asyncio.Task[Any] | None = field(default=None, repr=False)  # the job's coroutine on the loop
    handles: list[Any] = field(default_factory=list, repr=False)  # the executor's futures of its tasks
    token: str = ""  # the executor's name for the job (Dask: its cancellation event)

    @property
    def active(self) -> bool:
        return self.status in ("queued", "running")

    def describe(self) -> dict[str, Any]:
        return {"id": self.id, "model": self.model, "kind": self.kind, "status": self.status, "stage": self.stage,
                "created": self.created, "finished": self.finished, "result": self.result, "error": self.error}


class Jobs:
    """The jobs of this service (a bounded history); their work runs on an executor."""

    def __init__(self, keep: int = 200, clock: Clock | None = None) -> None:
        self.clock = clock or Clock()
        self.keep = keep
        self.jobs: dict[str, Job] = {}
        self._ids = itertools.count(1)

    def new(self, model: str, kind: str) -> Job:
        job = Job(f"job-{next(self._ids)}", model, kind, created=self.clock.time())
        self.jobs[job.id] = job
        while len(self.jobs) > self.keep:
            oldest = next(iter(self.jobs.values()))
            if oldest.active:
                break
            self.jobs.pop(oldest.id)
        return job

    @property
    def active(self) -> int:
        return sum(1 for j in self.jobs.values() if j.active)


async def run_job(job: Job, work: Coroutine[Any, Any, dict[str, Any]], clock: Clock) -> None:
    """Run `work` as `job`: done with its result, failed with the reason (an error the caller can act on:
    its message; anything else: its type and message, logged), or cancelled. The registry and the datasets
    change only in the work's last step, so a job that fails or is cancelled before it changed nothing."""
    try:
        outcome = await work
        job.status, job.stage, job.result = "done", "done", outcome
    except asyncio.CancelledError:
        job.status, job.stage = "cancelled", "cancelled"
        raise
    except MlpError as exc:
        job.status, job.error = "failed", exc.message
    except Exception as exc:  # the worker's failure (or a stopped pool)
        if job.status != "cancelled":
            job.status, job.error = "failed", f"{type(exc).__name__}: {exc}"
            log.error("job_failed", job=job.id, kind=job.kind, model=job.model, error=job.error)
    finally:
        job.finished = job.finished or clock.time()
        job.handles.clear()  # a Dask future held would keep its result in the cluster's memory
