"""The searches the chart patterns' batch detection is made of, against plain Python written from their
definitions: the zigzag's next move from every bar (in the narrow window, the wider matrices and the blocks),
the compiled ``math.fsum``, and the zigzag over whole arrays (compiled, and in numpy) against the live zigzag
bar by bar, on series full of ties, gaps, flat stretches and long one-way trends."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from ml_processing.plugins.patterns.chart import chart_patterns, jit
from ml_processing.plugins.patterns.chart.base import rounded
from ml_processing.plugins.patterns.chart.search import confirm_key, next_moves
from ml_processing.plugins.patterns.chart.zigzag import Zigzag, batch_atr, batch_swings


def rough(n: int, seed: int) -> dict[str, np.ndarray]:
    """High, low, close on a half-unit grid (many equal highs and lows), with gaps, a flat stretch and a long
    one-way trend."""
    rng = np.random.default_rng(seed)
    close = np.round((100 + np.cumsum(np.round(rng.normal(0, 1, n)))) * 2) / 2
    high = close + np.round(np.abs(rng.normal(0, 1, n)) * 2) / 2
    low = close - np.round(np.abs(rng.normal(0, 1, n)) * 2) / 2
    if n > 400:
        trend = np.linspace(0, -80, 250)
        close[100:350], high[100:350], low[100:350] = 100 + trend, 100.5 + trend, 99.5 + trend
        for column in (high, low, close):
            column[n - 120:n - 20] = column[n - 121]
    for column in (high, low, close):
        column[rng.integers(0, n, n // 40)] = np.nan
    return {"high": high, "low": low, "close": close}


def moves_by_definition(top: np.ndarray, bottom: np.ndarray, threshold: np.ndarray) -> tuple[list[int], list[bool]]:
    n = len(top)
    move, confirms = [n] * n, [False] * n
    for p in range(n):
        if not np.isfinite(top[p]):
            continue
        for i in range(p + 1, n):
            beyond = bool(top[i] > top[p])
            if beyond or top[p] - bottom[i] >= threshold[i]:
                move[p], confirms[p] = i, not beyond
                break
    return move, confirms


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize(("window", "wider"), [(8, (32, 256)), (1, ()), (2, (3,))],
                         ids=["default", "blocks-only", "small-matrices"])
def test_next_moves_follow_their_definition(seed: int, window: int, wider: tuple[int, ...]) -> None:
    data = rough(700, seed)
    usable = ~(np.isnan(data["high"]) | np.isnan(data["low"]))
    top, bottom = np.where(usable, data["high"], -np.inf), np.where(usable, data["low"], np.inf)
    threshold = np.full(700, 2.5)
    for up, down in ((top, bottom), (-bottom, -top)):
        move, confirms = next_moves(up, down, threshold, window, wider)
        assert (move.tolist(), confirms.tolist()) == moves_by_definition(up, down, threshold)


def test_the_compiled_fsum_is_pythons() -> None:
    """The level walk's mean price needs ``math.fsum``, which numba lacks: its port must agree to the bit."""
    jit.warm()
    if jit.walks() is None:
        pytest.skip("numba is not installed")
    from ml_processing.plugins.patterns.chart.compiled import fsum

    rng = np.random.default_rng(8)
    for trial in range(3000):
        size = int(rng.integers(1, 12))
        values = [rng.uniform(90, 110, size), rng.normal(0, 1, size) * 10.0 ** rng.integers(-20, 20, size),
                  np.array([1e-16, 1.0, 1e16, -1e16, 3.3, 0.1, 0.2, 0.3, 5e-324, 7.0, -1.0])[:size]][trial % 3]
        assert fsum(values) == math.fsum(values.tolist()), values.tolist()


def test_rounding_in_numpy_is_pythons() -> None:
    """Confidences and details are rounded in numpy, to the bit of Python's ``round``: halves, signs, zeros,
    tiny and huge values."""
    rng = np.random.default_rng(9)
    for digits in (4, 6):
        for scale in (1e-6, 1.0, 100.0, 1e4, 1e9, 1e20):
            values = rng.normal(0, scale, 20_000)
            values = np.concatenate([values, np.round(values, digits + 1), [0.0, -0.0, 5e-324, -5e-324, 0.12345]])
            expected = [round(v, digits) for v in values.tolist()]
            found = rounded(values, digits).tolist()
            assert found == expected
            assert [math.copysign(1, v) for v in found] == [math.copysign(1, v) for v in expected]


