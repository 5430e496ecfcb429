"""The seeded synthetic market, in one place: default models, replay, tests and benchmarks draw from it.

Log returns follow ``r_t = m r_(t-1) + s_t e_t`` (``m`` a little momentum, 0.2 by default) with a
GARCH(1,1)-like variance ``s_t^2 = 2e-8 + 0.08 r_(t-1)^2 + 0.9 s_(t-1)^2`` (quiet and busy stretches
alternate). The open is the previous close; high and low stretch the body by a half-normal draw of the
current volatility; volume grows with the size of the move, with log-normal noise. One seed, one series.

>>> bars = market(3, seed=7)
>>> (bars["ts"] - START_MS).tolist(), bool((market(3, seed=7)["close"] == bars["close"]).all())
([0, 60000, 120000], True)
>>> bool((bars["low"] <= np.minimum(bars["open"], bars["close"])).all() and
...      (np.maximum(bars["open"], bars["close"]) <= bars["high"]).all())
True
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .bars import FIELDS

__all__ = ["SEED", "START_MS", "market", "rows"]

SEED = 20_261_126
START_MS = 1_767_225_600_000  # 2026-01-01 00:00 UTC


def market(n: int, seed: int = SEED, *, momentum: float = 0.2, start_ms: int = START_MS,
           step_ms: int = 60_000, price: float = 100.0) -> dict[str, np.ndarray]:
    """`n` bars as columns: ``ts`` (int64 epoch ms, one every `step_ms`), ``open``, ``high``, ``low``,
    ``close``, ``volume`` (float64)."""
    rng = np.random.default_rng(seed)
    shocks = rng.standard_normal(n)
    returns = np.empty(n)
    sigma = np.empty(n)
    variance, previous = 1e-6, 0.0
    for i in range(n):
        variance = 2e-8 + 0.08 * previous * previous + 0.9 * variance
        previous = momentum * previous + math.sqrt(variance) * shocks[i]
        returns[i], sigma[i] = previous, math.sqrt(variance)
    close = price * np.exp(np.cumsum(returns))
    open_ = np.concatenate([[price], close[:-1]])
    high = np.maximum(open_, close) * (1 + np.abs(rng.normal(0.0, 1.0, n)) * sigma)
    low = np.minimum(open_, close) * (1 - np.abs(rng.normal(0.0, 1.0, n)) * sigma)
    volume = 1_000.0 * (1 + 200 * np.abs(returns)) * rng.lognormal(0.0, 0.2, n)
    start = start_ms // step_ms * step_ms
    ts = start + step_ms * np.arange(n, dtype=np.int64)
    return {"ts": ts, "open": open_, "high": high, "low": low, "close": close, "volume": volume}


def rows(columns: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """The bars of `columns` as a list of ``{ts, open, high, low, close, volume}`` maps."""
    names = FIELDS
    return [{"ts": int(ts), **{name: float(columns[name][i]) for name in names}}
            for i, ts in enumerate(columns["ts"])]
