"""The indicator contract over every indicator a real kernel registers, entry points included, through the
checks ml-processing ships (`ml_processing.checks.indicators`): streaming equals batch with peeks
interleaved, the declared lookback, bad parameters named, gaps, flat bars and zero volume survived. A
third-party-style indicator with no stream of its own runs through them too, on the recompute fallback."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pytest

from ml_processing import checks
from ml_processing.sdk.indicator import Indicator, Param
from tests.support.registries import FOUND


class Range(Indicator):
    """A third-party-style indicator with no stream of its own: it gets the exact recompute fallback."""

    name = "RANGE_MEAN"
    inputs = ("high", "low")
    params = (Param("window", int, 5, minimum=1),)

    def lookback(self, params: Mapping[str, int | float]) -> int:
        return int(params["window"]) - 1

    def batch(self, data: Mapping[str, np.ndarray], params: Mapping[str, int | float]) -> tuple[np.ndarray, ...]:
        raw = data["high"] - data["low"]
        w = int(params["window"])
        out = np.full(len(raw), np.nan)
        if len(raw) >= w:
            out[w - 1:] = np.convolve(raw, np.ones(w) / w, mode="valid")
        return (out,)


CASES = [*checks.pytest_cases(FOUND, "indicators"), pytest.param(Range(), id="RANGE_MEAN")]


def test_the_registry_holds_the_builtin_indicators() -> None:
    assert {"SMA", "RSI", "MACD", "MAVP", "ICHIMOKU", "VWAP_SESSION"} <= set(FOUND["indicators"])
    assert "indicators" not in FOUND.broken()


@pytest.mark.parametrize("indicator", CASES)
def test_declaration_and_lookback(indicator: Indicator) -> None:
    checks.indicators.check_declaration(indicator)


@pytest.mark.parametrize("indicator", CASES)
def test_streaming_equals_batch(indicator: Indicator) -> None:
    checks.indicators.check_stream_equals_batch(indicator)


@pytest.mark.parametrize("indicator", CASES)
def test_streaming_survives_gaps_flat_bars_and_zero_volume(indicator: Indicator) -> None:
    checks.indicators.check_odd_bars(indicator)


@pytest.mark.parametrize("indicator", CASES)
def test_bad_parameters_are_rejected_with_the_parameter_named(indicator: Indicator) -> None:
    checks.indicators.check_bad_parameters(indicator)
