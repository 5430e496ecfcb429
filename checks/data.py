"""The series the checks feed: the SDK's seeded synthetic market, and the same with gaps, flat bars and
zero volume.

>>> clean = series(50)
>>> sorted(clean)
['close', 'high', 'low', 'open', 'periods', 'ts', 'volume']
>>> {name: str(column.dtype) for name, column in clean.items()} == dict.fromkeys(clean, "float64")
True
>>> odd = rough(120)
>>> bool(np.isnan(odd["close"][40:45]).all()), float(odd["high"][100]), float(odd["volume"].max())
(True, 50.0, 0.0)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np

from ml_processing.sdk.synthetic import SEED, market

__all__ = ["close_enough", "columns", "rough", "row", "series", "survived"]


def series(n: int, seed: int = SEED) -> dict[str, np.ndarray]:
    """`n` bars of the synthetic market as float64 columns: ``ts``, OHLCV, and ``periods`` (integers 2 to
    29, the per-bar period TA-Lib's MAVP reads)."""
    data = {name: np.asarray(values, dtype=np.float64) for name, values in market(n, seed).items()}
    data["periods"] = np.random.default_rng(seed).integers(2, 30, n).astype(np.float64)
    return data


def rough(n: int, seed: int = SEED) -> dict[str, np.ndarray]:
    """`series` with what live data brings: a gap (NaN closes at bars 40 to 44, NaN highs at 5 and 6),
    a stretch of flat bars (open = high = low = close = 50 at bars 80 to 109) and no volume at all."""
    data = series(n, seed)
    data["close"][40:45] = np.nan
    data["high"][5:7] = np.nan
    for name in ("open", "high", "low", "close"):
        data[name][80:110] = 50.0
    data["volume"][:] = 0.0
    return data


def columns(data: Mapping[str, np.ndarray], names: Iterable[str], owner: str) -> list[np.ndarray]:
    """The columns `owner` reads, in its order; an `AssertionError` naming one the checks cannot supply."""
    out = []
    for name in names:
        if name not in data:
            raise AssertionError(f"{owner} reads input {name!r}; the checks supply {', '.join(sorted(data))}")
        out.append(data[name])
    return out


def row(data: Mapping[str, np.ndarray], names: Iterable[str], i: int) -> dict[str, Any]:
    """Bar `i` of `data` as a map of plain floats (what a stream's ``update`` receives)."""
    return {name: float(data[name][i]) for name in names}


def close_enough(a: float, b: float) -> bool:
    """Equal within 1e-9 relative (1e-12 absolute near zero), NaN only where the other is NaN.

    >>> close_enough(1.0, 1.0 + 1e-12), close_enough(float("nan"), float("nan")), close_enough(0.0, float("nan"))
    (True, True, False)
    """
    if a != a or b != b:
        return a != a and b != b
    return a == b or abs(a - b) <= 1e-9 * max(abs(a), abs(b)) or abs(a - b) < 1e-12


@contextlib.contextmanager
def survived(what: str) -> Iterator[None]:
    """An exception in the block (other than the checks' own `AssertionError`) as an `AssertionError`
    saying `what` did not survive.

    >>> with survived("update at bar 3"):
    ...     1 / 0
    Traceback (most recent call last):
    ...
    AssertionError: update at bar 3 raised ZeroDivisionError: division by zero
    """
    try:
        yield
    except AssertionError:
        raise
    except Exception as exc:
        raise AssertionError(f"{what} raised {type(exc).__name__}: {exc!s:.200}") from exc
