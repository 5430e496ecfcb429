"""Backfills: the indicators and feature rows of many series over long histories, computed as tasks on the
executor (the local process pool, or Dask: `executors`) and stored as a dataset (`datasets`) that training
jobs read.

How a series becomes rows, so that they are the rows the ``features`` service gives for the same bars and
a model trained on them serves live bars through the same pipeline version:

1. The pipeline version (``NAME`` for its newest version, or ``NAME@VERSION``) is read from the features
   service (``pipelines``): its steps with their parameters resolved, its input columns and features.
2. `extract` runs as one task per series: every extract step computes its registered indicator or feature
   extractor (``ctx.registries``, through the SDK contract's ``batch`` over whole columns) on the columns
   the step names, in the pipeline's order; the visible columns are the series' raw feature matrix. The
   columns are named as docs/FEATURES.md says (`Indicator.output_key`, `FeatureExtractor.output_names`,
   ``as``), and `make_plan` refuses a pipeline whose names come out otherwise.
3. The features service applies the version's fitted transforms and its NaN policy to the raw rows
   (``transform`` with ``rows``, in blocks of `BLOCK_ROWS`): the fitted numbers never leave it.

The workers need the plugins whose indicators and extractors the pipeline uses installed (a Dask worker
imports them to run the steps), as they need ml-processing itself.

>>> from ml_processing.sdk import Param
>>> class Double(FeatureExtractor):
...     name = "double"; params = (Param("k", int, 2),)
...     def lookback(self, params): return 0
...     def batch(self, inputs, params, registries): return (inputs[0] * params["k"],)
...     def stream(self, params, registries): raise NotImplementedError
>>> spec = {"steps": [{"feature": "double", "params": {"k": 3}, "inputs": ["close"]}]}
>>> plan = make_plan(spec, ["double_3"], {"features": {"double": Double()}})
>>> extract(plan, {"close": np.array([1.0, 2.0])}).tolist()
[[3.0], [6.0]]
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ml_processing.sdk import BadRequest, Clock, FeatureExtractor, Indicator, get_logger
from ml_processing.sdk.services.features import Features, TransformArgs
from ml_processing.sdk.services.indicators import Indicators, columns

from .datasets import DatasetStore
from .declarations import BackfillArgs, BackfillSeries
from .executors import Executor
from .training import Job, Jobs, run_job

log = get_logger(__name__)

#: Raw rows per ``features.transform`` request (below the features service's ``max_rows``).
BLOCK_ROWS = 65_536
Registries = Mapping[str, Mapping[str, Any]]


@dataclass(frozen=True)
class Step:
    """One extract step of a pipeline, bound to its registered indicator or extractor."""

    source: Any  # an Indicator or a FeatureExtractor
    params: dict[str, int | float]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


@dataclass(frozen=True)
class Plan:
    """What a task needs to turn a series' columns into its raw feature matrix (pickled to the workers)."""

    steps: tuple[Step, ...]
    features: tuple[str, ...]
    registries: dict[str, dict[str, Any]]  # indicators and extractors: an extractor may build on either


def _outputs(source: Any, params: Mapping[str, int | float], inputs: Sequence[str]) -> list[str]:
    """A step's column names before ``as`` (docs/FEATURES.md)."""
    if isinstance(source, Indicator):
        base = source.output_key(params, source.outputs[0]).split(".")[0]
        if list(inputs) != list(source.inputs):
            base += f"({','.join(inputs)})"
        return [base] if len(source.outputs) == 1 else [f"{base}.{o}" for o in source.outputs]
    names: list[str] = source.output_names(params, inputs)
    return names


def make_plan(spec: Mapping[str, Any], features: Sequence[str], registries: Registries) -> Plan:
    """The extract steps of a pipeline version's (resolved) `spec`; `BadRequest` when a step's indicator or
    extractor is not registered here, or when the columns do not come out as the pipeline's `features`."""
    steps: list[Step] = []
    visible: list[str] = []
    for i, step in enumerate(spec["steps"]):
        if "transform" in step:
            continue
        kind = "indicator" if "indicator" in step else "feature"
        key = step[kind].upper() if kind == "indicator" else step[kind]
        source = registries.get("indicators" if kind == "indicator" else "features", {}).get(key)
        if source is None:
            raise BadRequest(f"steps[{i}]: the {kind} {step[kind]!r} is not registered in the models service's "
                             "process", field="pipeline")
        params, inputs = dict(step.get("params", {})), tuple(step.get("inputs", source.inputs))
        renamed = step.get("as")
        outputs = tuple(([renamed] if isinstance(renamed, str) else renamed) if renamed is not None
                        else _outputs(source, params, inputs))
        steps.append(Step(source, params, inputs, outputs))
        if step.get("output", True):
            visible.extend(outputs)
    if visible != list(features):
        raise BadRequest(f"the pipeline's steps give the columns {visible}, not its features {list(features)}",
                         field="pipeline")
    kept = {kind: dict(registries.get(kind, {})) for kind in ("indicators", "features")}
    return Plan(tuple(steps), tuple(features), kept)


def extract(plan: Plan, columns: Mapping[str, np.ndarray]) -> np.ndarray:
    """The raw feature matrix of one series (rows x features, NaN while a feature warms up)."""
    table = {name: np.asarray(values, dtype=np.float64) for name, values in columns.items()}
    for step in plan.steps:
        arrays = [table[c] for c in step.inputs]
        if isinstance(step.source, Indicator):
            out = step.source.batch(dict(zip(step.source.inputs, arrays, strict=True)), step.params)
        else:
            assert isinstance(step.source, FeatureExtractor)
            out = step.source.batch(arrays, step.params, plan.registries)
        for name, values in zip(step.outputs, out, strict=True):
            table[name] = np.asarray(values, dtype=np.float64)
    n = len(next(iter(table.values())))
    matrix = np.empty((n, len(plan.features)), dtype=np.float64)
    for j, name in enumerate(plan.features):
        matrix[:, j] = table[name]
    return matrix


