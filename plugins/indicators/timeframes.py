"""Multi-timeframe: incremental resampling of base bars into higher timeframes, and the per-timeframe
trend/momentum/volatility analysis behind ``GET /api/v1/analysis/timeframes``.

Alignment: a higher-timeframe bar covers ``[k * T, (k + 1) * T)`` in UTC epoch milliseconds (so ``1d`` bars
are UTC days, ``4h`` bars start at 00:00, 04:00, ... UTC). It aggregates the base bars whose ``ts`` falls in
it: first open, highest high, lowest low, last close, summed volume. It is committed as soon as the base bar
that ends it arrives (``ts + base == (k + 1) * T``), or, if that bar is missing, when the first base bar of a
later period arrives; until then it is the forming bar of the higher series (previewed with ``peek``).

>>> to_ms("15m"), to_ms("4h"), to_ms("1d")
(900000, 14400000, 86400000)
>>> r = Resampler("1m", "5m")
>>> [r.push({"ts": t * 60_000, "open": 1.0, "high": float(t), "low": 0.5, "close": float(t), "volume": 1.0})[0]
...  for t in range(5)][-1]["high"]
4.0
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import talib

from ml_processing.sdk import BadRequest
from ml_processing.sdk.timeframes import to_ms


class Resampler:
    """Base bars of one series -> bars of one higher timeframe, incrementally."""

    def __init__(self, base: str, target: str) -> None:
        self.base_ms, self.target_ms = to_ms(base), to_ms(target)
        if self.target_ms <= self.base_ms or self.target_ms % self.base_ms:
            raise BadRequest(f"{target} is not a multiple of {base}", field="timeframe")
        self.target = target
        self.current: dict[str, Any] | None = None

    def push(self, bar: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Feed one committed base bar; the higher bars to apply, oldest first: a completed bar
        (``final``) when one closed, and the forming one (``final: False``) when one is open."""
        out: list[dict[str, Any]] = []
        bucket = bar["ts"] // self.target_ms * self.target_ms
        current = self.current
        if current is not None and bucket != current["ts"]:
            out.append({**current, "final": True})  # the period closed without its last base bar
            current = None
        if current is None:
            current = {"ts": bucket, "open": bar["open"], "high": bar["high"], "low": bar["low"],
                       "close": bar["close"], "volume": bar["volume"]}
        else:
            current["high"] = _max(current["high"], bar["high"])
            current["low"] = _min(current["low"], bar["low"])
            current["close"] = bar["close"]
            current["volume"] = current["volume"] + bar["volume"]
        if bar["ts"] + self.base_ms >= bucket + self.target_ms:
            out.append({**current, "final": True})
            self.current = None
        else:
            out.append({**current, "final": False})
            self.current = current
        return out


def _max(a: float, b: float) -> float:
    return b if a != a or b > a else a


def _min(a: float, b: float) -> float:
    return b if a != a or b < a else a


#: The analysis needs this many bars of a timeframe.
MIN_BARS = 60


def analyse(rows: np.ndarray) -> dict[str, Any]:
    """Trend, momentum and volatility regime of one timeframe from its bars (ts, OHLCV rows, oldest first).

    * trend: direction from EMA(20) against EMA(50) (``flat`` within 0.1% of price), strength ADX(14) / 100;
    * momentum: (RSI(14) - 50) / 50, in [-1, 1];
    * volatility regime: NATR(14) (ATR as % of price) ranked among its last 100 values: below the 25th
      percentile ``low``, above the 75th ``high``, else ``normal``.
    """
    if len(rows) < MIN_BARS:
        return {"bars": len(rows), "ready": False, "reason": f"needs {MIN_BARS} bars"}
    high, low, close = (np.ascontiguousarray(rows[:, i]) for i in (2, 3, 4))
    fast, slow = talib.EMA(close, 20)[-1], talib.EMA(close, 50)[-1]
    adx, rsi = talib.ADX(high, low, close, 14)[-1], talib.RSI(close, 14)[-1]
    natr = talib.NATR(high, low, close, 14)
    recent = natr[~np.isnan(natr)][-100:]
    rank = float((recent < natr[-1]).mean()) if len(recent) else math.nan
    gap = (fast - slow) / close[-1]
    direction = "flat" if abs(gap) < 0.001 else ("up" if gap > 0 else "down")
    return {
        "bars": len(rows), "ready": True, "ts": int(rows[-1, 0]),
        "trend": {"direction": direction, "strength": round(float(adx) / 100, 4)},
        "momentum": round(float((rsi - 50) / 50), 4),
        "volatility": {"regime": "low" if rank < 0.25 else "high" if rank > 0.75 else "normal",
                       "natr": float(natr[-1]), "percentile": round(rank, 4)},
        "indicators": {"EMA_20": float(fast), "EMA_50": float(slow), "ADX_14": float(adx), "RSI_14": float(rsi),
                       "NATR_14": float(natr[-1]), "close": float(close[-1])},
    }


def alignment(per_timeframe: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Agreement of the trends: the strength-weighted mean direction (+1 up, -1 down, 0 flat), in [-1, 1]."""
    signs = {"up": 1.0, "down": -1.0, "flat": 0.0}
    ready = [a for a in per_timeframe.values() if a.get("ready")]
    if not ready:
        return {"score": None, "direction": None, "timeframes": 0}
    weights = [max(a["trend"]["strength"], 1e-6) for a in ready]
    score = sum(w * signs[a["trend"]["direction"]] for w, a in zip(weights, ready, strict=True)) / sum(weights)
    directions = {a["trend"]["direction"] for a in ready}
    return {"score": round(score, 4), "direction": directions.pop() if len(directions) == 1 else "mixed",
            "timeframes": len(ready)}
