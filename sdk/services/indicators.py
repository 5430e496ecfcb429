"""The ``indicators`` service as other plugins call it: the live market state's series and held bars."""

from __future__ import annotations

from typing import Any, TypedDict

import numpy as np

from ml_processing.core.ops import Args, NonNegInt

from ..bars import COLUMNS
from ..timeframes import Symbol, Timeframe
from ._client import ServiceClient

SERVICE = "indicators"


class SeriesInfo(TypedDict):
    symbol: str
    timeframe: str
    bars: int
    last_ts: int | None
    indicators: list[str]


class BarsArgs(Args):
    """A held series: the newest ``limit`` committed bars (all when absent)."""

    symbol: Symbol
    timeframe: Timeframe
    limit: NonNegInt | None = None


class HeldBars(TypedDict):
    """The committed bars of a series as columns, oldest first (``ts`` int64, the rest float64)."""

    symbol: str
    timeframe: str
    ts: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray


class Indicators(ServiceClient):
    service = SERVICE

    async def series(self) -> list[SeriesInfo]:
        """Every tracked (symbol, timeframe)."""
        result: list[SeriesInfo] = await self._request(SERVICE, "series", {}, timeout=self._timeout)
        return result

    async def bars(self, symbol: str, timeframe: str, limit: int | None = None) -> HeldBars:
        """The committed bars held for one series."""
        result: HeldBars = await self.call("bars", BarsArgs(symbol=symbol, timeframe=timeframe, limit=limit))
        return result


def columns(held: HeldBars) -> dict[str, Any]:
    """The OHLCV and ``ts`` columns of `held`, as a request's column arguments."""
    return {name: held[name] for name in COLUMNS}  # type: ignore[literal-required]
