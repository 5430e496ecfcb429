"""Where the heavy batch work of the models service runs: training jobs and backfills.

``[plugins.models] executor`` chooses one of two, and both give the trainer and the backfill the same verbs:

* `LocalExecutor` (``"local"``, the default): a process pool on this host (``training_workers`` processes,
  started with ``spawn`` on the first task). Cancelling a running task stops its worker process.
* `DaskExecutor` (a scheduler's address, ``"tcp://HOST:8786"``): a Dask cluster, through one asynchronous
  `distributed.Client` on the actor's loop, made at start and closed at stop. xgboost trains with
  ``xgboost.dask`` over partitions of rows spread on the workers (`dask_xgboost`); every other model kind and
  every backfill task runs as a Dask task (``client.submit`` of the same function the local pool runs). A
  scheduler that cannot be reached does not stop the service from starting and serving: start logs
  ``dask_unreachable``, and each job connects again and fails, if it still cannot, with ``the Dask
  scheduler at ADDRESS cannot be reached (...)``. Cancelling releases a job's tasks (queued ones never run)
  and stops an xgboost training after its current round; another task that already runs on a worker runs
  to its end there (Dask cannot stop a running task) and its result is dropped.

Whichever runs the work, the job's status, errors, cancellation and the version it registers are the same.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Protocol

import numpy as np

from ml_processing.sdk import Unavailable, get_logger

from .training import Job, booster_result, fit, result, warm, xgboost_params

log = get_logger(__name__)

#: Arrays larger than this travel to Dask workers on their own (scattered), not inside a task's arguments.
SCATTER_BYTES = 1 << 20


class Executor(Protocol):
    name: str

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def describe(self) -> dict[str, Any]: ...

    async def fit(self, job: Job, kind: str, task: str, params: dict[str, Any], x: np.ndarray, y: np.ndarray,
                  x_test: np.ndarray, y_test: np.ndarray, names: list[str], base: bytes | None,
                  threads: int) -> dict[str, Any]: ...

    def map(self, job: Job, fn: Callable[..., Any], shared: Any,
            items: Sequence[tuple[Any, ...]]) -> AsyncIterator[tuple[int, Any]]: ...

    async def cancel(self, job: Job) -> None: ...


async def _completed(waiting: dict[asyncio.Future[Any], int]) -> AsyncIterator[tuple[int, Any]]:
    """``(index, result)`` of each awaitable as it completes; the first failure raises, and the rest are
    cancelled when the iteration ends early."""
    try:
        while waiting:
            done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            for future in done:
                yield waiting.pop(future), future.result()
    finally:
        for future in waiting:
            future.cancel()


class LocalExecutor:
    """Tasks in a pool of processes on this host."""

    name = "local"

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None

    async def start(self) -> None:
        """Nothing to connect: the pool starts with the first task."""

    def describe(self) -> dict[str, Any]:
        return {"executor": "local", "workers": self.workers}

    def pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=warm)
        return self._pool

    async def fit(self, job: Job, kind: str, task: str, params: dict[str, Any], x: np.ndarray, y: np.ndarray,
                  x_test: np.ndarray, y_test: np.ndarray, names: list[str], base: bytes | None,
                  threads: int) -> dict[str, Any]:
        future = self.pool().submit(fit, kind, task, params, x, y, x_test, y_test, names, base, threads)
        job.handles.append(future)
        try:
            out: dict[str, Any] = await asyncio.wrap_future(future)
        except BrokenProcessPool:
            self._pool = None  # a worker died (or was stopped): the next task gets a fresh pool
            raise
        return out

    async def map(self, job: Job, fn: Callable[..., Any], shared: Any,
                  items: Sequence[tuple[Any, ...]]) -> AsyncIterator[tuple[int, Any]]:
        """``(index, fn(shared, *item))`` for each item, as the tasks complete."""
        pool = self.pool()
        futures = [pool.submit(fn, shared, *item) for item in items]
        job.handles.extend(futures)
        waiting = {asyncio.wrap_future(f): i for i, f in enumerate(futures)}
        try:
            async for i, value in _completed(waiting):
                job.handles.remove(futures[i])  # its result is not held past its use
                yield i, value
        except BrokenProcessPool:
            self._pool = None
            raise

    async def cancel(self, job: Job) -> None:
        """Queued tasks are dropped; a running one has its worker stopped (the pool restarts on the next
        task)."""
        running = [f for f in job.handles if not f.done() and not f.cancel()]
        if running:
            pool, self._pool = self._pool, None
            if pool is not None:
                for process in list(getattr(pool, "_processes", {}).values()):  # no public way to stop one task
                    process.terminate()
                pool.shutdown(wait=False, cancel_futures=True)

    async def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


class DaskExecutor:
    """Tasks on a Dask cluster through an asynchronous client on the actor's loop."""

    name = "dask"

    def __init__(self, address: str, timeout: float, partition_rows: int,
                 run_in_thread: Callable[..., Awaitable[Any]]) -> None:
        self.address = address
        self.timeout = timeout
        self.partition_rows = partition_rows
        self.run_in_thread = run_in_thread
        self._client: Any = None
        self._lock = asyncio.Lock()
        self.error: str | None = None

    async def start(self) -> None:
        """Connect; a scheduler that cannot be reached is logged, and each job tries again."""
        await self.run_in_thread(_import_dask)  # about a second of imports, off the event loop
        try:
            await self.client()
        except Unavailable as exc:
            log.warning("dask_unreachable", address=self.address, error=exc.message)

    def describe(self) -> dict[str, Any]:
        client = self._client
        return {"executor": "dask", "address": self.address,
                "connected": client is not None and client.status == "running", "error": self.error}

    async def client(self) -> Any:
        """The connected client (connecting again if the last attempt failed or the connection closed);
        `Unavailable` naming the address when the scheduler cannot be reached in ``dask_timeout_s``."""
        from distributed import Client

        async with self._lock:
            if self._client is not None and self._client.status == "running":
                return self._client
            if self._client is not None:
                await self._close_client()
            try:
                self._client = await asyncio.wait_for(
                    Client(self.address, asynchronous=True, timeout=self.timeout, set_as_default=False),
                    self.timeout + 5)
            except (OSError, TimeoutError) as exc:  # distributed reports a refused or timed out connect as OSError
                self._client = None
                self.error = f"the Dask scheduler at {self.address} cannot be reached ({type(exc).__name__}: " \
                             f"{exc})"
                raise Unavailable(self.error) from None
            self.error = None
            log.info("dask_connected", address=self.address, workers=len(await self._client.nthreads()))
            return self._client

    async def _scatter(self, client: Any, value: Any) -> Any:
        """A large array as a future on the cluster (the task reads it where it is), anything else as is."""
        if isinstance(value, np.ndarray) and value.nbytes > SCATTER_BYTES:
            return await client.scatter(value, hash=False)
        return value

    async def fit(self, job: Job, kind: str, task: str, params: dict[str, Any], x: np.ndarray, y: np.ndarray,
                  x_test: np.ndarray, y_test: np.ndarray, names: list[str], base: bytes | None,
                  threads: int) -> dict[str, Any]:
        client = await self.client()
        if kind == "xgboost":
            return await self._xgboost(client, job, task, params, x, y, x_test, y_test, base, threads)
        args = [await self._scatter(client, value) for value in (x, y, x_test, y_test)]
        future = client.submit(fit, kind, task, params, *args, names, base, threads, pure=False,
                               key=f"fit-{kind}-{job.id}-{uuid.uuid4().hex}")
        job.handles.append(future)
        out: dict[str, Any] = await future
        return out

    async def _xgboost(self, client: Any, job: Job, task: str, params: dict[str, Any], x: np.ndarray,
                       y: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, base: bytes | None,
                       threads: int) -> dict[str, Any]:
        """``xgboost.dask`` over partitions of rows; the booster written like one trained locally."""
        import time

        from . import dask_xgboost

        start = time.perf_counter()
        rounds, full = xgboost_params(task, params, threads)
        booster = None if base is None else await self.run_in_thread(_load_booster, base)
        job.token = f"mlp-cancel-{job.id}-{uuid.uuid4().hex}"
        trained, p = await dask_xgboost.train(client, self.address, job.token, full, rounds, x, y, x_test, booster,
                                              self.partition_rows)
        parts = await self.run_in_thread(booster_result, trained, task, p, base is not None)
        out: dict[str, Any] = await self.run_in_thread(result, task, y_test, start, *parts)
        return out

    async def map(self, job: Job, fn: Callable[..., Any], shared: Any,
                  items: Sequence[tuple[Any, ...]]) -> AsyncIterator[tuple[int, Any]]:
        """``(index, fn(shared, *item))`` for each item as a Dask task, as they complete (`shared` is sent to
        the workers once)."""
        client = await self.client()
        common = await client.scatter(shared, broadcast=True, hash=False)
        futures, keys = [], []
        for i, item in enumerate(items):
            args = [await self._scatter(client, value) for value in item]
            keys.append(f"{getattr(fn, '__name__', 'task')}-{job.id}-{i}-{uuid.uuid4().hex}")
            futures.append(client.submit(fn, common, *args, pure=False, key=keys[i]))
        job.handles.extend(futures)
        waiting = {asyncio.ensure_future(_result(f)): i for i, f in enumerate(futures)}
        del futures
        async for i, value in _completed(waiting):
            job.handles = [f for f in job.handles if f.key != keys[i]]  # its result leaves the cluster's memory
            yield i, value

    async def cancel(self, job: Job) -> None:
        """Release the job's tasks; a running xgboost training stops after its current round."""
        from distributed import Event, Future

        futures = [f for f in job.handles if isinstance(f, Future)]  # before any await: the job lets go of them
        client = self._client
        if client is None:
            return
        if job.token:
            await Event(job.token, client=client).set()
        if futures:
            await client.cancel(futures)

    async def _close_client(self) -> None:
        client, self._client = self._client, None
        try:
            await asyncio.wait_for(client.close(), self.timeout)
        except (OSError, TimeoutError) as exc:
            log.warning("dask_close_failed", address=self.address, error=str(exc))

    async def close(self) -> None:
        async with self._lock:
            if self._client is not None:
                await self._close_client()


def _import_dask() -> None:
    """Import Dask's client and xgboost's Dask module (what a job on Dask needs) once."""
    import distributed  # noqa: F401

    from . import dask_xgboost  # noqa: F401  (dask.array, xgboost.dask)


async def _result(future: Any) -> Any:
    return await future


def _load_booster(data: bytes) -> Any:
    import xgboost as xgb

    booster = xgb.Booster()
    booster.load_model(bytearray(data))
    return booster


def make_executor(executor: str, workers: int, timeout: float, partition_rows: int,
                  run_in_thread: Callable[..., Awaitable[Any]]) -> LocalExecutor | DaskExecutor:
    """The executor ``[plugins.models] executor`` names."""
    if executor == "local":
        return LocalExecutor(workers)
    return DaskExecutor(executor, timeout, partition_rows, run_in_thread)
