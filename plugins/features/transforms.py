"""Transform steps: fitted on training rows, then applied as plain arithmetic (the same in batch and on
one live row).

``standard``, ``minmax`` and ``robust`` are fitted by scikit-learn's scalers (which ignore NaN and treat a
constant column as scale 1) and stored as an affine map ``(x - offset) / scale`` per column; ``clip``
needs no fitting. Applying a fitted map costs one subtraction and one division per value.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ml_processing.sdk import BadRequest
from ml_processing.sdk.indicator import Param, resolve_params

SCALERS = ("standard", "minmax", "robust")
KINDS = (*SCALERS, "clip")
PARAMS: dict[str, tuple[Param, ...]] = {
    "standard": (),
    "minmax": (),
    "robust": (Param("q_low", float, 25.0, minimum=0, maximum=100, doc="lower quantile of the range"),
               Param("q_high", float, 75.0, minimum=0, maximum=100, doc="upper quantile of the range")),
    "clip": (Param("lower", float, -5.0, doc="smallest value kept"), Param("upper", float, 5.0, doc="largest")),
}
DOCS = {
    "standard": "(x - mean) / standard deviation, fitted per column",
    "minmax": "(x - min) / (max - min): [0, 1] on the training rows",
    "robust": "(x - median) / (q_high - q_low quantile range): insensitive to outliers",
    "clip": "limits every value to [lower, upper]; nothing to fit",
}


def check(kind: Any, params: Any, where: str) -> dict[str, int | float]:
    if kind not in KINDS:
        raise BadRequest(f"{where}: unknown transform {kind!r} (transforms: {', '.join(KINDS)})", field=where)
    resolved = resolve_params(kind, PARAMS[kind], params)
    if kind == "clip" and resolved["lower"] >= resolved["upper"]:
        raise BadRequest(f"{where}: clip needs lower < upper", field=f"{where}.params.lower")
    if kind == "robust" and resolved["q_low"] >= resolved["q_high"]:
        raise BadRequest(f"{where}: robust needs q_low < q_high", field=f"{where}.params.q_low")
    return resolved


def fit(kind: str, params: Mapping[str, int | float], x: np.ndarray) -> dict[str, list[float]]:
    """The fitted state of one transform on `x` (rows x its columns, NaN-free rows)."""
    if kind == "clip":
        return {}
    from sklearn.preprocessing import MinMaxScaler, RobustScaler, StandardScaler  # only when fitting

    if kind == "standard":
        scaler = StandardScaler().fit(x)
        offset, scale = scaler.mean_, scaler.scale_
    elif kind == "minmax":
        scaler = MinMaxScaler().fit(x)
        offset, scale = scaler.data_min_, 1.0 / scaler.scale_
    else:
        scaler = RobustScaler(quantile_range=(float(params["q_low"]), float(params["q_high"]))).fit(x)
        offset, scale = scaler.center_, scaler.scale_
    return {"offset": [float(v) for v in offset], "scale": [float(v) for v in scale]}


def apply(kind: str, params: Mapping[str, int | float], state: Mapping[str, Sequence[float]],
          x: np.ndarray) -> np.ndarray:
    """`x` (rows x the transform's columns) transformed; a new array."""
    if kind == "clip":
        return np.clip(x, params["lower"], params["upper"])
    return (x - np.asarray(state["offset"])) / np.asarray(state["scale"])


def row_function(kind: str, params: Mapping[str, int | float], state: Mapping[str, Sequence[float]],
                 columns: Sequence[int], width: int) -> Callable[[list[float]], list[float]]:
    """One fitted transform as a function of a row (a new list), in plain floats: the live path makes no
    array round trip, and the arithmetic is the same as `apply`'s."""
    every = list(columns) == list(range(width))
    if kind == "clip":
        lower, upper = params["lower"], params["upper"]

        def clip(v: float) -> float:
            return v if v != v else min(max(v, lower), upper)

        if every:
            return lambda row: [clip(v) for v in row]
        chosen = frozenset(columns)
        return lambda row: [clip(v) if j in chosen else v for j, v in enumerate(row)]
    offset = dict(zip(columns, state["offset"], strict=True))
    scale = dict(zip(columns, state["scale"], strict=True))
    if every:
        pairs = list(zip(state["offset"], state["scale"], strict=True))
        return lambda row: [(v - o) / s for v, (o, s) in zip(row, pairs, strict=True)]
    return lambda row: [(v - offset[j]) / scale[j] if j in offset else v for j, v in enumerate(row)]
