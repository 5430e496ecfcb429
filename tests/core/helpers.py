"""Helpers of the kernel tests: bounded waiting (also synchronous), free ports, throwaway plugin modules; the
kernels of `tests.support.kernels` re-exported."""

from __future__ import annotations

import socket
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from tests.support.kernels import discovered, released, running  # noqa: F401  (re-exported)
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
