"""xgboost on a Dask cluster: one booster trained by every worker together.

The training rows are cut into partitions of rows (at least one per worker, at most
``dask_partition_rows`` rows each) and scattered to the workers; ``xgboost.dask`` builds each worker's
histograms over its partitions and sums them across workers (its collective, whose tracker runs on the
scheduler), so every worker grows the same trees. The holdout is predicted on the cluster as well. The
booster comes back to the service, which writes it like any trained model (`training.booster_result`).

Cancellation: a running training cannot be interrupted from outside a Dask worker, so each worker polls a
Dask `Event` named after the job between boosting rounds (at most every `POLL_S` seconds) and the workers
agree through an allreduce (the largest flag wins), so all of them stop after the same round and none waits
for a peer that has left; the first worker then clears the event.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import xgboost as xgb
import xgboost.dask as xgb_dask
from distributed import Event, get_client
from xgboost import collective

from ml_processing.sdk import Unavailable

#: Seconds between two looks at a job's cancellation event, per worker.
POLL_S = 0.25


class StopWhenCancelled(xgb.callback.TrainingCallback):
    """Stops training, on every worker after the same round, once the Dask event `name` is set (asked of the
    scheduler at `address`: xgboost trains outside the worker's task context)."""

    def __init__(self, name: str, address: str) -> None:
        super().__init__()
        self.name = name
        self.address = address
        self.checked = -math.inf
        self.flag = False

    def _event(self) -> Event:
        return Event(self.name, client=get_client(self.address))

    def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
        now = time.monotonic()
        if now - self.checked >= POLL_S:
            self.flag = bool(self._event().is_set())
            self.checked = now
        flag = np.array([1.0 if self.flag else 0.0])
        if collective.is_distributed():
            flag = collective.allreduce(flag, collective.Op.MAX)
        stop = bool(flag[0] > 0)
        if stop and collective.get_rank() == 0:  # every worker knows now: the event has done its work
            self._event().clear()
        return stop


async def workers(client: Any, address: str) -> int:
    """How many workers the cluster has; `Unavailable` when it has none (a job would wait for ever)."""
    count = len(await client.nthreads())
    if count == 0:
        raise Unavailable(f"the Dask cluster at {address} has no worker to run the job")
    return count


async def scatter_rows(client: Any, x: np.ndarray, parts: int) -> Any:
    """`x` cut into `parts` partitions of consecutive rows, scattered to the workers, as one dask array."""
    import dask.array as da

    step = max(1, math.ceil(len(x) / parts))
    pieces = [x[i:i + step] for i in range(0, len(x), step)]
    futures = await client.scatter(pieces, hash=False)
    return da.concatenate([da.from_delayed(f, shape=p.shape, dtype=p.dtype) for f, p in zip(futures, pieces,
                                                                                             strict=True)])


async def train(client: Any, address: str, token: str, params: dict[str, Any], rounds: int, x: np.ndarray,
                y: np.ndarray, x_test: np.ndarray, base: Any, partition_rows: int) -> tuple[Any, np.ndarray]:
    """(booster, holdout predictions) of xgboost trained on the cluster over `x`, `y`; `base`: a booster to
    continue (refresh) or None."""
    with client.as_current():  # xgboost.dask looks the client up as the current one as well
        parts = max(await workers(client, address), math.ceil(len(x) / partition_rows))
        data, label = await scatter_rows(client, x, parts), await scatter_rows(client, y, parts)
        train_matrix = await xgb_dask.DaskDMatrix(client, data, label)
        output = await xgb_dask.train(client, params, train_matrix, num_boost_round=rounds, xgb_model=base,
                                      callbacks=[StopWhenCancelled(token, address)], verbose_eval=False)
        booster: xgb.Booster = output["booster"]
        holdout = await scatter_rows(client, x_test, max(1, math.ceil(len(x_test) / partition_rows)))
        predicted = await xgb_dask.inplace_predict(client, booster, holdout)
        p = await client.compute(predicted)
    return booster, np.asarray(p, dtype=np.float64)
