"""A whole service (every built-in plugin) on its own event loop in a thread, for tests driven by blocking
clients (schemathesis, hypothesis) that must not share the test's loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ml_processing.core.kernel import Kernel
from tests.conftest import make_config


class Background:
    """A started kernel and the loop it runs on; `call` runs a coroutine there and waits for it."""

    def __init__(self, kernel: Kernel, loop: asyncio.AbstractEventLoop) -> None:
        self.kernel = kernel
        self.loop = loop

    @property
    def url(self) -> str:
        assert self.kernel.edge_url is not None
        return self.kernel.edge_url

    def call(self, coro: Any, timeout: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def restarts(self) -> dict[str, tuple[str, int]]:
        """Each actor's state and restart count."""
        return {name: (str(cell.state), cell.restarts) for name, cell in self.kernel.cells.items()}


@contextmanager
def background_service(data: Path, **kernel_options: Any) -> Iterator[Background]:
    loop = asyncio.new_event_loop()
    started: Future[Kernel] = Future()
    stop = asyncio.Event()

    async def main() -> None:
        kernel = Kernel(make_config(data, modules=("ml_processing.plugins._template",), **kernel_options))
        try:
            await kernel.start()
        except BaseException as exc:
            started.set_exception(exc)
            return
        started.set_result(kernel)
        try:
            await stop.wait()
        finally:
            await kernel.stop()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), name="mlp-background", daemon=True)
    thread.start()
    kernel = started.result(60)
    try:
        yield Background(kernel, loop)
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)
        loop.close()
