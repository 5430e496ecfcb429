"""Chart patterns against recorded events: every chart pattern, under its default and other parameters, over
seeded synthetic markets of 500 to 10,000 bars (one with gaps and flat bars), must report exactly the events
recorded in ``data/chart_golden.json`` (bar, direction, confidence, points and details), in the detectors
and in the service's grouped batch reply.

The record was written by the chart detectors as they stood before their batch path was vectorised (a
Python walk over every bar and swing); it pins that behaviour, for both batch paths (the walks compiled by
numba, and the numpy formulations used without it). Rewrite it only for a change of events made
on purpose, and say so in the commit: ``python -m tests.plugins.patterns.test_chart_golden --write``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ml_processing.bus.codec import packb, unpackb
from ml_processing.plugins.patterns.actor import detect_grouped
from ml_processing.plugins.patterns.chart import chart_patterns, jit
from ml_processing.sdk.synthetic import market

GOLDEN = Path(__file__).parent / "data" / "chart_golden.json"
CHART = {p.name: p for p in chart_patterns()}

#: (seed, bars, gaps, parameter sets): the markets, and the `PARAMS` each is detected under (not all of
#: them everywhere, to keep the record small: about 750 kB).
MARKETS = ((11, 500, False, (0, 1, 2, 3)), (12, 2000, False, (0, 2)), (13, 3000, True, (0, 1, 2, 3)),
           (14, 10_000, False, (0, 2)))

#: Parameter sets every chart pattern runs under (the level parameters only where the pattern has them).
PARAMS: tuple[dict[str, int | float], ...] = (
    {},
    {"swing_atr": 1.25, "tolerance_atr": 1.5, "depth_atr": 0.5},
    {"atr_period": 5, "swing_atr": 2.5, "tolerance_atr": 0.3, "depth_atr": 0.0, "min_touches": 3,
     "breakout_atr": 0.0, "max_levels": 8},
    {"atr_period": 30, "swing_atr": 1.0, "tolerance_atr": 2.5, "depth_atr": 2.0, "min_touches": 2,
     "breakout_atr": 1.0, "max_levels": 1},
)


def bars(seed: int, n: int, gaps: bool) -> dict[str, np.ndarray]:
    """A synthetic market's high, low and close (with NaN gaps and a flat stretch when `gaps`)."""
    data = {k: v for k, v in market(n, seed=seed).items() if k in ("high", "low", "close")}
    if gaps:
        data["high"][[5, 6, n // 2, n // 2 + 1]] = np.nan
        data["low"][[n // 3, 2 * n // 3]] = np.nan
        data["close"][[300, 301, n - 7]] = np.nan
        for column in data.values():
            column[n // 4:n // 4 + 60] = 100.0
    return data


def params_for(name: str, given: dict[str, int | float]) -> dict[str, int | float]:
    pattern = CHART[name]
    return pattern.resolve({k: v for k, v in given.items() if k in {p.name for p in pattern.params}})


def record(events: list[Any]) -> list[list[Any]]:
    """Events as compact rows: [bar, +1 or -1, confidence, points, details]."""
    return [[e.index, 1 if e.direction == "bullish" else -1, e.strength, [list(p) for p in e.points], e.details]
            for e in events]


def case_id(seed: int, n: int, gaps: bool, k: int) -> str:
    return f"seed{seed}-{n}{'-gaps' if gaps else ''}-params{k}"


def write() -> None:
    out: dict[str, dict[str, list[list[Any]]]] = {}
    for seed, n, gaps, sets in MARKETS:
        data = bars(seed, n, gaps)
        for k in sets:
            out[case_id(seed, n, gaps, k)] = {name: record(p.detect(data, params_for(name, PARAMS[k])))
                                              for name, p in CHART.items()}
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(json.dumps(out, separators=(",", ":")) + "\n")


@pytest.fixture(scope="module")
def golden() -> dict[str, dict[str, list[list[Any]]]]:
    return json.loads(GOLDEN.read_text())  # type: ignore[no-any-return]


@pytest.fixture(params=[True, False], ids=["compiled", "numpy"])
def walks(request: pytest.FixtureRequest) -> Iterator[bool]:
    """Batch detection with the compiled walks (where numba is installed) and with the numpy formulations."""
    if request.param:
        jit.warm()  # loaded now, whether or not a kernel of this process set the background mode
        if jit.walks() is None:
            pytest.skip("numba is not installed")
    jit.ENABLED = request.param
    try:
        yield request.param
    finally:
        jit.ENABLED = True


CASES = [(seed, n, gaps, k) for seed, n, gaps, sets in MARKETS for k in sets]


def test_the_record_covers_every_chart_pattern_and_case(golden: dict[str, dict[str, list[list[Any]]]]) -> None:
    assert sorted(golden) == sorted(case_id(*case) for case in CASES)
    assert all(sorted(found) == sorted(CHART) for found in golden.values())
    assert all(golden[case_id(14, 10_000, False, 0)][name] for name in CHART), "every pattern fires at least once"


@pytest.mark.parametrize(("seed", "n", "gaps", "k"), CASES, ids=[case_id(*case) for case in CASES])
def test_detectors_report_the_recorded_events(seed: int, n: int, gaps: bool, k: int, walks: bool,
                                              golden: dict[str, dict[str, list[list[Any]]]]) -> None:
    data = bars(seed, n, gaps)
    expected = golden[case_id(seed, n, gaps, k)]
    for name, pattern in CHART.items():
        assert record(pattern.detect(data, params_for(name, PARAMS[k]))) == expected[name], name


@pytest.mark.parametrize(("seed", "n", "gaps", "k"), [(13, 3000, True, 1), (14, 10_000, False, 0)])
def test_the_grouped_batch_reply_carries_the_recorded_events(seed: int, n: int, gaps: bool, k: int, walks: bool,
                                                             golden: dict[str, dict[str, list[list[Any]]]]) -> None:
    """What ``detect`` answers (columns per pattern), as it travels, is the record, event for event, ts
    included."""
    data = bars(seed, n, gaps)
    for column in data.values():
        column.setflags(write=False)  # as the service decodes them from msgpack
    ts = 1_700_000_000_000 + 60_000 * np.arange(n, dtype=np.int64)
    grouped = unpackb(packb(detect_grouped([(p, params_for(name, PARAMS[k])) for name, p in CHART.items()], data, ts)))
    for name, rows in golden[case_id(seed, n, gaps, k)].items():
        if not rows:
            assert name not in grouped
            continue
        group = grouped[name]
        assert group["kind"] == "chart"
        assert group["index"].tolist() == [row[0] for row in rows]
        assert group["ts"].tolist() == [int(ts[row[0]]) for row in rows]
        assert group["direction"].tolist() == [row[1] for row in rows]
        assert group["strength"].tolist() == [row[2] for row in rows]
        assert group["points"] == [row[3] for row in rows]
        assert group["details"] == [row[4] for row in rows]
    if walks:  # one machine-code version each, the one warmed: read-only columns did not make numba compile again
        compiled = jit.walks()
        assert compiled is not None
        assert len(compiled.zigzag_walk.signatures) == len(compiled.level_walk.signatures) == 1


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit(__doc__)
    write()
