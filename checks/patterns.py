"""The pattern contract (`ml_processing.sdk.pattern`), checked on one pattern.

* live equals batch: the events a stream reports bar by bar (``stream(params).update``) are the events
  ``detect`` reports on the whole series, field for field (``to_wire``, details included): a pattern is
  reported at the bar that confirms it and never withdrawn;
* every event is well formed: the pattern's name and kind, a bar index inside the series, in bar order, a
  direction of ``bullish`` or ``bearish``, a finite strength, the bar's timestamp;
* gaps (NaN), flat bars and zero volume crash neither ``detect`` nor the stream, and their events are well
  formed too (whether they agree there is the pattern's own business: TA-Lib's batch candlesticks carry a
  NaN forward through their running averages where its streams do not);
* a bad parameter is refused with `BadRequest` naming it.

Each check raises `AssertionError` with what differed.

>>> from ml_processing.sdk import BULLISH, Pattern, PatternEvent, PatternStream
>>> class Up(Pattern):
...     name = "THREE_UP"; kind = "chart"; inputs = ("close",)
...     def detect(self, data, params, ts=None):
...         c = data["close"]
...         return [PatternEvent(self.name, "chart", i, BULLISH, 1.0, None if ts is None else int(ts[i]))
...                 for i in range(3, len(c)) if c[i] > c[i - 1] > c[i - 2] > c[i - 3]]
...     def stream(self, params):
...         return UpStream()
>>> class UpStream(PatternStream):
...     def __init__(self): self.last, self.i = [], -1
...     def update(self, bar):
...         self.i += 1; self.last = [*self.last, bar["close"]][-4:]
...         c = self.last
...         hit = len(c) == 4 and c[3] > c[2] > c[1] > c[0]
...         return [PatternEvent("THREE_UP", "chart", self.i, BULLISH, 1.0, bar.get("ts"))] if hit else []
>>> check_pattern(Up())
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ml_processing.core.errors import BadRequest
from ml_processing.sdk.pattern import BEARISH, BULLISH, Pattern, PatternEvent

from .data import columns, rough, series, survived

__all__ = ["check_bad_parameters", "check_live_equals_batch", "check_odd_bars", "check_pattern"]

BARS = 1500
KINDS = ("candlestick", "chart")


def check_pattern(pattern: Pattern) -> None:
    """Every check of this module, in order."""
    assert pattern.kind in KINDS, f"{pattern.name}: kind {pattern.kind!r} is not one of {KINDS}"
    check_live_equals_batch(pattern)
    check_odd_bars(pattern)
    check_bad_parameters(pattern)


def _well_formed(pattern: Pattern, events: list[PatternEvent], ts: np.ndarray, how: str) -> None:
    last = -1
    for event in events:
        where = f"{pattern.name} ({how}): event {event.to_wire()!r:.200}"
        assert event.pattern == pattern.name and event.kind == pattern.kind, f"{where}: not named as the pattern"
        assert 0 <= event.index < len(ts) and event.index >= last, f"{where}: index out of the series or order"
        assert event.direction in (BULLISH, BEARISH), f"{where}: direction is not {BULLISH!r} or {BEARISH!r}"
        assert isinstance(event.strength, (int, float)) and math.isfinite(event.strength), f"{where}: strength"
        assert event.ts == int(ts[event.index]), f"{where}: ts is not the timestamp of bar {event.index}"
        last = event.index


def _run(pattern: Pattern, data: dict[str, np.ndarray], what: str) -> tuple[list[PatternEvent], list[PatternEvent]]:
    """(live, batch) events of `pattern` over `data`, each checked to be well formed."""
    params = pattern.resolve({})
    inputs = dict(zip(pattern.inputs, columns(data, pattern.inputs, pattern.name), strict=True))
    ts = data["ts"].astype(np.int64)
    batch = list(pattern.detect(inputs, params, ts))
    _well_formed(pattern, batch, ts, f"batch, {what}")
    stream = pattern.stream(params)
    live: list[PatternEvent] = []
    for i in range(len(ts)):
        live += stream.update({**{name: float(column[i]) for name, column in inputs.items()}, "ts": int(ts[i])})
    _well_formed(pattern, live, ts, f"live, {what}")
    return live, batch


def check_live_equals_batch(pattern: Pattern) -> None:
    """The events of a stream fed bar by bar equal the events of ``detect`` on the whole series."""
    live, batch = _run(pattern, series(BARS), "clean series")
    got, expected = [e.to_wire() for e in live], [e.to_wire() for e in batch]
    if got != expected:
        first = next((i for i, (a, b) in enumerate(zip(got, expected, strict=False)) if a != b),
                     min(len(got), len(expected)))
        raise AssertionError(f"{pattern.name}: live reported {len(got)} events, batch {len(expected)}; first "
                             f"difference at event {first}: live {got[first:first + 1]!r:.300}, "
                             f"batch {expected[first:first + 1]!r:.300}")


def check_odd_bars(pattern: Pattern) -> None:
    """Gaps, flat bars and zero volume: ``detect`` and the stream run through and report well-formed events."""
    with survived(f"{pattern.name} on gaps, flat bars and zero volume"):
        _run(pattern, rough(BARS // 3), "gaps, flat bars, zero volume")


def check_bad_parameters(pattern: Pattern) -> None:
    """An unknown parameter, and each parameter given a string, raise `BadRequest` naming it."""
    bad: list[tuple[str, Any]] = [("no_such_parameter", 1), *((p.name, "7") for p in pattern.params)]
    for name, value in bad:
        try:
            pattern.resolve({name: value})
        except BadRequest as exc:
            assert exc.field == name, f"{pattern.name}: {name}={value!r} is refused as {exc.field!r}: {exc.message!r}"
        else:
            raise AssertionError(f"{pattern.name}: parameter {name}={value!r} was accepted")
