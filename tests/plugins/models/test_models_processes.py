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
            await asyncio.sleep(0)  # the batch is handed to a thread here: in flight until its rows are done
            answers = await asyncio.gather(*(broker.request("models", "predict", {"model": "xg", "features": row})
                                             for _ in range(4)))
            assert (await batch)["version"] == 1
            assert all(answer["version"] == 1 for answer in answers), answers
            if broker.spreader.offloaded > before:
                break
        assert broker.spreader.offloaded > before  # the worker process answered, with the new version


@pytest.fixture
def live_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return group_config(tmp_path, monkeypatch, """
[plugins.indicators]
timeframes = []

[plugins.patterns]
enabled = false

[plugins.sentiment]
enabled = false

[plugins.replay]
enabled = false
""")


async def test_labels_of_a_worker_process_symbol_are_learned_by_the_serve_process(live_config: Path) -> None:
    """The worker process owns the symbol: it predicts on its bars and joins the labels; the serve process,
    the one learner, scores and adapts the ensemble's weights with them (and saves what it learns)."""
    import msgpack
    import zmq
    import zmq.asyncio

    from ml_processing.bus.shards import owner
    from tests.support.waiting import wait_until

    async with running(load_config(live_config)) as kernel:
        assert kernel.group is not None and kernel.keeper is not None
        keeper = kernel.keeper
        await wait_until(lambda: keeper.members == ("process.1", "serve") and not keeper.moving,
                         timeout=120, what="the worker process sharing the symbols")
        symbol = next(s for s in (f"L{i}" for i in range(50)) if owner(s, keeper.members) == "process.1")
        before = (await kernel.request("models", "weights", {"model_id": "ensemble"}))["updates"]
        bars = market(400, seed=8, momentum=0.25)
        ctx = zmq.asyncio.Context()
        pub = ctx.socket(zmq.PUB)
        pub.setsockopt(zmq.SNDHWM, 0)
        try:
            pub.connect(kernel.endpoints["pub_in"][0])
            await asyncio.sleep(0.5)
            for i in range(len(bars["ts"])):
                bar = {name: (int(v[i]) if name == "ts" else float(v[i])) for name, v in bars.items()}
                await pub.send_multipart([f"bar.{symbol}.1m".encode(), msgpack.packb(bar)])
                await asyncio.sleep(0.002)

            async def learned() -> int:
                live = await kernel.request("models", "live")
                return int(live["counts"]["member_labels"] >= 100 and live["counts"]["labels"] == 0)

            await wait_until(learned, timeout=60, interval=0.2, what="labels learned in the serve process")
        finally:
            ctx.destroy(linger=0)
        after = (await kernel.request("models", "weights", {"model_id": "ensemble"}))["updates"]
        assert after >= before + 100  # the ensemble's weights adapted here, from the other process's labels
        live = await kernel.request("models", "live")
        assert live["counts"]["predictions"] == 0  # this process predicted nothing: the bars were not its own
