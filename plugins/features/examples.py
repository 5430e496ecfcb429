"""An example pipeline of 20 features, one of every kind of step: indicators, returns, volatility, z-scores,
lags and changes of an indicator, a ratio and a difference of hidden columns, the candle's shape, time
encodings, an indicator of volume, and three transforms. The tests prove it streams what it computes in
batch; the benchmarks measure it.
"""

from __future__ import annotations

from typing import Any

TWENTY_FEATURES: dict[str, Any] = {"steps": [
    {"feature": "log_return", "params": {"k": 1}},
    {"feature": "log_return", "params": {"k": 5}},
    {"feature": "return", "params": {"k": 10}},
    {"feature": "volatility", "params": {"window": 20}},
    {"feature": "zscore", "params": {"window": 20}},
    {"feature": "zscore", "params": {"window": 50}, "inputs": ["volume"]},
    {"indicator": "RSI", "params": {"timeperiod": 14}},
    {"feature": "lag", "params": {"k": 1}, "inputs": ["RSI_14"]},
    {"feature": "change", "params": {"k": 3}, "inputs": ["RSI_14"]},
    {"indicator": "ATR", "params": {"timeperiod": 14}, "output": False},
    {"feature": "ratio", "inputs": ["ATR_14", "close"], "as": "atr_pct"},
    {"indicator": "EMA", "params": {"timeperiod": 12}, "output": False},
    {"indicator": "EMA", "params": {"timeperiod": 26}, "output": False},
    {"feature": "diff", "inputs": ["EMA_12", "EMA_26"], "as": "ema_gap"},
    {"indicator": "ADX", "params": {"timeperiod": 14}},
    {"indicator": "MFI", "params": {"timeperiod": 14}},
    {"feature": "candle"},
    {"feature": "time", "as": ["tod_sin", "tod_cos", "dow_sin", "dow_cos"], "output": False},
    {"feature": "ratio", "inputs": ["tod_sin", "tod_cos"], "as": "tod_ratio"},
    {"feature": "diff", "inputs": ["dow_sin", "tod_sin"], "as": "dow_minus_tod"},
    {"indicator": "SMA", "params": {"timeperiod": 30}, "inputs": ["volume"]},
    {"transform": "robust", "columns": ["SMA_30(volume)"]},
    {"transform": "standard"},
    {"transform": "clip", "params": {"lower": -4, "upper": 4}}]}
