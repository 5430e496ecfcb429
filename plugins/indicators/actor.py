"""The ``indicators`` service: indicator metadata and batch computation over posted OHLCV columns."""

from __future__ import annotations

from typing import Any

import numpy as np

from ml_processing.core.actor import Actor

from .compute import compute

#: Above this many (bars x indicators) a request is computed on the thread pool, off the event loop.
INLINE_WORK = 200_000


class Indicators(Actor):
    """Ops: ``list`` (metadata of every registered indicator), ``compute`` (many indicators, one request)."""

    name = "indicators"

    async def on_start(self) -> None:
        self.computed = 0

    @property
    def registry(self) -> Any:
        return self.registries.get("indicators", {})

    def handle_list(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        group = args.get("group")
        return [i.describe() for i in self.registry.values() if group is None or i.group == group]

    def handle_compute(self, args: dict[str, Any]) -> Any:
        close, wanted = args.get("close"), args.get("indicators")
        bars = len(close) if isinstance(close, (list, np.ndarray)) else 0
        if bars * (len(wanted) if isinstance(wanted, list) else 1) <= INLINE_WORK:
            return self._count(compute(args, self.registry))
        return self._compute_in_thread(args)

    async def _compute_in_thread(self, args: dict[str, Any]) -> dict[str, Any]:
        return self._count(await self.run_in_thread(compute, args, self.registry))

    def _count(self, result: dict[str, Any]) -> dict[str, Any]:
        self.computed += len(result["values"])
        return result

    def health(self) -> dict[str, Any]:
        return {"technical_analysis": {"indicators_calculated": self.computed}}
