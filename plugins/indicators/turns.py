"""Whose turn it is on a series: ingests one at a time in the order they arrived, and the bars that arrive on
pub/sub meanwhile applied between them exactly where they arrived.

An ingest yields to the event loop between slices, so without turns a second ingest of the same series,
or a live bar, would interleave with it (and make the rest of it stale). With them, each series sees its
bars in arrival order.

>>> import asyncio
>>> async def demo():
...     turns, order = Turns(), []
...     async def ingest(name):
...         async with turns.hold(("ES", "1m")) as number:
...             await asyncio.sleep(0)
...             order.append(name)
...             order.extend(turns.due(("ES", "1m"), number))
...     first = asyncio.ensure_future(ingest("first ingest"))
...     await asyncio.sleep(0)
...     turns.wait(("ES", "1m"), "live bar 1")
...     second = asyncio.ensure_future(ingest("second ingest"))
...     await asyncio.sleep(0)
...     turns.wait(("ES", "1m"), "live bar 2")
...     await asyncio.gather(first, second)
...     return order, turns.busy(("ES", "1m"))
>>> asyncio.run(demo())
(['first ingest', 'live bar 1', 'second ingest', 'live bar 2'], False)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ml_processing.sdk import TooLarge

Key = tuple[str, str]

#: Bars of one series that may wait for the ingests before them.
MAX_WAITING = 100_000


@dataclass
class _Turn:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    holders: int = 0  # ingests running or waiting
    arrived: int = 0  # ingests arrived so far: the number of the next one
    waiting: deque[tuple[int, Any]] = field(default_factory=deque)  # (ingests arrived before it, bar)


class Turns:
    """The turns of every series that has an ingest running or waiting (none kept otherwise)."""

    def __init__(self, max_waiting: int = MAX_WAITING) -> None:
        self._turns: dict[Key, _Turn] = {}
        #: The series with an ingest running or waiting (read-only; ``key in turns.held`` is `busy`, without
        #: a call, for the per-bar path).
        self.held: Mapping[Key, object] = self._turns
        self.max_waiting = max_waiting

    def busy(self, key: Key) -> bool:
        """Is an ingest of `key` running or waiting? Then its bars `wait`."""
        return key in self._turns

    @contextlib.asynccontextmanager
    async def hold(self, key: Key) -> AsyncIterator[int]:
        """Wait for the series' turn; yields the ingest's number (for `due`)."""
        turn = self._turns.get(key)
        if turn is None:
            turn = self._turns[key] = _Turn()
        number = turn.arrived = turn.arrived + 1
        turn.holders += 1
        try:
            async with turn.lock:
                yield number
        finally:
            turn.holders -= 1
            if turn.holders == 0:
                del self._turns[key]

    def wait(self, key: Key, bar: Any) -> None:
        """Keep a bar of a busy series until the ingests that arrived before it are done."""
        turn = self._turns[key]
        if len(turn.waiting) >= self.max_waiting:
            raise TooLarge(f"{len(turn.waiting):,} bars of {key[0]} {key[1]} already wait for an ingest to finish",
                           field="bar")
        turn.waiting.append((turn.arrived, bar))

    def due(self, key: Key, number: int) -> list[Any]:
        """The waiting bars that arrived before ingest `number + 1`, oldest first (taken off the queue)."""
        turn = self._turns.get(key)
        out = []
        while turn is not None and turn.waiting and turn.waiting[0][0] <= number:
            out.append(turn.waiting.popleft()[1])
        return out
