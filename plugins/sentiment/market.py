"""Market sentiment from price and volume: a score in [-1, 1] with its components and their weights.

Components of the last bar (each in [-1, 1]; TA-Lib computes the indicators):

* ``trend``: tanh((close - SMA(50)) / (2 x ATR(14))): above its average and far from it is positive;
* ``momentum``: (RSI(14) - 50) / 50;
* ``volatility``: -tanh(ATR%(14) / median ATR% of the last 100 bars - 1): a calm market is mildly positive,
  one more volatile than usual negative;
* ``volume``: (volume of up bars - volume of down bars) / volume, over the last 20 bars;
* ``breadth``: across the symbols the service tracks, 2 x (share of them above their SMA(50)) - 1; only
  where several series are known (the service adds it).

The score is the weighted mean of the components present (`WEIGHTS`, renormalised over those present).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import talib

from ml_processing.sdk import BadRequest
from ml_processing.sdk.sentiment import MarketAnalyzer

WEIGHTS = {"trend": 0.30, "momentum": 0.25, "volatility": 0.15, "volume": 0.15, "breadth": 0.15}
MIN_BARS = 60


def combine(components: Mapping[str, float]) -> dict[str, Any]:
    present = {k: v for k, v in components.items() if v == v}
    total = sum(WEIGHTS[k] for k in present)
    score = sum(WEIGHTS[k] * v for k, v in present.items()) / total if total else 0.0
    return {"score": round(max(-1.0, min(1.0, score)), 4),
            "components": {k: round(v, 4) for k, v in present.items()},
            "weights": {k: round(WEIGHTS[k] / total, 4) for k in present} if total else {}}


def above_average(close: np.ndarray) -> bool | None:
    """Is the last close above its SMA(50)? None with too few bars."""
    if len(close) < 50:
        return None
    return bool(close[-1] > talib.SMA(close, timeperiod=50)[-1])


class PriceVolume(MarketAnalyzer):
    name = "price_volume"
    doc = "trend, momentum, volatility regime, volume pressure (and breadth) of the last bar"

    def components(self, data: Mapping[str, np.ndarray]) -> dict[str, float]:
        high, low, close, volume = (np.asarray(data[c], dtype=np.float64) for c in ("high", "low", "close", "volume"))
        open_ = np.asarray(data.get("open", np.r_[close[:1], close[:-1]]), dtype=np.float64)
        if len(close) < MIN_BARS:
            raise BadRequest(f"{len(close)} bars; market sentiment needs at least {MIN_BARS}", field="close")
        atr = talib.ATR(high, low, close, timeperiod=14)
        sma = talib.SMA(close, timeperiod=50)
        rsi = talib.RSI(close, timeperiod=14)
        trend = math.tanh((close[-1] - sma[-1]) / (2 * atr[-1])) if atr[-1] > 0 else 0.0
        momentum = (rsi[-1] - 50) / 50 if rsi[-1] == rsi[-1] else float("nan")
        natr = atr / close
        usual = np.nanmedian(natr[-100:])
        volatility = -math.tanh(natr[-1] / usual - 1) if usual > 0 else 0.0
        recent = slice(-20, None)
        direction = np.sign(close[recent] - open_[recent])
        total = volume[recent].sum()
        pressure = float((direction * volume[recent]).sum() / total) if total > 0 else 0.0
        return {"trend": trend, "momentum": float(momentum), "volatility": volatility, "volume": pressure}

    def score(self, data: Mapping[str, np.ndarray]) -> dict[str, Any]:
        return combine(self.components(data))
