"""Chart patterns, ours: swing points, double tops and bottoms, head and shoulders, support and resistance
breakouts, triangles and channels (docs/PATTERNS.md).

Every one is built on the swing points of one zigzag (`zigzag`: a threshold of ``swing_atr`` x ATR). A
pattern forms when a swing point is confirmed and the last few swings have its shape; it is reported only
at the bar that confirms it (a close beyond its neckline, level or line) and is never withdrawn, so no
event repaints. Each family's module holds its rule twice, side by side: ``update``, one bar at a time for
live detection, and ``scan``, over whole arrays for batch detection (formations and their confirmations in
numpy, the two sequential walks, the zigzag and the levels, compiled by numba where it is installed:
`compiled`, `jit`; docs/PATTERNS.md says how and at what cost); the chart contract test proves them equal,
event for event (points, confidence and details included), on every pattern. Every event carries its key
points (bar index, price), a confidence in [0, 1] and details.

| module | patterns |
| --- | --- |
| `swings` | ``SWING_POINTS`` |
| `double` | ``DOUBLE_TOP``, ``DOUBLE_BOTTOM`` |
| `head_shoulders` | ``HEAD_SHOULDERS``, ``INV_HEAD_SHOULDERS`` |
| `levels` | ``LEVEL_BREAKOUT`` |
| `shapes` | ``TRIANGLE_ASCENDING``, ``TRIANGLE_DESCENDING``, ``TRIANGLE_SYMMETRIC``, ``CHANNEL`` |

Batch building blocks: `search` (numpy searches over whole arrays), `compiled` (the walks numba compiles),
`jit` (whether they are used).

>>> [p.name for p in chart_patterns()][:3]
['SWING_POINTS', 'DOUBLE_TOP', 'DOUBLE_BOTTOM']
"""

from __future__ import annotations

from ml_processing.sdk.pattern import Pattern

from . import jit
from .base import PARAMS, ChartPattern, Found
from .double import Double
from .head_shoulders import HeadShoulders
from .levels import LEVEL_PARAMS, LevelBreakout
from .shapes import SHAPES, Shape
from .swings import SwingPoints
from .zigzag import Swing, Zigzag, Zigzags

__all__ = ["LEVEL_PARAMS", "PARAMS", "SHAPES", "ChartPattern", "Found", "Swing", "Zigzag", "Zigzags", "chart_patterns",
           "jit"]


def chart_patterns() -> list[Pattern]:
    """Every built-in chart pattern."""
    return [SwingPoints(), Double(top=True), Double(top=False), HeadShoulders(inverse=False),
            HeadShoulders(inverse=True), LevelBreakout(), *(Shape(name) for name in SHAPES)]
