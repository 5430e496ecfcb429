"""Helpers shared by the kernel and edge tests: bounded waiting, free ports, throwaway plugin modules."""

from __future__ import annotations

import contextlib
import socket
import textwrap
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from ml_processing.core.config import Config
from ml_processing.core.kernel import Kernel
from tests.support.waiting import wait_until  # noqa: F401  (re-exported)

T = TypeVar("T")


def wait_until_sync(check: Callable[[], T], *, timeout: float = 10.0, interval: float = 0.05,
                    what: str = "condition") -> T:
    deadline = time.monotonic() + timeout
    tries = max(1, int(timeout / interval) + 1)
    last: Any = None
    for _ in range(tries):
        last = check()
        if last:
            return last
        if time.monotonic() > deadline:
            break
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what} (last value {last!r})")


def free_ports(count: int) -> list[int]:
    """Ports the OS reports free on 127.0.0.1 (all held open together, so they differ)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def write_module(folder: Path, name: str, source: str) -> Path:
    path = folder / f"{name}.py"
    path.write_text(textwrap.dedent(source).lstrip(), encoding="utf-8")
    return path


@contextlib.asynccontextmanager
async def running(config: Config) -> AsyncIterator[Kernel]:
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
