"""The ``indicators`` service: indicator metadata, batch computation, and the live market state.

Bars arrive on ``bar.SYMBOL.TIMEFRAME`` from any publisher (or ``POST /api/v1/market/bars``); each committed
bar advances the stream state of the series' live indicators and publishes ``indicator.SYMBOL.TIMEFRAME``.

The event loop is never held for long: a batch ``compute`` above `INLINE_WORK` runs on the thread pool; an
``ingest`` checks and commits its bars in slices of about `SLICE_BUDGET_S`, yielding to the loop between
them, one ingest at a time per series (bars of that series arriving on pub/sub meanwhile wait their turn,
in order); the saved state loads one series at a time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ml_processing.bus import topics
from ml_processing.sdk import Actor, BadRequest, CodecError, NoArgs, NotFound, get_logger, op
from ml_processing.sdk.bars import FIELDS, check_bar, check_bars
from ml_processing.sdk.services.indicators import BarsArgs, HeldBars, SeriesInfo
from ml_processing.sdk.timeframes import to_ms

from . import persist
from .compute import compute
from .market import Live, Series
from .ops import (
    ComputeArgs,
    ComputeReply,
    IndicatorInfo,
    IngestArgs,
    IngestReply,
    ListArgs,
    MarketState,
    StateArgs,
    SubscribeArgs,
    Subscribed,
    Target,
    TimeframeAnalysis,
    TimeframesArgs,
    UnsubscribeArgs,
    Unsubscribed,
)
from .timeframes import Resampler, alignment, analyse
from .turns import Turns

log = get_logger(__name__)

#: Above this many (bars x indicators) a request is computed on the thread pool, off the event loop.
INLINE_WORK = 200_000
#: An ingest yields to the event loop once it has held it about this long ...
SLICE_BUDGET_S = 0.002
#: ... for this many loop turns.
_TURNS = 8
#: Bars checked, or committed, between two looks at the clock.
_STEP = 64

Key = tuple[str, str]


@dataclass(frozen=True)
class IndicatorsConfig:
    """``[plugins.indicators]``."""

    buffer: int = 5000  # bars kept per (symbol, timeframe)
    live: tuple[str, ...] = ("SMA(timeperiod=20)", "EMA(timeperiod=20)", "RSI(timeperiod=14)",
                             "ATR(timeperiod=14)", "MACD", "BBANDS(timeperiod=20)")
    persist: bool = True  # save the market state at shutdown, load it at start
    state_file: str = "market/state.msgpack"  # under [service] data_dir
    timeframes: tuple[str, ...] = ("5m", "15m", "1h", "4h", "1d")  # every base series resamples into these

    def __post_init__(self) -> None:
        if not 10 <= self.buffer <= 1_000_000:
            raise ValueError("buffer: must be between 10 and 1,000,000 bars")
        for timeframe in self.timeframes:
            try:
                to_ms(timeframe)
            except BadRequest as exc:
                raise ValueError(f"timeframes: {exc.message}") from None


class Indicators(Actor):
    """Ops: ``list``, ``compute``, ``ingest``, ``state``, ``series``, ``bars``, ``timeframes``, ``subscribe``,
    ``unsubscribe``."""

    name = "indicators"

    async def on_start(self) -> None:
        self.computed = 0
        self.rejected = 0
        self.series: dict[Key, Series] = {}
        self.resamplers: dict[Key, list[Resampler]] = {}  # base series -> its higher timeframes
        self.derived: set[Key] = set()  # series fed by resampling (never resampled again)
        self.turns = Turns()  # one ingest at a time per series; live bars wait their turn
        self.routes: dict[str, _Route] = {}  # bar topic -> its series and update topic, once one came
        self.defaults = [Live.parse(spec, self.registry, "live") for spec in self.config.live]
        self.state_path = self.ctx.data_dir / self.config.state_file
        # The serve process saves and loads the market; a worker process gets its symbols' series handed
        # over (`shard_load`) and never writes the data directory.
        self.persist = self.config.persist and self.ctx.primary
        if self.persist:
            await self._load()
        self.subscribe_batch(topics.BAR + ".", self.on_bars)

    async def _load(self) -> None:
        try:
            for series, derived in persist.load(self.state_path, self.registry, self.config.buffer):
                self.series[(series.symbol, series.timeframe)] = series
                if derived:
                    self.derived.add((series.symbol, series.timeframe))
                await asyncio.sleep(0)  # one series at a time: the loop serves in between
        except (CodecError, KeyError, TypeError, ValueError) as exc:
            log.error("market_state_unreadable", path=str(self.state_path), error=str(exc))
        if self.series:
            log.info("market_state_loaded", path=str(self.state_path), series=len(self.series))

    async def on_stop(self) -> None:
        if self.persist and self.series:
            count = persist.save(self.state_path, self.series.values(), self.derived)
            log.info("market_state_saved", path=str(self.state_path), series=count)

    @property
    def registry(self) -> Any:
        return self.registries.get("indicators", {})

    async def on_sync(self) -> None:
        """Another process changed this service: nothing here is read from disk after the start (a symbol's
        series move with it, and the ops over every series reach every process), so nothing to reload."""

    # -- a symbol's series moving between processes (`ml_processing.core.shards`) -------------------------

    def shard_symbols(self) -> set[str]:
        return {symbol for symbol, _ in self.series}

    def shard_state(self, symbols: Sequence[str]) -> dict[str, Any]:
        wanted = set(symbols)
        out: dict[str, list[dict[str, Any]]] = {}
        for key, series in self.series.items():
            if key[0] in wanted:
                out.setdefault(key[0], []).append(persist.entry(series, key in self.derived))
        return out

    def shard_drop(self, symbols: Sequence[str]) -> None:
        gone = set(symbols)
        for key in [k for k in self.series if k[0] in gone]:
            del self.series[key]
            self.resamplers.pop(key, None)
            self.derived.discard(key)
        for topic in [t for t, route in self.routes.items() if route.series.symbol in gone]:
            del self.routes[topic]

    async def shard_load(self, states: Mapping[str, Any]) -> None:
        self.shard_drop(list(states))
        for entries in states.values():
            for saved in entries or ():
                series, derived = persist.rebuild(saved, self.registry, self.config.buffer)
                self.series[(series.symbol, series.timeframe)] = series
                if derived:
                    self.derived.add((series.symbol, series.timeframe))
                await asyncio.sleep(0)  # one series at a time: the loop serves in between

    # -- batch ------------------------------------------------------------------------------------------

    @op(ListArgs, reply=list[IndicatorInfo], role="read")
    def handle_list(self, args: ListArgs) -> list[IndicatorInfo]:
        """Every registered indicator (or one group's): inputs, parameters with ranges, outputs, lookback."""
        return [i.describe() for i in self.registry.values() if args.group is None or i.group == args.group]

    @op(ComputeArgs, reply=ComputeReply, role="compute", spread=True)
    def handle_compute(self, args: ComputeArgs) -> Any:
        """Compute indicators over columns of bars (large requests on the thread pool)."""
        if args.length * len(args.indicators) <= INLINE_WORK:
            return self._count(compute(args, self.registry))
        return self._compute_in_thread(args)

    async def _compute_in_thread(self, args: ComputeArgs) -> ComputeReply:
        return self._count(await self.run_in_thread(compute, args, self.registry))

    def _count(self, result: ComputeReply) -> ComputeReply:
        self.computed += len(result["values"])
        return result

    # -- live -------------------------------------------------------------------------------------------

    def _series(self, symbol: str, timeframe: str, *, create: bool) -> Series:
        key = (symbol, timeframe)
        series = self.series.get(key)
        if series is None:
            if not create:
                raise NotFound(f"no bars for {symbol} {timeframe} yet", field="symbol")
            topics.bar(symbol, timeframe)  # validates both names
            to_ms(timeframe)  # and the timeframe's grammar, before anything is kept
            series = self.series[key] = Series(symbol, timeframe, self.config.buffer)
            for live in self.defaults:
                series.add(live)
        return series

    def _commit(self, series: Series, bar: dict[str, Any], topic: str | None = None) -> bool:
        """Apply one checked bar to a series; publish (on `topic`, its update topic) and resample what it
        commits."""
        update = series.on_bar(bar)
        if update is None:
            return False
        self.ctx.publish(topic or topics.indicator(series.symbol, series.timeframe), update)  # the bus verb itself
        self.computed += series.width
        key = (series.symbol, series.timeframe)
        if key not in self.derived:
            self._resample(series, key, bar)
        return True

    def _resample(self, series: Series, key: Key, bar: dict[str, Any]) -> None:
        """Push a bar just committed on a base series into its higher timeframes; commit what they close."""
        resamplers = self.resamplers.get(key)
        if resamplers is None:
            resamplers = self.resamplers[key] = self._resamplers_for(series)
        for resampler in resamplers:
            target = self._series(series.symbol, resampler.target, create=True)
            self.derived.add((series.symbol, resampler.target))
            for higher in resampler.push(bar):
                self._commit(target, higher)

    def _resamplers_for(self, series: Series) -> list[Resampler]:
        """The series' resamplers, primed with its held bars after the last committed higher bar (so a
        higher bar in progress at a restart is rebuilt, not restarted)."""
        base_ms = to_ms(series.timeframe)
        held = series.ring.rows()[:-1]  # the bar being committed now is pushed by the caller
        out = []
        for tf in self.config.timeframes:
            if to_ms(tf) <= base_ms or to_ms(tf) % base_ms:
                continue
            resampler = Resampler(series.timeframe, tf)
            target = self.series.get((series.symbol, tf))
            if target is not None and target.last_ts is not None:
                for row in held[held[:, 0] >= target.last_ts + resampler.target_ms]:
                    resampler.push({"ts": int(row[0]), **dict(zip(FIELDS, row[1:].tolist(), strict=True))})
            out.append(resampler)
        return out

    def on_bars(self, messages: Iterable[tuple[str, Any]]) -> None:
        """The bars of one socket drain, in arrival order: each committed bar's update is published (the
        bus sends the drain's updates in one burst)."""
        routes, turns, held, derived, resamplers = (self.routes, self.turns, self.turns.held, self.derived,
                                                    self.resamplers)
        publish = self.ctx.publish
        for topic, body in messages:
            route = routes.get(topic)
            key = _key_of(topic) if route is None else route.key
            try:
                bar = check_bar(body)
                if route is None:  # the first good bar of this topic: its series is made (or found) once
                    route = self._route(topic, key)
                if key in held:  # an ingest of this series runs: after it (and those before the bar)
                    turns.wait(key, bar)
                    continue
                # `_commit`, written out: the resampling is called only when the series has higher timeframes
                series = route.series
                update = series.on_bar(bar)
                if update is None:
                    continue
                publish(route.topic, update)
                self.computed += series.width
                if key not in derived and resamplers.get(key) != []:
                    self._resample(series, key, bar)
            except BadRequest:
                self.rejected += 1
                raise

    def _route(self, topic: str, key: Key) -> _Route:
        route = self.routes[topic] = _Route(self._series(*key, create=True), key, topics.indicator(*key))
        return route

    @op(IngestArgs, reply=IngestReply, role="admin", shard="symbol")
    async def handle_ingest(self, args: IngestArgs) -> IngestReply:
        """Ingest bars of one symbol/timeframe, oldest first, into the live market state."""
        key = (args.symbol, args.timeframe)
        async with self.turns.hold(key) as number:
            budget = _Budget()
            try:
                return await self._ingest(args, budget)
            finally:
                await self._commit_waiting(key, number, budget)

    async def _ingest(self, args: IngestArgs, budget: _Budget) -> IngestReply:
        checked: list[dict[str, Any]] = []  # every bar is checked before any is committed
        for start in range(0, args.count, _STEP):
            checked += check_bars(args.rows(start, start + _STEP), offset=start)
            await budget.spent()
        series = self._series(args.symbol, args.timeframe, create=True)
        before = dict(series.counts)
        for i, bar in enumerate(checked):
            self._commit(series, bar)
            if i % _STEP == 0:
                await budget.spent()
        return IngestReply(committed=series.counts["committed"] - before["committed"],
                           forming=series.counts["forming"] - before["forming"],
                           stale=series.counts["stale"] - before["stale"], last_ts=series.last_ts)

    async def _commit_waiting(self, key: Key, number: int, budget: _Budget) -> None:
        """Commit the bars of `key` that came on pub/sub during ingest `number` (before the next), in order."""
        while waiting := self.turns.due(key, number):
            series = self._series(*key, create=True)
            for i, bar in enumerate(waiting):
                self._commit(series, bar)
                if i % _STEP == 0:
                    await budget.spent()

    @op(StateArgs, reply=MarketState, role="read", shard="symbol")
    def handle_state(self, args: StateArgs) -> MarketState:
        """Latest indicator values and warm flags of a symbol/timeframe; the forming bar's (or ``peek``'s)
        preview too."""
        series = self._series(args.symbol, args.timeframe, create=False)
        out = MarketState(**series.snapshot(), bars=series.ring.count, counts=dict(series.counts))
        bar = series.forming
        if args.peek is not None:
            try:
                bar = check_bar(args.peek)
            except BadRequest as exc:
                raise BadRequest(f"peek: {exc.message}", field=f"peek.{exc.field}") from None
        if bar is not None:
            out["peek"] = {"ts": bar["ts"],
                           "values": {k: (None if v != v else v) for k, v in series.peek(bar).items()}}
        return out

    @op(TimeframesArgs, reply=TimeframeAnalysis, role="read", shard="symbol")
    def handle_timeframes(self, args: TimeframesArgs) -> TimeframeAnalysis:
        """Multi-timeframe analysis of a symbol: per timeframe trend, momentum, volatility regime and the
        values behind them; and how well the timeframes agree."""
        symbol = args.symbol
        tracked = {tf: s for (sym, tf), s in self.series.items() if sym == symbol}
        if not tracked:
            raise NotFound(f"no market data for symbol {symbol!r}: publish bars on bar.{symbol}.TIMEFRAME or "
                           "POST /api/v1/market/bars", field="symbol")
        if args.timeframes is None:
            names = sorted(tracked, key=to_ms)
        else:
            names = [tf.strip() for tf in args.timeframes.split(",") if tf.strip()]
            for tf in names:
                try:
                    to_ms(tf)
                except BadRequest as exc:
                    raise BadRequest(f"timeframes: {exc.message}", field="timeframes") from None
        missing = [tf for tf in names if tf not in tracked]
        if missing or not names:
            raise NotFound(f"no {', '.join(missing) or 'timeframe'} data for {symbol} "
                           f"(tracked: {', '.join(sorted(tracked, key=to_ms))})", field="timeframes")
        per = {tf: analyse(tracked[tf].ring.rows()) for tf in names}
        return TimeframeAnalysis(symbol=symbol, timeframes=per, alignment=alignment(per))

    @op(NoArgs, reply=list[SeriesInfo], role="read", shard="*")
    def handle_series(self, args: NoArgs) -> list[SeriesInfo]:
        """Tracked symbols and timeframes: bars held, last bar, live indicators."""
        return [SeriesInfo(symbol=s.symbol, timeframe=s.timeframe, bars=s.ring.count, last_ts=s.last_ts,
                           indicators=sorted(s.live)) for s in self.series.values()]

    @op(BarsArgs, reply=HeldBars, role="read", shard="symbol")
    def handle_bars(self, args: BarsArgs) -> HeldBars:
        """The committed bars held for a series (oldest first, the newest ``limit``) as columns: what another
        capability replays to warm its own streams from the live market state."""
        series = self._series(args.symbol, args.timeframe, create=False)
        rows = series.ring.rows(args.limit)
        return HeldBars(symbol=series.symbol, timeframe=series.timeframe, ts=rows[:, 0].astype(np.int64),
                        open=rows[:, 1], high=rows[:, 2], low=rows[:, 3], close=rows[:, 4], volume=rows[:, 5])

    @op(SubscribeArgs, reply=Subscribed, role="admin", shard="symbol")
    def handle_subscribe(self, args: SubscribeArgs) -> Subscribed:
        """Add live indicators to one series, or (without ``symbol``) to every series and new ones."""
        lives = [Live.parse(spec, self.registry, f"indicators[{i}]") for i, spec in enumerate(args.indicators)]
        targets = self._targets(args)
        for series in targets:
            for live in lives:
                series.add(live)
        if args.symbol is None:
            known = {live.key for live in self.defaults}
            self.defaults.extend(live for live in lives if live.key not in known)
        return Subscribed(series=len(targets), indicators=[live.key for live in lives])

    @op(UnsubscribeArgs, reply=Unsubscribed, role="admin", shard="symbol")
    def handle_unsubscribe(self, args: UnsubscribeArgs) -> Unsubscribed:
        """Remove live indicators (by key, such as ``SMA_20``) from one series, or from every series."""
        removed = sum(series.remove(key) for series in self._targets(args) for key in args.indicators)
        if args.symbol is None:
            self.defaults = [live for live in self.defaults if live.key not in args.indicators]
        return Unsubscribed(removed=removed)

    def _targets(self, args: Target) -> list[Series]:
        if args.symbol is None or args.timeframe is None:
            return list(self.series.values())
        return [self._series(args.symbol, args.timeframe, create=True)]

    def health(self) -> dict[str, Any]:
        return {"technical_analysis": {"indicators_calculated": self.computed}}

    def counters(self) -> dict[str, float]:
        """Bars of every live series, for Prometheus: committed, still forming, refused as stale."""
        totals = {"bars_committed": 0.0, "bars_forming": 0.0, "bars_stale": 0.0}
        for series in self.series.values():
            for kind, count in series.counts.items():
                totals[f"bars_{kind}"] += count
        return totals


def _key_of(topic: str) -> Key:
    """``(symbol, timeframe)`` of a bar topic; `BadRequest` when it lacks either."""
    parsed = topics.parse(topic)
    if parsed.symbol is None or parsed.timeframe is None:
        raise BadRequest(f"bar topic {topic!r} needs a symbol and a timeframe", field="topic")
    return parsed.symbol, parsed.timeframe


@dataclass(frozen=True, slots=True)
class _Route:
    """Where the bars of one topic go: the series, its key, the topic of its updates."""

    series: Series
    key: Key
    topic: str


class _Budget:
    """How long the current slice has held the event loop. `spent` yields once it is over budget, for a few
    loop turns: a waiting request takes several (read, route to the broker, answer, write), and one turn
    per slice would add a slice to each of them."""

    def __init__(self) -> None:
        self.deadline = time.perf_counter() + SLICE_BUDGET_S

    async def spent(self) -> None:
        if time.perf_counter() >= self.deadline:
            for _ in range(_TURNS):
                await asyncio.sleep(0)
            self.deadline = time.perf_counter() + SLICE_BUDGET_S
