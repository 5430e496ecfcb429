"""Time, injected: the kernel's supervision, caches, checkpoints and heartbeats read a `Clock`, so tests
advance a `ManualClock` instead of sleeping.

>>> clock = ManualClock()
>>> clock.monotonic()
0.0
>>> clock.advance(2.5); clock.monotonic()
2.5
"""

from __future__ import annotations

import asyncio
import time


class Clock:
    """Real time: ``monotonic`` for intervals, ``time`` for timestamps, ``sleep`` on the event loop."""

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class ManualClock(Clock):
    """Time that moves only when `advance` is called; `sleep` returns once the clock passed its deadline."""

    def __init__(self, start: float = 0.0, epoch: float = 1_700_000_000.0) -> None:
        self._now = start
        self._epoch = epoch
        self._changed = asyncio.Condition() if _has_loop() else None

    def monotonic(self) -> float:
        return self._now

    def time(self) -> float:
        return self._epoch + self._now

    def advance(self, seconds: float) -> None:
        """Move time forward; every `sleep` whose deadline passed wakes up."""
        self._now += seconds
        if self._changed is not None:
            asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        assert self._changed is not None
        async with self._changed:
            self._changed.notify_all()

    async def sleep(self, seconds: float) -> None:
        if self._changed is None:
            self._changed = asyncio.Condition()
        deadline = self._now + seconds
        async with self._changed:
            await self._changed.wait_for(lambda: self._now >= deadline)


def _has_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


#: The real clock, shared.
REAL = Clock()
