"""Small model artifacts for tests that register models (trained here, in milliseconds)."""

from __future__ import annotations

import numpy as np
import xgboost as xgb

RNG = np.random.default_rng(7)
X = RNG.normal(size=(600, 6))
Y = ((X[:, 0] + X[:, 1] * X[:, 2] + 0.3 * RNG.normal(size=600)) > 0).astype(int)
NAMES = [f"f{i}" for i in range(6)]


def xgb_artifact(fmt: str = "ubj", trees: int = 30, seed: int = 1) -> bytes:
    """An xgboost binary classifier over 6 features, saved as UBJ or JSON."""
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 4, "nthread": 1, "seed": seed},
                        xgb.DMatrix(X, label=Y), num_boost_round=trees)
    return bytes(booster.save_raw(raw_format=fmt))
