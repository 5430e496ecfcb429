"""Kernels in tests: one started for a block, one that only discovered its plugins, one never started."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator

from ml_processing.core.config import Config
from ml_processing.core.kernel import Kernel


@contextlib.asynccontextmanager
async def running(config: Config) -> AsyncIterator[Kernel]:
    """A kernel started on `config` for the block, stopped after it (also after a failed start)."""
    kernel = Kernel(config)
    try:
        await kernel.start()
        yield kernel
    finally:
        await kernel.stop()  # also after a failed start: a half-started kernel holds sockets and a thread


@contextlib.contextmanager
def discovered(config: Config) -> Iterator[Kernel]:
    """A kernel that only discovered its plugins (no sockets started); its resources are released after."""
    kernel = Kernel(config)
    try:
        kernel.discover()
        yield kernel
    finally:
        kernel.executor.shutdown(wait=False)
        kernel.context.destroy(linger=0)


@contextlib.contextmanager
def released(kernel: Kernel) -> Iterator[Kernel]:
    """Release a kernel that was built but never started (for tests that expect start-up to fail)."""
    try:
        yield kernel
    finally:
        kernel.executor.shutdown(wait=False)
        kernel.context.destroy(linger=0)
