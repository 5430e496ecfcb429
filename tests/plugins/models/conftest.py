"""A Dask cluster for the models tests, started once per session on 127.0.0.1 (two worker processes, one
thread each), and the executors a training test runs on: the local process pool and that cluster."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

#: Seconds the cluster may take to start (its workers import numpy, scikit-learn and xgboost) and to stop.
START_S, STOP_S = 120.0, 30.0


@pytest.fixture(scope="session")
def dask_scheduler() -> Iterator[str]:
    """The address of a `distributed.LocalCluster` with two worker processes."""
    distributed = pytest.importorskip("distributed")

    def start() -> object:
        return distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1, host="127.0.0.1",
                                        dashboard_address=None, silence_logs=logging.ERROR)

    with ThreadPoolExecutor(1) as pool:  # bounded: a cluster that does not come up fails the tests using it
        cluster = pool.submit(start).result(timeout=START_S)
    try:
        yield cluster.scheduler_address  # type: ignore[attr-defined]
    finally:
        cluster.close(timeout=STOP_S)  # type: ignore[attr-defined]


@pytest.fixture(params=["local", "dask"])
def executor(request: pytest.FixtureRequest) -> str:
    """``[plugins.models] executor``: the local pool, or the session's Dask scheduler."""
    if request.param == "local":
        return "local"
    address: str = request.getfixturevalue("dask_scheduler")
    return address
