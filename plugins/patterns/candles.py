"""All of TA-Lib's candlestick patterns (its "Pattern Recognition" group), registered from its metadata.

Each is TA-Lib's function, computed by TA-Lib: in batch over whole arrays, and live through TA-Lib's
stream handles (the shared adapter `ml_processing.sdk.talib_functions`), O(1) per bar. TA-Lib answers
every bar with 0 (nothing), +100/+200 (bullish) or -100/-200 (bearish; 200 where the pattern was
confirmed by a later bar); a non-zero answer becomes a `PatternEvent` at that bar, its sign the direction
and its size the strength.

TA-Lib's candle settings (what counts as a long body, a doji, a near price, ...) are process-wide, TA-Lib
offers no way to read them back, and its Python wrapper refuses to change them while any TA-Lib stream
handle is open (a live indicator's, anywhere in the process): the streams would otherwise answer under two
settings. So `apply_candle_settings` remembers what it put in force and changes TA-Lib only where the
wanted settings differ; the ``patterns`` plugin applies ``[plugins.patterns] candle_settings`` when the
kernel collects its actors, before any actor opens a stream, and again (then a no-op) when its actor starts.
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
        where = np.flatnonzero(raw != 0)  # numpy finds the True of a bool array in bulk, TA-Lib's int32 one by one
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


#: The candle settings in force in this process, as `apply_candle_settings` last set them ({}: TA-Lib's
#: defaults). TA-Lib keeps them process-wide and has no getter, so this is the record.
_in_force: dict[str, dict[str, Any]] = {}


def candle_settings(settings: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``{"BodyDoji": {"range": "HighLow", "period": 10, "factor": 0.1}, ...}`` checked, with the
    defaults of each entry filled in (``range`` HighLow, ``period`` 10, ``factor`` 1.0).

    >>> candle_settings({"BodyDoji": {"factor": 0.5}})
    {'BodyDoji': {'range': 'HighLow', 'period': 10, 'factor': 0.5}}
    """
    out = {}
    for name, spec in settings.items():
        if name not in SETTINGS:
            raise BadRequest(f"unknown candle setting {name!r} (settings: {', '.join(SETTINGS)})", field=name)
        if not isinstance(spec, Mapping) or set(spec) - {"range", "period", "factor"} or \
                spec.get("range", "HighLow") not in RANGES:
            raise BadRequest(f"candle setting {name}: {{range = RealBody|HighLow|Shadows, period, factor}}",
                             field=name)
        period, factor = spec.get("period", 10), spec.get("factor", 1.0)
        if isinstance(period, bool) or not isinstance(period, int) or not 0 <= period <= 100_000 or \
                isinstance(factor, bool) or not isinstance(factor, (int, float)) or not 0 <= factor < float("inf"):
            raise BadRequest(f"candle setting {name}: period an integer from 0 to 100000, factor a non-negative "
                             "number", field=name)
        out[name] = {"range": spec.get("range", "HighLow"), "period": period, "factor": float(factor)}
    return out


def apply_candle_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Put `settings` in force (see `candle_settings`; the rest keep TA-Lib's defaults) and return them.

    Only the settings that differ from those in force are changed, so applying the settings already in
    force never touches TA-Lib, open streams or not. Changing one while a TA-Lib stream is open anywhere in
    the process is refused by TA-Lib: `RuntimeError` saying which settings could not change."""
    wanted = candle_settings(settings)
    for name in [n for n in SETTINGS if wanted.get(n) != _in_force.get(n)]:
        try:
            if name in wanted:
                spec = wanted[name]
                internals._ta_set_candle_settings(SETTINGS[name], RANGES[spec["range"]], spec["period"],
                                                  spec["factor"])
            else:
                internals._ta_restore_candle_default_settings(SETTINGS[name])
        except RuntimeError as exc:
            raise RuntimeError(
                f"TA-Lib's candle setting {name} cannot change to {wanted.get(name, 'its default')} while TA-Lib "
                f"streams are open in this process ({exc}); in force: {dict(_in_force) or 'the defaults'}") from exc
        if name in wanted:
            _in_force[name] = wanted[name]
        else:
            del _in_force[name]
    return wanted


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
