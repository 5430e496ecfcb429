"""`serve --processes 2` with the models service: a training job's new version is served by the worker
process too before the job says done (the job tells the group through ``ctx.changed``)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ml_processing.core.config import load_config
from ml_processing.core.kernel import Kernel
from ml_processing.sdk.synthetic import market
from tests.core.helpers import running
from tests.support.groups import group_config

MARKET = market(2_000, seed=5, momentum=0.25)


@pytest.fixture
def config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return group_config(tmp_path, monkeypatch, """
[plugins]
autoload = false

[plugins.models]
defaults = false
live = []

[plugins.patterns]
enabled = false

[plugins.sentiment]
enabled = false

[plugins.replay]
enabled = false
""")


async def _job(kernel: Kernel, job: dict[str, Any]) -> dict[str, Any]:
    assert kernel.broker is not None
    for _ in range(1_200):
        state: dict[str, Any] = await kernel.broker.request("models", "job", {"job_id": job["id"]})
        if state["status"] not in ("queued", "running"):
            return state
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job['id']} still {state['status']} after 60 s")


async def test_a_trained_version_is_served_by_every_process_when_the_job_says_done(config_file: Path) -> None:
    async with running(load_config(config_file)) as kernel:
        assert kernel.group is not None and kernel.broker is not None and kernel.broker.spreader is not None
        assert await kernel.group.wait_ready(90), kernel.group.status()
        broker = kernel.broker
        await broker.request("features", "fit", {"pipeline": "default", **MARKET})
        done = await _job(kernel, await broker.request("models", "train", {
            "model_id": "xg", "kind": "xgboost", **MARKET, "params": {"n_estimators": 10, "max_depth": 3}}))
        assert done["status"] == "done", done

        rows = np.random.default_rng(0).normal(size=(60_000, 4))
        row = [0.1, 0.2, 0.3, 0.4]
        before = broker.spreader.offloaded
        for _ in range(20):  # a large batch in flight here: the next predicts go to the worker process
            batch = asyncio.ensure_future(broker.request("models", "predict_batch", {"model": "xg", "rows": rows}))
            await asyncio.sleep(0.01)
            answers = await asyncio.gather(*(broker.request("models", "predict", {"model": "xg", "features": row})
                                             for _ in range(4)))
            assert (await batch)["version"] == 1
            assert all(answer["version"] == 1 for answer in answers), answers
            if broker.spreader.offloaded > before:
                break
        assert broker.spreader.offloaded > before  # the worker process answered, with the new version
