"""A quant's script on the broker host of the namespace test: it trains an xgboost model through the
service, whose ``[plugins.models] executor`` is a Dask scheduler on another host, and reports which Dask
workers ran the training's tasks.

Run as ``python -m tests.hosts.trainer CONFIG KEYS SCHEDULER`` inside a host's namespace; writes one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import zmq.asyncio

from ml_processing.bus import mdp
from ml_processing.bus.errors import MlpError
from ml_processing.core.config import load_config
from ml_processing.core.security.service import load_client_keys
from ml_processing.sdk.synthetic import market

MARKET = market(3_000, seed=5, momentum=0.25)


async def main(config_path: str, keys_path: str, scheduler: str) -> int:
    from distributed import Client, get_task_stream

    config = load_config(config_path)
    ctx = zmq.asyncio.Context()
    client = mdp.AsyncClient(config.bus.broker_connect, timeout=60, context=ctx, keys=load_client_keys(keys_path))
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                await client.request("kernel", "ping")
                break
            except MlpError:
                await asyncio.sleep(0.2)
        await client.request("features", "fit", {"pipeline": "default", **MARKET})
        ran: set[str] = set()
        async with Client(scheduler, asynchronous=True, set_as_default=False) as dask:
            async with get_task_stream(client=dask) as stream:
                job: dict[str, Any] = await client.request("models", "train", {
                    "model_id": "xg", "kind": "xgboost", **MARKET, "params": {"n_estimators": 40, "max_depth": 3}})
                for _ in range(1200):  # bounded: 60 s
                    job = await client.request("models", "job", {"job_id": job["id"]})
                    if job["status"] not in ("queued", "running"):
                        break
                    await asyncio.sleep(0.05)
        for task in stream.data:
            ran.add(str(task["worker"]))
        recent = {name: values[-300:] for name, values in MARKET.items() if name != "ts"}
        predicted = await client.request("models", "predict", {"model": "xg", "bars": recent})
        sys.stdout.write(json.dumps({"status": job["status"], "error": job["error"], "workers": sorted(ran),
                                     "tasks": len(stream.data), "predicted": predicted.get("prediction")}) + "\n")
        return 0
    finally:
        client.close()
        ctx.destroy(linger=0)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3])))
