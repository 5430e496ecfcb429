"""Training and backfills on a Dask cluster (a `distributed.LocalCluster` of two worker processes on
127.0.0.1, started once for the session): xgboost trained by ``xgboost.dask`` predicts like the same
training done locally, other kinds run as Dask tasks, a failing task reports its error, an unreachable
scheduler fails jobs with a clear message, and a backfill over several symbols stores the rows a training
job then reads (on both executors)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ml_processing.core.config import PluginSection
from ml_processing.core.errors import BadRequest, NotFound
from ml_processing.core.kernel import Kernel
from ml_processing.sdk.synthetic import market
from tests.conftest import make_config

MARKET = market(3_000, seed=5, momentum=0.25)
SERIES = {"AAA": market(1_200, seed=11, momentum=0.25), "BBB": market(1_500, seed=12, momentum=0.25),
          "CCC": market(900, seed=13, momentum=0.25, start_ms=1_767_225_600_000 + 300 * 60_000)}
HELD = market(800, seed=14, momentum=0.25)


@asynccontextmanager
async def kernel_on(tmp_path: Path, executor: str, **options: Any) -> AsyncIterator[Kernel]:
    """A kernel whose jobs run on `executor`, with the default pipeline fitted."""
    models = {"defaults": False, "live": [], "executor": executor, **options}
    kernel = Kernel(make_config(tmp_path, modules=(), sections={"models": PluginSection(True, models)}))
    await kernel.start()
    try:
        await kernel.request("features", "fit", {"pipeline": "default", **MARKET})
        yield kernel
    finally:
        await kernel.stop()


@asynccontextmanager
async def task_stream(address: str) -> AsyncIterator[dict[str, set[str]]]:
    """Every task the cluster ran inside the block: key -> the workers that ran it (filled when the block
    ends)."""
    from distributed import Client, get_task_stream

    ran: dict[str, set[str]] = {}
    async with Client(address, asynchronous=True, set_as_default=False) as client:
        async with get_task_stream(client=client) as stream:
            yield ran
    for task in stream.data:
        ran.setdefault(str(task["key"]), set()).add(task["worker"])


async def finished(kernel: Kernel, job: dict[str, Any], seconds: float = 60.0) -> dict[str, Any]:
    for _ in range(int(seconds / 0.05)):
        state: dict[str, Any] = await kernel.request("models", "job", {"job_id": job["id"]})
        if state["status"] not in ("queued", "running"):
            return state
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job['id']} still {state['status']} after {seconds} s")


async def test_xgboost_on_dask_predicts_like_the_same_training_done_locally(tmp_path: Path,
                                                                            dask_scheduler: str) -> None:
    import xgboost as xgb

    from ml_processing.plugins.models import training
    from ml_processing.plugins.models.train_request import TrainArgs

    params = {"n_estimators": 60, "max_depth": 3}
    async with kernel_on(tmp_path, dask_scheduler) as kernel:
        async with task_stream(dask_scheduler) as ran:
            done = await finished(kernel, await kernel.request("models", "train", {
                "model_id": "xg", "kind": "xgboost", **MARKET, "params": params}))
        assert done["status"] == "done", done
        # xgboost.dask: its training tasks (named fn-...) ran on both workers, each on its partitions
        workers = set().union(*(where for key, where in ran.items() if key.startswith("fn-")))
        assert len(workers) == 2, ran

        rows = await kernel.request("features", "transform", {"pipeline": "default", **MARKET})
        x, y, names = TrainArgs(model_id="xg", kind="xgboost", close=MARKET["close"]).labelled(rows)
        split = int(len(x) * 0.8)
        local = training.fit("xgboost", "classification", dict(params), x[:split], y[:split], x[split:], y[split:],
                             names, None)
        remote = done["result"]["metrics"]
        assert remote["test_rows"] == local["metrics"]["test_rows"] == len(x) - split
        assert remote["accuracy"] == pytest.approx(local["metrics"]["accuracy"], abs=0.03)
        assert remote["log_loss"] == pytest.approx(local["metrics"]["log_loss"], abs=0.03)

        served = await kernel.request("models", "predict_batch", {"model": "xg", "rows": x[split:]})
        booster = xgb.Booster()
        booster.load_model(bytearray(local["artifact"]))
        p_local = booster.predict(xgb.DMatrix(x[split:]))
        p_served = np.asarray(served["probabilities"])[:, 1]
        assert np.mean(np.abs(p_served - p_local)) < 0.03 and np.mean((p_served > 0.5) == (p_local > 0.5)) > 0.9
        served_accuracy = float(np.mean(np.asarray(served["predictions"]) == y[split:]))
        assert served_accuracy == pytest.approx(remote["accuracy"], abs=1e-4)  # the version scored is served
        details = await kernel.request("models", "get", {"model_id": "xg"})
        assert details["current"] == 1 and details["details"]["trees"] == 60 and details["pipeline"] == "default@2"
        one = await kernel.request("models", "predict", {"model": "xg", "features": x[split].tolist()})
        assert one["probabilities"][1] == pytest.approx(float(p_served[0]), abs=1e-5)


async def test_other_kinds_run_as_dask_tasks_and_failures_report_their_error(tmp_path: Path,
                                                                             dask_scheduler: str) -> None:
    async with kernel_on(tmp_path, dask_scheduler) as kernel:
        listing = await kernel.request("models", "jobs", {})
        assert listing["executor"]["executor"] == "dask" and listing["executor"]["address"] == dask_scheduler
        async with task_stream(dask_scheduler) as ran:
            forest = await finished(kernel, await kernel.request("models", "train", {
                "model_id": "forest", "kind": "sklearn", **MARKET,
                "params": {"estimator": "RandomForestClassifier", "n_estimators": 20, "max_depth": 4}}))
        assert forest["status"] == "done", forest
        assert any(key.startswith(f"fit-sklearn-{forest['id']}-") for key in ran), ran  # a Dask task
        assert (await kernel.request("models", "jobs", {}))["executor"]["connected"] is True

        broken = await finished(kernel, await kernel.request("models", "train", {
            "model_id": "broken", "kind": "sklearn", **MARKET,
            "params": {"estimator": "RandomForestClassifier", "n_estimators": -1}}))
        assert broken["status"] == "failed" and "n_estimators" in broken["error"], broken
        assert broken["error"].startswith("InvalidParameterError: ")  # the worker's exception, as locally
        listed = {m["model"] for m in (await kernel.request("models", "list", {}))["models"]}
        assert listed == {"forest"}
        out = await kernel.request("models", "predict", {"model": "forest", "features": [0.1, 0.2, 0.3, 0.4]})
        assert out["version"] == 1

        # a backfill that fails after its first rows (a pipeline that rejects warm-up rows) stores nothing
        await kernel.request("features", "create", {"name": "strict", "steps": [{"feature": "log_return"}],
                                                    "nan": "reject"})
        failed = await finished(kernel, await kernel.request("models", "backfill", {
            "dataset": "fx", "pipeline": "strict", "series": [{"symbol": "AAA", "timeframe": "1m", **SERIES["AAA"]}]}))
        assert failed["status"] == "failed" and "'reject'" in failed["error"], failed
        assert (await kernel.request("models", "datasets", {}))["datasets"] == []
        assert list((tmp_path / "var" / "datasets").rglob("*")) == [tmp_path / "var" / "datasets" / "fx"]


async def test_an_unreachable_scheduler_fails_jobs_with_a_clear_message(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{probe.getsockname()[1]}"
    async with kernel_on(tmp_path, address, dask_timeout_s=1.0) as kernel:
        failed = await finished(kernel, await kernel.request("models", "train", {
            "model_id": "m", "kind": "xgboost", **MARKET, "params": {"n_estimators": 5}}), seconds=30)
        assert failed["status"] == "failed", failed
        assert failed["error"].startswith(f"the Dask scheduler at {address} cannot be reached"), failed["error"]
        executor = (await kernel.request("models", "jobs", {}))["executor"]
        assert executor["connected"] is False and executor["error"].startswith("the Dask scheduler at")
        assert (await kernel.request("models", "list", {}))["models"] == []  # the service serves on


def _dataset_files(tmp_path: Path, name: str, version: int) -> list[dict[str, np.ndarray]]:
    import json

    folder = tmp_path / "var" / "datasets" / name / str(version)
    manifest = json.loads((folder / "manifest.json").read_text())
    out = []
    for entry in manifest["series"]:
        with np.load(folder / entry["file"], allow_pickle=False) as npz:
            out.append({"symbol": entry["symbol"], **{key: npz[key] for key in ("ts", "close", "index", "values")}})
    return out


async def test_a_backfill_stores_the_rows_a_training_job_reads(tmp_path: Path, executor: str) -> None:
    async with kernel_on(tmp_path, executor) as kernel:
        await kernel.request("indicators", "ingest", {"symbol": "HELD", "timeframe": "1m", **HELD})
        series = [{"symbol": symbol, "timeframe": "1m", **bars} for symbol, bars in SERIES.items()]
        async with AsyncExitStack() as stack:
            ran = await stack.enter_async_context(task_stream(executor)) if executor != "local" else {}
            job = await kernel.request("models", "backfill", {"dataset": "fx", "series": [
                *series, {"symbol": "HELD", "timeframe": "1m"}]})
            assert job["kind"] == "backfill" and job["model"] == "fx"
            done = await finished(kernel, job)
        assert done["status"] == "done", done
        if executor != "local":  # one Dask task per series
            assert sum(key.startswith(f"extract_series-{job['id']}-") for key in ran) == 4, ran
        result = done["result"]
        assert (result["version"], result["series"], result["pipeline"]) == (1, 4, "default@2")
        assert result["bars"] == sum(len(b["ts"]) for b in SERIES.values()) + len(HELD["ts"])

        stored = _dataset_files(tmp_path, "fx", 1)
        assert [s["symbol"] for s in stored] == [*SERIES, "HELD"]
        for item, bars in zip(stored, [*SERIES.values(), HELD], strict=True):  # the features service's own rows
            rows = await kernel.request("features", "transform", {"pipeline": "default@2", **bars})
            assert np.array_equal(item["values"], np.asarray(rows["values"]))
            assert np.array_equal(item["index"], np.asarray(rows["index"]))
            assert np.array_equal(item["ts"], bars["ts"]) and np.array_equal(item["close"], bars["close"])
        (listed,) = (await kernel.request("models", "datasets", {}))["datasets"]
        assert listed["name"] == "fx" and listed["versions"] == [1] and listed["rows"] == result["rows"]
        assert [s["rows"] for s in listed["series"]] == [len(s["index"]) for s in stored]

        trained = await finished(kernel, await kernel.request("models", "train", {
            "model_id": "fx_model", "kind": "xgboost", "dataset": "fx", "params": {"n_estimators": 20}}))
        assert trained["status"] == "done", trained
        labelled = sum(int(np.sum(s["index"] + 1 < len(s["close"]))) for s in stored)  # horizon 1
        assert sum(trained["result"]["rows"].values()) == labelled
        details = await kernel.request("models", "get", {"model_id": "fx_model"})
        assert details["pipeline"] == "default@2" and details["features"] == listed["features"]
        tail = {name: column[-300:] for name, column in SERIES["AAA"].items()}
        assert (await kernel.request("models", "predict", {"model": "fx_model", "bars": tail}))["version"] == 1

        one = await finished(kernel, await kernel.request("models", "train", {
            "model_id": "aaa", "kind": "sklearn", "dataset": "fx@1", "symbols": ["AAA"],
            "params": {"estimator": "LogisticRegression"}}))
        assert one["status"] == "done", one
        assert sum(one["result"]["rows"].values()) == int(np.sum(stored[0]["index"] + 1 < len(stored[0]["close"])))

        again = await finished(kernel, await kernel.request("models", "backfill", {"dataset": "fx",
                                                                                  "series": series[:1]}))
        assert again["result"]["version"] == 2 and again["result"]["series"] == 1  # a new version; 1 is kept
        assert (await kernel.request("models", "datasets", {}))["datasets"][0]["versions"] == [1, 2]


BAD_BACKFILLS = [
    ({"pipeline": "nope"}, NotFound, "pipeline"),
    ({"pipeline": "default@1"}, BadRequest, "pipeline"),  # never fitted
    ({"series": [{"symbol": "A", "timeframe": "1m", "close": [1.0, 2.0]}]}, BadRequest, "series[0].ts"),
    ({"series": [{"symbol": "A", "timeframe": "1m"}, {"symbol": "A", "timeframe": "1m"}]}, BadRequest, "series[1]"),
    ({"series": []}, BadRequest, "series"),
    ({"dataset": "no/slash"}, BadRequest, "dataset"),
]


async def test_bad_backfills_and_unknown_datasets_are_refused_before_a_job_starts(tmp_path: Path) -> None:
    async with kernel_on(tmp_path, "local") as kernel:
        for args, error, field in BAD_BACKFILLS:
            request = {"dataset": "fx", "series": [{"symbol": "A", "timeframe": "1m"}], **args}
            with pytest.raises(error) as err:
                await kernel.request("models", "backfill", request)
            assert err.value.field == field, (args, err.value)  # type: ignore[attr-defined]
        for dataset in ("fx", "fx@2"):
            with pytest.raises(NotFound) as missing:
                await kernel.request("models", "train", {"model_id": "m", "kind": "xgboost", "dataset": dataset})
            assert missing.value.field == "dataset"
        for args, field in (({"dataset": "fx", "close": [1.0]}, "dataset"), ({"dataset": "fx", "symbol": "A"}, "symbol"),
                            ({"symbols": ["A"], "close": [1.0]}, "symbols")):
            with pytest.raises(BadRequest) as bad:
                await kernel.request("models", "train", {"model_id": "m", "kind": "xgboost", **args})
            assert bad.value.field == field, (args, bad.value)
        assert (await kernel.request("models", "jobs", {}))["jobs"] == []
