"""The pattern contract over every pattern a real kernel registers (entry points included), through the
checks ml-processing ships (`ml_processing.checks.patterns`): live events equal batch events, events well
formed, gaps, flat bars and zero volume survived, bad parameters named."""

from __future__ import annotations

import pytest

from ml_processing import checks
from ml_processing.sdk.pattern import Pattern
from tests.support.registries import FOUND

PATTERNS = checks.pytest_cases(FOUND, "patterns")


def test_the_registry_holds_the_builtin_patterns() -> None:
    kinds = {p.kind for p in FOUND["patterns"].values()}
    assert kinds == {"candlestick", "chart"} and {"CDLENGULFING", "DOUBLE_TOP"} <= set(FOUND["patterns"])


@pytest.mark.parametrize("pattern", PATTERNS)
def test_live_events_equal_batch_events(pattern: Pattern) -> None:
    checks.patterns.check_live_equals_batch(pattern)


@pytest.mark.parametrize("pattern", PATTERNS)
def test_gaps_flat_bars_and_zero_volume_are_survived(pattern: Pattern) -> None:
    checks.patterns.check_odd_bars(pattern)


@pytest.mark.parametrize("pattern", PATTERNS)
def test_bad_parameters_are_named(pattern: Pattern) -> None:
    checks.patterns.check_bad_parameters(pattern)
