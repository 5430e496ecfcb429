"""The ``indicators`` service: indicator metadata, batch computation, and the live market state.

Bars arrive on ``bar.SYMBOL.TIMEFRAME`` from any publisher (or ``POST /api/v1/market/bars``); each committed
bar advances the stream state of the series' live indicators and publishes ``indicator.SYMBOL.TIMEFRAME``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ml_processing.bus import topics
from ml_processing.sdk import Actor, BadRequest, CodecError, NotFound, get_logger
from ml_processing.sdk.args import text
from ml_processing.sdk.bars import FIELDS, check_bar, check_bars

from . import persist
from .compute import MAX_BARS, compute
from .market import Live, Series
from .timeframes import Resampler, alignment, analyse, to_ms

log = get_logger(__name__)

#: Above this many (bars x indicators) a request is computed on the thread pool, off the event loop.
INLINE_WORK = 200_000


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
        self.series: dict[tuple[str, str], Series] = {}
        self.resamplers: dict[tuple[str, str], list[Resampler]] = {}  # base series -> its higher timeframes
        self.derived: set[tuple[str, str]] = set()  # series fed by resampling (never resampled again)
        self.defaults = [Live.parse(spec, self.registry) for spec in self.config.live]
        self.state_path = self.ctx.data_dir / self.config.state_file
        if self.config.persist:
            try:
                for series, derived in persist.load(self.state_path, self.registry, self.config.buffer):
                    self.series[(series.symbol, series.timeframe)] = series
                    if derived:
                        self.derived.add((series.symbol, series.timeframe))
            except (CodecError, KeyError, TypeError, ValueError) as exc:
                log.error("market_state_unreadable", path=str(self.state_path), error=str(exc))
            if self.series:
                log.info("market_state_loaded", path=str(self.state_path), series=len(self.series))
        self.subscribe(topics.BAR + ".", self.on_bar)

    async def on_stop(self) -> None:
        if self.config.persist and self.series:
            count = persist.save(self.state_path, self.series.values(), self.derived)
            log.info("market_state_saved", path=str(self.state_path), series=count)

    @property
    def registry(self) -> Any:
        return self.registries.get("indicators", {})

    # -- batch ------------------------------------------------------------------------------------------

    def handle_list(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        group = args.get("group")
        return [i.describe() for i in self.registry.values() if group is None or i.group == group]

    def handle_compute(self, args: dict[str, Any]) -> Any:
        close, wanted = args.get("close"), args.get("indicators")
        bars = len(close) if isinstance(close, (list, np.ndarray)) else 0
        if bars * (len(wanted) if isinstance(wanted, list) else 1) <= INLINE_WORK:
            return self._count(compute(args, self.registry))
        return self._compute_in_thread(args)

    async def _compute_in_thread(self, args: dict[str, Any]) -> dict[str, Any]:
        return self._count(await self.run_in_thread(compute, args, self.registry))

    def _count(self, result: dict[str, Any]) -> dict[str, Any]:
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
            series = self.series[key] = Series(symbol, timeframe, self.config.buffer)
            for live in self.defaults:
                series.add(live)
        return series

    def _commit(self, series: Series, bar: dict[str, Any]) -> bool:
        """Apply one checked bar to a series; publish and resample what it commits."""
        update = series.on_bar(bar)
        if update is None:
            return False
        self.publish(topics.indicator(series.symbol, series.timeframe), update)
        self.computed += len(update["values"])
        key = (series.symbol, series.timeframe)
        if key in self.derived:
            return True
        resamplers = self.resamplers.get(key)
        if resamplers is None:
            resamplers = self.resamplers[key] = self._resamplers_for(series)
        for resampler in resamplers:
            target = self._series(series.symbol, resampler.target, create=True)
            self.derived.add((series.symbol, resampler.target))
            for higher in resampler.push(bar):
                self._commit(target, higher)
        return True

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

    def _apply(self, symbol: str, timeframe: str, bar: Any) -> bool:
        return self._commit(self._series(symbol, timeframe, create=True), check_bar(bar))

    def on_bar(self, topic: str, body: Any) -> None:
        parsed = topics.parse(topic)
        if parsed.symbol is None or parsed.timeframe is None:
            raise BadRequest(f"bar topic {topic!r} needs a symbol and a timeframe", field="topic")
        try:
            self._apply(parsed.symbol, parsed.timeframe, body)
        except BadRequest:
            self.rejected += 1
            raise

    def handle_ingest(self, args: dict[str, Any]) -> dict[str, Any]:
        """``{symbol, timeframe, bars: [{ts, open, high, low, close, volume, final?}, ...]}``."""
        symbol, timeframe = text(args, "symbol"), text(args, "timeframe")
        checked = check_bars(args.get("bars"), MAX_BARS)
        series = self._series(symbol, timeframe, create=True)
        before = dict(series.counts)
        for bar in checked:
            self._commit(series, bar)
        return {key: series.counts[key] - before[key] for key in series.counts} | {"last_ts": series.last_ts}

    def handle_state(self, args: dict[str, Any]) -> dict[str, Any]:
        """Latest values and warm flags; with ``peek`` (a bar) or a forming bar, its preview too."""
        series = self._series(text(args, "symbol"), text(args, "timeframe"), create=False)
        out = series.snapshot() | {"bars": series.ring.count, "counts": dict(series.counts)}
        peek = args.get("peek")
        bar = check_bar(peek) if peek is not None else series.forming
        if bar is not None:
            out["peek"] = {"ts": bar["ts"], "values": {k: (None if v != v else v) for k, v in series.peek(bar).items()}}
        return out

    def handle_timeframes(self, args: dict[str, Any]) -> dict[str, Any]:
        """Per timeframe of a symbol: trend, momentum, volatility regime, the values behind them; and how
        well the timeframes agree. ``timeframes`` is a comma-separated list (default: all tracked)."""
        symbol = text(args, "symbol")
        tracked = {tf: s for (sym, tf), s in self.series.items() if sym == symbol}
        if not tracked:
            raise NotFound(f"no market data for symbol {symbol!r}: publish bars on bar.{symbol}.TIMEFRAME or "
                           "POST /api/v1/market/bars", field="symbol")
        wanted = args.get("timeframes")
        if wanted is None:
            names = sorted(tracked, key=to_ms)
        elif isinstance(wanted, str):
            names = [tf.strip() for tf in wanted.split(",") if tf.strip()]
        else:
            raise BadRequest("'timeframes' must be a comma-separated string such as '5m,1h'", field="timeframes")
        missing = [tf for tf in names if tf not in tracked]
        if missing:
            raise NotFound(f"no {', '.join(missing)} data for {symbol} (tracked: {', '.join(sorted(tracked, key=to_ms))})",
                           field="timeframes")
        per = {tf: analyse(tracked[tf].ring.rows()) for tf in names}
        return {"symbol": symbol, "timeframes": per, "alignment": alignment(per)}

    def handle_series(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"symbol": s.symbol, "timeframe": s.timeframe, "bars": s.ring.count, "last_ts": s.last_ts,
                 "indicators": sorted(s.live)} for s in self.series.values()]

    def handle_bars(self, args: dict[str, Any]) -> dict[str, Any]:
        """The committed bars held for ``symbol``/``timeframe`` (oldest first, at most ``limit``) as columns:
        what another capability replays to warm its own streams from the live market state."""
        series = self._series(text(args, "symbol"), text(args, "timeframe"), create=False)
        limit = args.get("limit", series.ring.count)
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise BadRequest("'limit' must be a non-negative integer", field="limit")
        rows = series.ring.rows()[-limit:] if limit else series.ring.rows()[:0]
        return {"symbol": series.symbol, "timeframe": series.timeframe, "ts": rows[:, 0].astype(np.int64),
                **{name: rows[:, i] for i, name in enumerate(FIELDS, 1)}}

    def handle_subscribe(self, args: dict[str, Any]) -> dict[str, Any]:
        """Add live indicators to one series, or (without ``symbol``) to every series and new ones."""
        specs = args.get("indicators")
        if not isinstance(specs, list) or not specs:
            raise BadRequest("'indicators' must be a non-empty list", field="indicators")
        lives = [Live.parse(spec, self.registry) for spec in specs]
        targets = self._targets(args)
        for series in targets:
            for live in lives:
                series.add(live)
        if "symbol" not in args:
            known = {live.key for live in self.defaults}
            self.defaults.extend(live for live in lives if live.key not in known)
        return {"series": len(targets), "indicators": [live.key for live in lives]}

    def handle_unsubscribe(self, args: dict[str, Any]) -> dict[str, Any]:
        keys = args.get("indicators")
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise BadRequest("'indicators' must be a list of indicator keys such as 'SMA_20'", field="indicators")
        removed = sum(series.remove(key) for series in self._targets(args) for key in keys)
        if "symbol" not in args:
            self.defaults = [live for live in self.defaults if live.key not in keys]
        return {"removed": removed}

    def _targets(self, args: Mapping[str, Any]) -> list[Series]:
        if "symbol" not in args:
            return list(self.series.values())
        return [self._series(text(args, "symbol"), text(args, "timeframe"), create=True)]

    def health(self) -> dict[str, Any]:
        return {"technical_analysis": {"indicators_calculated": self.computed}}

