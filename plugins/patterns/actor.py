"""The ``patterns`` service: detection over posted bars, and live detection on every bar series.

Batch: ``detect`` finds the events of the chosen patterns over columns of bars (`detect_grouped`); a
request whose estimated work exceeds `INLINE_WORK` is detected on the thread pool, off the event loop.

Live: for each series seen on ``bar.SYMBOL.TIMEFRAME``, every pattern in ``[plugins.patterns] live``
(default: all registered) keeps its stream state; each committed bar (final, newer than the series' last)
advances them, and the events it confirms are published on ``pattern.SYMBOL.TIMEFRAME``. With
``signals = true``, an event of at least ``signal_strength`` also publishes ``signal.SYMBOL``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ml_processing.bus import topics
from ml_processing.sdk import Actor, BadRequest, NoArgs, get_logger, op
from ml_processing.sdk.bars import check_bar
from ml_processing.sdk.columns import NAMES
from ml_processing.sdk.pattern import BULLISH, Pattern, PatternInfo, PatternStream

from .candles import Candlestick, apply_candle_settings, candle_settings
from .chart import ChartPattern, Zigzags, jit
from .ops import DetectArgs, DetectReply, ListArgs, PatternSpec, SeriesInfo

log = get_logger(__name__)

#: Above this estimated work (in units of about 10 ns) a ``detect`` runs on the thread pool, so the event
#: loop is held for about a millisecond at most. The estimate, per pattern: bars x its weight, plus
#: `PATTERN_WORK` (the call and its reply's columns, about 5 us). Weights per bar, measured on a 2-core
#: machine: a candlestick pattern about 20 ns (one TA-Lib call); a chart pattern about 50 ns (numpy over
#: whole arrays, the zigzag and levels compiled: docs/PATTERNS.md); another plugin's pattern, whose cost is
#: unknown, 500 ns. So every pattern on 100 bars, the ten chart patterns on 1,500 or one candlestick pattern
#: on 50,000 stay inline.
INLINE_WORK = 100_000
PATTERN_WORK = 500
CANDLE_WEIGHT, CHART_WEIGHT, OTHER_WEIGHT = 2, 5, 50

Chosen = list[tuple[Pattern, dict[str, int | float]]]


@dataclass(frozen=True)
class PatternsConfig:
    """``[plugins.patterns]``."""

    live: tuple[str, ...] = ("*",)  # patterns detected live on every bar series: names, or "*" for all
    candle_settings: dict[str, Any] = field(default_factory=dict)  # TA-Lib's candle settings (docs/PATTERNS.md)
    signals: bool = False  # publish signal.SYMBOL for live events of at least signal_strength
    signal_strength: float = 200.0  # candlesticks: 100 or 200 (confirmed); chart patterns: their confidence

    def __post_init__(self) -> None:
        if self.signal_strength < 0:
            raise ValueError("signal_strength: must not be negative")
        try:
            candle_settings(self.candle_settings)
        except BadRequest as exc:
            raise ValueError(f"candle_settings: {exc.message}") from None


@dataclass
class _Series:
    streams: list[PatternStream]
    last_ts: int | None = None


class Patterns(Actor):
    """Ops: ``list``, ``detect``, ``series``."""

    name = "patterns"

    async def on_start(self) -> None:
        # in force already (the plugin applied them before any stream opened): then this changes nothing
        self.candle_settings = apply_candle_settings(self.config.candle_settings)
        jit.in_background()  # the compiled chart walks load on a thread at first use: no request waits for them
        self.live_patterns = self._named(list(self.config.live), "live")
        self.series: dict[tuple[str, str], _Series] = {}
        self.detected = 0
        self.signals = 0
        self.subscribe(topics.BAR + ".", self.on_bar)

    # -- a symbol's detectors move between processes (`ml_processing.core.shards`): they warm up again on
    # the next bars, as after a restart

    def shard_symbols(self) -> set[str]:
        return {symbol for symbol, _ in self.series}

    def shard_drop(self, symbols: Sequence[str]) -> None:
        gone = set(symbols)
        for key in [k for k in self.series if k[0] in gone]:
            del self.series[key]

    async def shard_load(self, states: Mapping[str, Any]) -> None:
        self.shard_drop(list(states))

    @property
    def registry(self) -> Mapping[str, Pattern]:
        return self.registries.get("patterns", {})  # type: ignore[return-value]

    def _named(self, specs: Sequence[str | PatternSpec | Mapping[str, Any]], field_name: str,
               kind: str | None = None) -> Chosen:
        """Patterns by name (any case; ``["*"]`` for all, or all of one `kind`) with their parameters, checked
        against the registry."""
        if list(specs) == ["*"]:
            return [(p, p.resolve({})) for p in self.registry.values() if kind in (None, p.kind)]
        out = []
        for i, spec in enumerate(specs):
            if isinstance(spec, PatternSpec):
                name, params = spec.name, spec.params
            elif isinstance(spec, Mapping):  # from the config file
                name, params = spec.get("name"), spec.get("params")
            else:
                name, params = spec, None
            pattern = self.registry.get(name.upper() if isinstance(name, str) and name.upper() in self.registry
                                        else name)  # type: ignore[arg-type]
            if pattern is None:
                raise BadRequest(f"{field_name}[{i}]: unknown pattern {name!r:.40} (op list names them)",
                                 field=f"{field_name}[{i}]")
            try:
                out.append((pattern, pattern.resolve(params)))
            except BadRequest as exc:
                raise BadRequest(f"{field_name}[{i}]: {exc.message}", field=f"{field_name}[{i}].params.{exc.field}") \
                    from None
        return out

    # -- batch ------------------------------------------------------------------------------------------

    @op(ListArgs, reply=list[PatternInfo], role="read")
    def handle_list(self, args: ListArgs) -> list[PatternInfo]:
        """Every registered pattern (or those of one kind): name, kind, inputs, parameters."""
        return [p.describe() for p in self.registry.values() if args.kind in (None, p.kind)]

    @op(DetectArgs, reply=DetectReply, role="compute", spread=True)
    def handle_detect(self, args: DetectArgs) -> Any:
        """Detect candlestick and chart patterns over columns of bars: each pattern's events, as columns."""
        chosen = self._named(args.patterns, "patterns", args.kind)  # named ones are checked whatever their kind
        if args.kind is not None:
            chosen = [(p, params) for p, params in chosen if p.kind == args.kind]
        used = {c for p, _ in chosen for c in p.inputs}
        if used - set(NAMES):
            name = next(p.name for p, _ in chosen if set(p.inputs) - set(NAMES))
            raise BadRequest(f"pattern {name} reads {', '.join(sorted(used - set(NAMES)))}; detect carries "
                             f"{', '.join(NAMES)}", field="patterns")
        data = args.require([c for c in NAMES if c in used])
        n = args.length
        if sum(n * weight(p) + PATTERN_WORK for p, _ in chosen) > INLINE_WORK:
            return self._detect_in_thread(chosen, data, args.ts, n)
        return self._count(detect_grouped(chosen, data, args.ts), n, len(chosen))

    async def _detect_in_thread(self, chosen: Chosen, data: dict[str, np.ndarray], ts: np.ndarray | None,
                                n: int) -> DetectReply:
        return self._count(await self.run_in_thread(detect_grouped, chosen, data, ts), n, len(chosen))

    def _count(self, events: dict[str, Any], bars: int, patterns: int) -> DetectReply:
        counts = {name: len(group["index"]) for name, group in events.items()}
        total = sum(counts.values())
        self.detected += total
        return {"bars": bars, "patterns": patterns, "total": total, "counts": counts, "events": events}

    # -- live -------------------------------------------------------------------------------------------

    def on_bar(self, topic: str, body: Any) -> None:
        parsed = topics.parse(topic)
        if parsed.symbol is None or parsed.timeframe is None or not self.live_patterns:
            return
        bar = check_bar(body)
        key = (parsed.symbol, parsed.timeframe)
        series = self.series.get(key)
        if series is None:
            series = self.series[key] = _Series([p.stream(params) for p, params in self.live_patterns])
        if not bar["final"] or (series.last_ts is not None and bar["ts"] <= series.last_ts):
            return  # forming or stale: the bar rule of the live market state
        series.last_ts = bar["ts"]
        events = [e for stream in series.streams for e in stream.update(bar)]
        if not events:
            return
        self.detected += len(events)
        self.publish(topics.pattern(*key), {"symbol": key[0], "timeframe": key[1], "ts": bar["ts"],
                                            "events": [e.to_wire() for e in events]})
        if self.config.signals:
            for e in events:
                if e.strength >= self.config.signal_strength:
                    self.signals += 1
                    self.publish(topics.signal(key[0]), {
                        "symbol": key[0], "timeframe": key[1], "ts": bar["ts"],
                        "side": "buy" if e.direction == BULLISH else "sell",
                        "strength": round(min(1.0, e.strength / 200 if e.kind == "candlestick" else e.strength), 4),
                        "reason": f"{e.pattern} ({e.direction}, {e.kind})", "source": "patterns"})

    @op(NoArgs, reply=list[SeriesInfo], role="read", shard="*")
    def handle_series(self, args: NoArgs) -> list[SeriesInfo]:
        """Every series detected live: its last committed bar and how many patterns follow it."""
        return [{"symbol": s, "timeframe": tf, "last_ts": v.last_ts, "patterns": len(v.streams)}
                for (s, tf), v in self.series.items()]

    def health(self) -> dict[str, Any]:
        return {"technical_analysis": {"patterns_detected": self.detected, "signals_generated": self.signals,
                                       "chart_walks": jit.status()}}


