"""Bounded caches with a lifetime (LRU + TTL, from `cachetools`) that count what they do.

The kernel owns every cache an actor makes (`Kernel.cache`), so ``/metrics`` (``mlp_cache_*``) and
``/metrics/ml`` (``caches``) report each one by name without the actor doing anything more.
A size or lifetime of 0 turns a cache off (every lookup misses, nothing is kept).

>>> cache = Cache("demo", maxsize=2, ttl=60)
>>> cache.get("a") is None, cache.put("a", 1), cache.get("a")
(True, None, 1)
>>> cache.stats()["hits"], cache.stats()["misses"], cache.stats()["hit_rate"]
(1, 1, 0.5)
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

from cachetools import TTLCache

from .clock import REAL, Clock


class _Counted(TTLCache):  # type: ignore[type-arg]
    """`TTLCache` that counts what it evicts to make room (expired entries are not evictions)."""

    evictions = 0

    def popitem(self) -> tuple[Any, Any]:
        self.evictions += 1
        return super().popitem()


class Cache:
    def __init__(self, name: str, maxsize: int, ttl: float, clock: Clock = REAL) -> None:
        self.name = name
        self.maxsize = maxsize
        self.ttl = ttl
        self.enabled = maxsize > 0 and ttl > 0
        self._data = _Counted(maxsize=max(1, maxsize), ttl=max(ttl, 1e-9), timer=clock.monotonic)
        self.hits = 0
        self.misses = 0

    @property
    def evictions(self) -> int:
        return self._data.evictions

    def get(self, key: Hashable) -> Any:
        """The value, or None (a miss)."""
        value = self._data.get(key) if self.enabled else None
        if value is None:
            self.misses += 1
        else:
            self.hits += 1
        return value

    def put(self, key: Hashable, value: Any) -> None:
        if self.enabled and value is not None:
            self._data[key] = value

    def clear(self) -> None:
        self._data.clear()

    def discard(self, keep: Callable[[Hashable], bool]) -> int:
        """Drop every entry whose key `keep` refuses; how many were dropped."""
        gone = [key for key in list(self._data.keys()) if not keep(key)]
        for key in gone:
            self._data.pop(key, None)
        return len(gone)

    def __len__(self) -> int:
        self._data.expire()
        return len(self._data)

    def stats(self) -> dict[str, Any]:
        lookups = self.hits + self.misses
        return {"hits": self.hits, "misses": self.misses, "evictions": self.evictions, "entries": len(self),
                "maxsize": self.maxsize,
                "ttl_s": self.ttl, "hit_rate": round(self.hits / lookups, 4) if lookups else 0.0}
