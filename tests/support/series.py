"""Seeded OHLCV series the plugin tests compute over (real-looking: geometric random walk, consistent high
and low, positive volume), and the same series as one dict per bar."""

from __future__ import annotations

import numpy as np


def ohlcv(n: int = 600, seed: int = 7) -> dict[str, np.ndarray]:
    """Hourly bars (sessions roll) with a ``periods`` column for the indicators that read one."""
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = np.concatenate([[close[0]], close[:-1]]) * (1 + rng.normal(0, 0.002, n))
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.01, n))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.01, n))
    volume = rng.uniform(1e3, 1e5, n)
    return {"open": open_, "high": high, "low": low, "close": close, "volume": volume,
            "periods": rng.integers(2, 30, n).astype(np.float64),
            "ts": 1_700_000_000_000 + 3_600_000 * np.arange(n, dtype=np.float64)}


def quarter_hours(n: int = 800, seed: int = 11) -> dict[str, np.ndarray]:
    """15-minute bars: ts and the five OHLCV columns only (what a feature pipeline reads)."""
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = np.concatenate([[close[0]], close[:-1]]) * (1 + rng.normal(0, 0.002, n))
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.01, n))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.01, n))
    return {"ts": 1_700_000_000_000 + 900_000 * np.arange(n, dtype=np.float64), "open": open_, "high": high,
            "low": low, "close": close, "volume": rng.uniform(1e3, 1e5, n)}


def rows_of(data: dict[str, np.ndarray]) -> list[dict[str, float]]:
    """The columns as one dict of floats per bar."""
    n = len(data["close"])
    return [{k: float(v[i]) for k, v in data.items()} for i in range(n)]