def test_the_confirm_key_is_the_least_float_that_confirms() -> None:
    """Prices of like size (one ulp off at most) and of unlike size, across zero (a spread series: many off)."""
    rng = np.random.default_rng(5)
    bottom = np.concatenate([rng.uniform(90, 110, 10_000), rng.uniform(-200, 200, 10_000)])
    threshold = rng.uniform(0, 3, 20_000) * rng.choice([1e-17, 1e-12, 1e-3, 1.0, 300.0], 20_000)
    key = confirm_key(bottom, threshold)
    assert ((key - bottom) >= threshold).all()
    assert not ((np.nextafter(key, -np.inf) - bottom) >= threshold).any()


def swings_live(data: dict[str, np.ndarray], params: dict[str, Any]) -> list[tuple[int, int, float, bool, float]]:
    zigzag, out = Zigzag.open(params), []
    for i in range(len(data["close"])):
        swing = zigzag.update(i, {k: float(v[i]) for k, v in data.items()})
        if swing is not None:
            out.append((i, swing.index, swing.price, swing.high, swing.atr))
    return out


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "numpy"])
@pytest.mark.parametrize("seed", [4, 5, 6, 7])
@pytest.mark.parametrize(("atr_period", "swing_atr"), [(14, 2.0), (3, 0.5), (30, 4.0)])
def test_the_zigzag_over_whole_arrays_is_the_live_zigzag(seed: int, atr_period: int, swing_atr: float,
                                                         compiled: bool) -> None:
    if compiled:
        jit.warm()
        if jit.walks() is None:
            pytest.skip("numba is not installed")
    data = rough(1500, seed)
    jit.ENABLED = compiled
    try:
        swings, _ = batch_swings(data["high"], data["low"],
                                 batch_atr(data["high"], data["low"], data["close"], atr_period), swing_atr)
    finally:
        jit.ENABLED = True
    batch = list(zip(swings.at.tolist(), swings.index.tolist(), swings.price.tolist(), swings.peak.tolist(),
                     swings.atr.tolist(), strict=True))
    assert batch == swings_live(data, {"atr_period": atr_period, "swing_atr": swing_atr})
    assert len(batch) > 10


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "numpy"])
def test_tiny_and_degenerate_series_give_the_live_events(compiled: bool) -> None:
    """One bar to a few dozen: all gaps, all flat (no ATR to speak of), a single swing, the last bar a gap."""
    if compiled:
        jit.warm()
        if jit.walks() is None:
            pytest.skip("numba is not installed")
    rng = np.random.default_rng(12)
    cases = [rough(n, seed) for n, seed in ((1, 1), (2, 2), (3, 3), (17, 4), (40, 5))]
    cases += [{k: np.full(30, 100.0) for k in ("high", "low", "close")},
              {k: np.full(30, np.nan) for k in ("high", "low", "close")}]
    steps = np.concatenate([np.zeros(20), np.full(10, 5.0), np.zeros(10)])
    cases.append({"high": 100.5 + steps, "low": 99.5 + steps, "close": 100.0 + steps + rng.normal(0, 0.1, 40)})
    jit.ENABLED = compiled
    try:
        for data in cases:
            for pattern in chart_patterns():
                params = pattern.resolve({"atr_period": 2, "swing_atr": 0.5} if pattern.name != "LEVEL_BREAKOUT" else
                                         {"atr_period": 2, "swing_atr": 0.5, "max_levels": 1})
                stream = pattern.stream(params)
                live = [e for i in range(len(data["close"]))
                        for e in stream.update({k: float(v[i]) for k, v in data.items()})]
                assert pattern.detect(data, params) == live, (pattern.name, len(data["close"]))
    finally:
        jit.ENABLED = True
