"""Bounded waiting, shared by every test folder."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any


async def wait_until(check: Callable[[], Any | Awaitable[Any]], *, timeout: float = 5.0, interval: float = 0.01,
                     what: str = "condition") -> Any:
    """Poll `check` (plain or async) until it returns something truthy; bounded in time and in tries."""
    deadline = time.monotonic() + timeout
    last: Any = None
    for _ in range(max(1, int(timeout / interval) + 1)):
        last = check()
        if inspect.isawaitable(last):
            last = await last
        if last:
            return last
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out waiting for {what} (last value {last!r})")
