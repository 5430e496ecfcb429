"""All of TA-Lib's candlestick patterns (its "Pattern Recognition" group), registered from its metadata.

Each is TA-Lib's function, computed by TA-Lib: in batch over whole arrays, and live through TA-Lib's
stream handles (the shared adapter `ml_processing.sdk.talib_functions`), O(1) per bar. TA-Lib answers
every bar with 0 (nothing), +100/+200 (bullish) or -100/-200 (bearish; 200 where the pattern was
confirmed by a later bar); a non-zero answer becomes a `PatternEvent` at that bar, its sign the direction
and its size the strength.

TA-Lib's candle settings (what counts as a long body, a doji, a near price, ...) are process-wide;
`apply_candle_settings` sets them from ``[plugins.patterns] candle_settings``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import talib

from ml_processing.sdk import BadRequest
from ml_processing.sdk.feature import FeatureExtractor, FeatureStream
from ml_processing.sdk.indicator import IndicatorStream, Param
from ml_processing.sdk.pattern import BEARISH, BULLISH, Pattern, PatternEvent, PatternStream
from ml_processing.sdk.talib_functions import TalibIndicator, internals

GROUP = "Pattern Recognition"
SETTINGS = {name: getattr(internals.CandleSettingType, name) for name in
            ("BodyLong", "BodyVeryLong", "BodyShort", "BodyDoji", "ShadowLong", "ShadowVeryLong", "ShadowShort",
             "ShadowVeryShort", "Near", "Far", "Equal")}
RANGES = {name: getattr(internals.RangeType, name) for name in ("RealBody", "HighLow", "Shadows")}


def _events(name: str, values: np.ndarray, ts: np.ndarray | None, offset: int = 0) -> list[PatternEvent]:
    hits = np.flatnonzero(np.nan_to_num(values) != 0)
    return [PatternEvent(name, "candlestick", int(i) + offset, BULLISH if values[i] > 0 else BEARISH,
                         float(abs(values[i])), None if ts is None else int(ts[i])) for i in hits]


class Candlestick(Pattern):
    """One TA-Lib candlestick function as a pattern."""

    kind = "candlestick"

    def __init__(self, name: str) -> None:
        self.function = TalibIndicator(name)
        self.name = name  # type: ignore[misc]
        self.doc = self.function.doc  # type: ignore[misc]
        self.inputs = self.function.inputs  # type: ignore[misc]
        self.params: tuple[Param, ...] = self.function.params  # type: ignore[misc]

    def resolve(self, given: Mapping[str, Any] | None) -> dict[str, int | float]:
        return self.function.resolve(given)

    def lookback(self, params: Mapping[str, int | float]) -> int:
        return self.function.lookback(params)

    def detect(self, data: Mapping[str, np.ndarray], params: Mapping[str, int | float],
               ts: np.ndarray | None = None) -> list[PatternEvent]:
        (values,) = self.function.batch(data, params)
        return _events(self.name, values, ts)

    def hits(self, data: Mapping[str, np.ndarray], params: Mapping[str, int | float]) -> tuple[np.ndarray, np.ndarray]:
        """(bar indexes, TA-Lib's signed answers there): the events as columns, straight from TA-Lib (0 before
        its lookback, so nothing is reported there, exactly as `detect`)."""
        raw = self.function.function(*(data[c] for c in self.inputs), **params)
        where = np.flatnonzero(raw)
        return where, raw[where].astype(np.float64)

    def stream(self, params: Mapping[str, int | float]) -> PatternStream:
        return CandleStream(self.name, self.function.stream(params))


class CandleStream(PatternStream):
    def __init__(self, name: str, stream: IndicatorStream) -> None:
        self.name = name
        self.stream = stream
        self.index = -1

    def update(self, bar: Mapping[str, float]) -> list[PatternEvent]:
        self.index += 1
        (value,) = self.stream.update(bar)
        if value != value or value == 0:
            return []
        ts = bar.get("ts")
        return [PatternEvent(self.name, "candlestick", self.index, BULLISH if value > 0 else BEARISH,
                             float(abs(value)), None if ts is None else int(ts))]


def candlesticks() -> list[Pattern]:
    return [Candlestick(name) for name in talib.get_function_groups()[GROUP]]


def apply_candle_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Set TA-Lib's candle settings: ``{"BodyDoji": {"range": "HighLow", "period": 10, "factor": 0.1}, ...}``
    (the rest keep TA-Lib's defaults). Returns what was applied."""
    internals._ta_restore_candle_default_settings(internals.CandleSettingType.AllCandleSettings)
    applied = {}
    for name, spec in settings.items():
        if name not in SETTINGS:
            raise BadRequest(f"unknown candle setting {name!r} (settings: {', '.join(SETTINGS)})", field=name)
        if not isinstance(spec, Mapping) or set(spec) - {"range", "period", "factor"} or \
                spec.get("range", "HighLow") not in RANGES:
            raise BadRequest(f"candle setting {name}: {{range = RealBody|HighLow|Shadows, period, factor}}",
                             field=name)
        period, factor = spec.get("period", 10), spec.get("factor", 1.0)
        if isinstance(period, bool) or not isinstance(period, int) or period < 0 or \
                isinstance(factor, bool) or not isinstance(factor, (int, float)) or factor < 0:
            raise BadRequest(f"candle setting {name}: period a non-negative integer, factor a non-negative number",
                             field=name)
        internals._ta_set_candle_settings(SETTINGS[name], RANGES[spec.get("range", "HighLow")], period,
                                          float(factor))
        applied[name] = {"range": spec.get("range", "HighLow"), "period": period, "factor": float(factor)}
    return applied


class CandleFlag(FeatureExtractor):
    """A candlestick pattern as a feature column: TA-Lib's answer / 100 (0, +-1, +-2; bullish positive)."""

    inputs = ("open", "high", "low", "close")

    def __init__(self, pattern: Candlestick) -> None:
        self.pattern = pattern
        self.name = f"pattern_{pattern.name.lower()}"  # type: ignore[misc]
        self.doc = f"{pattern.doc} (TA-Lib {pattern.name}) / 100"  # type: ignore[misc]
        self.params = pattern.params  # type: ignore[misc]

    def lookback(self, params: Mapping[str, int | float]) -> int:
        return self.pattern.lookback(params)

    def batch(self, inputs: Sequence[np.ndarray], params: Mapping[str, int | float],
              registries: Mapping[str, Mapping[str, Any]]) -> tuple[np.ndarray, ...]:
        data = dict(zip(self.inputs, inputs, strict=True))
        return (self.pattern.function.batch(data, params)[0] / 100.0,)

    def stream(self, params: Mapping[str, int | float],
               registries: Mapping[str, Mapping[str, Any]]) -> FeatureStream:
        return _FlagStream(self.pattern.function.stream(params))


class _FlagStream(FeatureStream):
    def __init__(self, stream: IndicatorStream) -> None:
        self.stream = stream

    def update(self, *inputs: float) -> tuple[float, ...]:
        o, h, lo, c = inputs
        (value,) = self.stream.update({"open": o, "high": h, "low": lo, "close": c})
        return (value / 100.0,)


def candle_flags() -> list[FeatureExtractor]:
    """Every candlestick pattern as a feature extractor, for feature pipelines."""
    return [CandleFlag(pattern) for pattern in candlesticks() if isinstance(pattern, Candlestick)]