def extract_series(plan: Plan, names: Sequence[str], *arrays: np.ndarray) -> np.ndarray:
    """The task: `extract` over the columns `names` (each array travels on its own to a worker)."""
    return extract(plan, dict(zip(names, arrays, strict=True)))


class Backfill:
    """Backfill jobs: the bars of each series, a task per series, the rows transformed, a dataset written."""

    def __init__(self, store: DatasetStore, jobs: Jobs, executor: Executor, features: Features,
                 indicators: Indicators, registries: Registries, spawn: Callable[..., Any],
                 run_in_thread: Callable[..., Any], clock: Clock) -> None:
        self.store = store
        self.jobs = jobs
        self.executor = executor
        self.features = features
        self.indicators = indicators
        self.registries = registries
        self.spawn = spawn
        self.run_in_thread = run_in_thread
        self.clock = clock

    async def start(self, args: BackfillArgs) -> dict[str, Any]:
        """Check the pipeline, start the job; its description (with its id) at once."""
        version = await self._version(args.pipeline)
        plan = make_plan(version["spec"], version["features"], self.registries)
        job = self.jobs.new(args.dataset, "backfill")
        ref = f"{version['name']}@{version['version']}"
        job.task = self.spawn(run_job(job, self._run(job, args, ref, list(version["inputs"]), plan), self.clock),
                              job.id, for_message=True)
        return job.describe()

    async def _version(self, pipeline: str) -> dict[str, Any]:
        """The pipeline version `pipeline` names (the newest without ``@VERSION``), fitted if it must be."""
        name, _, number = pipeline.partition("@")
        (info,) = (await self.features.pipelines(pipeline))["pipelines"]
        wanted = int(number) if number else info["latest"]
        version = next((v for v in info["versions"] if v["version"] == wanted), None)
        if version is None:
            raise BadRequest(f"pipeline {name!r} has no version {wanted}", field="pipeline")
        if version["needs_fit"] and not version["fitted"]:
            raise BadRequest(f"pipeline {name}@{wanted} was never fitted: fit it first (POST /api/v1/features/fit)",
                             field="pipeline")
        return {**version, "name": name}

    async def _run(self, job: Job, args: BackfillArgs, ref: str, inputs: list[str], plan: Plan) -> dict[str, Any]:
        job.status, job.stage = "running", "reading bars"
        bars = [await self._bars(i, item) for i, item in enumerate(args.series)]
        tasks = [(tuple(inputs), *(np.asarray(b[name], dtype=np.float64) for name in inputs)) for b in bars]
        writer = await self.run_in_thread(self.store.writer, args.dataset)
        try:
            entries: list[dict[str, Any]] = [{} for _ in bars]
            job.stage = f"computing rows (0 of {len(bars)} series)"
            async for i, raw in self.executor.map(job, extract_series, plan, tasks):
                values, index = await self._transform(ref, raw)
                item = {"symbol": args.series[i].symbol, "timeframe": args.series[i].timeframe, "values": values,
                        "index": index, "ts": np.asarray(bars[i]["ts"], dtype=np.int64),
                        "close": np.asarray(bars[i]["close"], dtype=np.float64)}
                entries[i] = await self.run_in_thread(writer.add, i, item)
                job.stage = f"computing rows ({sum(1 for e in entries if e)} of {len(bars)} series)"
            job.stage = "writing the dataset"
            manifest = await self.run_in_thread(writer.commit, {"pipeline": ref, "features": list(plan.features)},
                                                entries)
        finally:
            writer.abort()  # nothing once committed; a failed or cancelled backfill leaves no version
        rows = sum(e["rows"] for e in entries)
        log.info("dataset_written", dataset=args.dataset, version=manifest["version"], series=len(entries), rows=rows,
                 job=job.id)
        return {"dataset": args.dataset, "version": manifest["version"], "pipeline": ref,
                "features": list(plan.features), "series": len(entries), "rows": rows,
                "bars": sum(e["bars"] for e in entries)}

    async def _bars(self, i: int, item: BackfillSeries) -> Mapping[str, Any]:
        """A series' columns: as sent, or the bars the ``indicators`` service holds."""
        if item.length:
            return {name: column for name in ("ts", "open", "high", "low", "close", "volume")
                    if (column := getattr(item, name)) is not None}
        held = columns(await self.indicators.bars(item.symbol, item.timeframe))
        if len(held["ts"]) == 0:
            raise BadRequest(f"series[{i}]: no bars held for {item.symbol} {item.timeframe}", field=f"series[{i}]")
        return held

    async def _transform(self, ref: str, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The features service's transformed rows of `raw` and their indexes (its NaN policy)."""
        values, indexes = [], []
        for start in range(0, len(raw), BLOCK_ROWS):
            reply = await self.features.call("transform", TransformArgs(pipeline=ref,
                                                                        rows=raw[start:start + BLOCK_ROWS]))
            values.append(np.asarray(reply["values"], dtype=np.float64).reshape(-1, raw.shape[1]))
            indexes.append(np.asarray(reply["index"], dtype=np.int64) + start)
            await asyncio.sleep(0)
        return np.concatenate(values), np.concatenate(indexes)