def weight(pattern: Pattern) -> int:
    """A pattern's estimated work per bar, in units of about 10 ns (`INLINE_WORK`)."""
    if isinstance(pattern, Candlestick):
        return CANDLE_WEIGHT
    return CHART_WEIGHT if isinstance(pattern, ChartPattern) else OTHER_WEIGHT


def detect_grouped(chosen: Chosen, data: Mapping[str, np.ndarray], ts: np.ndarray | None) -> dict[str, Any]:
    """The events of each chosen pattern that fired, as columns in bar order (`ops.EventGroup`): ``index``,
    ``ts``, ``direction`` (+1 bullish, -1 bearish), ``strength``, and for other than candlesticks each
    event's ``points`` and ``details``, exactly as live events carry them. Candlesticks come straight from
    TA-Lib's arrays and chart patterns from their columns (`chart.Found`), with no object per event; chart
    patterns share one zigzag per parameter set."""
    out: dict[str, Any] = {}
    zigzags = Zigzags(data) if any(isinstance(p, ChartPattern) for p, _ in chosen) else None
    for pattern, params in chosen:
        if isinstance(pattern, Candlestick):
            index, signed = pattern.hits(data, params)
            group: dict[str, Any] = {"kind": pattern.kind, "index": index}
        elif isinstance(pattern, ChartPattern) and zigzags:
            columns = pattern.scan_with(zigzags, params)
            index = columns.index
            signed = np.where(columns.bullish, 1.0, -1.0) * columns.strength
            group = {"kind": pattern.kind, "index": index, "points": columns.points, "details": columns.details}
        else:
            found = pattern.detect(data, params)
            index = np.array([e.index for e in found], dtype=np.int64)
            signed = np.array([e.strength if e.direction == BULLISH else -e.strength for e in found])
            group = {"kind": pattern.kind, "index": index, "points": [[list(p) for p in e.points] for e in found],
                     "details": [e.details for e in found]}
        if not len(index):
            continue
        group.update(ts=None if ts is None else ts[index].astype(np.int64), direction=np.sign(signed).astype(np.int8),
                     strength=np.abs(signed))
        out[pattern.name] = group
    return out
