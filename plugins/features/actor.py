"""The ``features`` service: pipelines (create, fit, delete, list), batch extraction and transformation with
a cache, and live feature rows for every bar series.

Live: for each pipeline in ``[plugins.features] live`` and every series seen on ``bar.SYMBOL.TIMEFRAME``,
each committed bar (final, newer than the series' last) goes through the pipeline's stream and the row is
published on ``feature.SYMBOL.TIMEFRAME``. Not-final and stale bars are ignored, as the indicators service
does (docs/PROTOCOL.md section 4).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ml_processing.bus import topics
from ml_processing.sdk import Actor, BadRequest, MlpError, NoArgs, TooLarge, get_logger, op
from ml_processing.sdk.bars import check_bar
from ml_processing.sdk.services.features import (
    CreateArgs,
    DeleteArgs,
    DeleteReply,
    ExtractArgs,
    ExtractReply,
    FitArgs,
    FitReply,
    PipelineRequest,
    PipelinesArgs,
    PipelinesReply,
    TransformArgs,
    TransformReply,
    VersionReply,
)
from ml_processing.sdk.services.indicators import Indicators
from ml_processing.sdk.services.indicators import columns as held_columns

from . import pipeline as P
from . import transforms
from .declarations import ExtractorsReply, RowArgs, RowReply, StreamArgs, StreamReply
from .live import LiveRows
from .store import Store, Version

log = get_logger(__name__)

#: The built-in pipeline behind the default models: exactly these 4 features (docs/FEATURES.md).
DEFAULT_SPEC: dict[str, Any] = {
    "description": "1-bar log return, 20-bar volatility, RSI(14) and the 20-bar z-score of volume, standardised",
    "steps": [{"feature": "log_return", "params": {"k": 1}},
              {"feature": "volatility", "params": {"window": 20}},
              {"indicator": "RSI", "params": {"timeperiod": 14}},
              {"feature": "zscore", "params": {"window": 20}, "inputs": ["volume"]},
              {"transform": "standard"}],
    "nan": "drop",
}
#: Above this many cells (rows x extract steps, or rows x features) a request's arithmetic runs on the
#: thread pool, off the event loop: about 1 ms of numpy and TA-Lib at the measured 40-80 ns per cell.
INLINE_CELLS = 20_000


@dataclass(frozen=True)
class FeaturesConfig:
    """``[plugins.features]``."""

    pipelines: dict[str, Any] = field(default_factory=dict)  # [plugins.features.pipelines.NAME] specs
    live: tuple[str, ...] = ("default",)  # pipelines (NAME or NAME@VERSION) run on every bar series
    max_rows: int = 1_000_000  # rows per extract/transform/fit request
    directory: str = "features"  # under [service] data_dir, beside models/
    warm_from_market: bool = True  # at start, replay the bars the indicators service holds through live pipelines

    def __post_init__(self) -> None:
        if not 1 <= self.max_rows <= 10_000_000:
            raise ValueError("max_rows: must be between 1 and 10,000,000")
        for name, spec in self.pipelines.items():
            if not isinstance(spec, Mapping):
                raise ValueError(f"pipelines.{name}: must be a table with 'steps'")


class Features(Actor):
    """Pipelines (create, fit, delete, list), batch extraction and transformation with a cache, and live
    feature rows for every bar series. Its ops are declared in `ml_processing.sdk.services.features` (those
    other plugins call) and `.declarations`."""

    name = "features"
    #: At start the live pipelines are warmed from the market state the indicators service holds.
    needs = ("indicators",)

    async def on_start(self) -> None:
        self.store = Store(self.ctx.data_dir / self.config.directory, self.registries)
        loaded = self.store.load()
        self.declared = {"default": DEFAULT_SPEC, **self.config.pipelines}
        for name, spec in self.declared.items():
            version, new = self.store.create(name, spec)
            if new and loaded:
                log.info("declared_pipeline_changed", pipeline=version.ref)
        self.cache = self.cache_for()
        self.extracted = 0
        self.live = LiveRows(self.store)
        self.live_entries = [entry for entry in self.config.live if self.store.get(entry)]
        self.subscribe(topics.BAR + ".", self.on_bar)
        self.warmed = 0
        if self.live_entries and self.config.warm_from_market and self.ctx.primary:
            self.spawn(self._warm_from_market(), "warm_from_market")
        log.info("pipelines_ready", pipelines=len(self.store.pipelines), versions=sum(1 for _ in self.store),
                 refused=len(self.store.refused))

    def cache_for(self) -> Any:
        cache = self.settings.cache
        return self.cache("features", cache.feature_cache_size, cache.feature_cache_ttl)

    # -- pipelines --------------------------------------------------------------------------------------

    @op(NoArgs, reply=ExtractorsReply, role="read")
    def handle_extractors(self, args: NoArgs) -> ExtractorsReply:
        """Every registered feature extractor and transform, with their parameters, and the NaN policies."""
        return {"extractors": [e.describe() for e in self.registries.get("features", {}).values()],
                "transforms": [{"name": kind, "params": [p.describe() for p in transforms.PARAMS[kind]],
                                "doc": transforms.DOCS[kind]} for kind in transforms.KINDS],
                "nan_policies": list(P.NAN_POLICIES)}

    @op(PipelinesArgs, reply=PipelinesReply, role="read")
    def handle_pipelines(self, args: PipelinesArgs) -> PipelinesReply:
        """Every pipeline (or `pipeline`): versions, steps, features, lookback, fitted; and refused files."""
        names = [self.store.get(args.pipeline).name] if args.pipeline else sorted(self.store.pipelines)
        return {"pipelines": [{"name": n, "declared": n in self.declared,
                               "latest": max(self.store.pipelines[n]),
                               "versions": [v.describe() for _, v in sorted(self.store.pipelines[n].items())]}
                              for n in names],
                "refused_files": self.store.refused}

    @op(CreateArgs, reply=VersionReply, role="admin")
    def handle_create(self, args: CreateArgs) -> VersionReply:
        """A pipeline version from `steps`; the latest version when its spec is the same (`new`: false)."""
        version, new = self.store.create(args.name, args.spec())
        return {**version.describe(), "pipeline": version.ref, "new": new}

    @op(FitArgs, reply=FitReply, role="admin")
    async def handle_fit(self, args: FitArgs) -> FitReply:
        """Fit the transforms of `pipeline` on OHLCV columns (or feature `rows`): the fitted one is a new version."""
        base = self.store.get(args.pipeline, args.version)
        if not base.compiled.needs_fit:
            raise BadRequest(f"pipeline {base.ref} has no transform to fit (standard, minmax or robust)",
                             field="pipeline")
        matrix = await self._matrix(base, args)
        fitted, rows = await self.run_in_thread(_fit, base.compiled, matrix)  # scikit-learn: always off the loop
        version = self.store.add_fitted(base, fitted, rows)
        return {**version.describe(), "pipeline": version.ref, "fitted_from": base.ref, "rows": rows}

    @op(DeleteArgs, reply=DeleteReply, role="admin")
    def handle_delete(self, args: DeleteArgs) -> DeleteReply:
        """Delete `pipeline` (every version) or one version; never a declared pipeline's last, nor one run live."""
        version = self.store.get(args.pipeline, args.version)
        name = version.name
        whole = args.version is None and "@" not in args.pipeline
        remaining = len(self.store.pipelines[name]) - (len(self.store.pipelines[name]) if whole else 1)
        if name in self.declared and remaining == 0:
            raise BadRequest(f"pipeline {name!r} is declared in plugins.toml (or built in): delete single "
                             "versions, not the last one", field="pipeline")
        in_use = [e for e in self.live_entries if e.split("@")[0] == name and (whole or e == version.ref)]
        if in_use:
            raise BadRequest(f"{in_use[0]} is computed live ([plugins.features] live)", field="pipeline")
        deleted = self.store.delete(name, None if whole else version.number)
        return {"pipeline": name, "deleted_versions": deleted}

    # -- batch ------------------------------------------------------------------------------------------

    def _version(self, args: PipelineRequest) -> Version:
        if args.steps is not None:  # inline: a pipeline used once, never saved
            spec = {"steps": args.steps, "nan": args.nan or "drop", "fill": 0.0 if args.fill is None else args.fill}
            compiled = P.compile_spec(spec, self.registries)
            return Version("inline", 0, compiled, None if compiled.needs_fit else [{} for _ in compiled.transforms],
                           "")
        return self.store.get(args.pipeline, args.version)

    def _columns(self, version: Version, args: PipelineRequest | FitArgs) -> dict[str, np.ndarray]:
        """The input columns `version` reads, enough of them for one complete row."""
        columns = args.require(version.compiled.inputs)
        n = args.length
        if n > self.config.max_rows:
            raise TooLarge(f"{n:,} rows; at most {self.config.max_rows:,} per request ([plugins.features] "
                           "max_rows)", field=version.compiled.inputs[0])
        if n <= version.compiled.lookback:
            raise BadRequest(f"{n} bars; pipeline {version.ref} needs more than its lookback of "
                             f"{version.compiled.lookback} bars for a single complete row",
                             field=version.compiled.inputs[0])
        return columns

    async def _off_loop(self, cells: int, fn: Any, *args: Any) -> Any:
        """`fn(*args)`: inline when small, on the thread pool past `INLINE_CELLS`."""
        if cells <= INLINE_CELLS:
            return fn(*args)
        return await self.run_in_thread(fn, *args)

    def _rows(self, version: Version, rows: np.ndarray) -> np.ndarray:
        """Feature rows, as wide as the pipeline's features."""
        rows, width = np.asarray(rows), len(version.compiled.features)
        if rows.shape[1] != width:
            raise BadRequest(f"each row must have {width} values ({', '.join(version.compiled.features)}), "
                             f"got {rows.shape[1]}", field="rows")
        if len(rows) > self.config.max_rows:
            raise TooLarge(f"{len(rows):,} rows; at most {self.config.max_rows:,}", field="rows")
        return rows

    async def _matrix(self, version: Version, args: TransformArgs | FitArgs) -> np.ndarray:
        """Raw features: the given feature ``rows``, or extracted from the input columns."""
        if args.rows is not None:
            return self._rows(version, args.rows)
        columns = self._columns(version, args)
        matrix: np.ndarray = await self._off_loop(args.length * len(version.compiled.extracts), P.extract,
                                                  version.compiled, columns)
        return matrix

    @op(ExtractArgs, reply=ExtractReply, role="compute", spread=True)
    async def handle_extract(self, args: ExtractArgs) -> ExtractReply:
        """The feature matrix `values` (null for NaN), its `features`, `first_complete` row and `cached`."""
        version = self._version(args)
        columns = self._columns(version, args)
        n = args.length
        key = None
        if version.number:
            key = (version.ref, args.transform, await self._off_loop(n * len(columns), P.digest, columns))
            hit = self.cache.get(key)
            if hit is not None:
                return {**hit, "cached": True}
        matrix, first = await self._off_loop(n * max(len(version.compiled.extracts), len(version.compiled.features)),
                                             _extract, version, columns, args.transform)
        self.extracted += n
        result: ExtractReply = {"pipeline": version.ref, "features": version.compiled.features, "rows": n,
                                "first_complete": first, "values": matrix, "cached": False}
        if key is not None:
            self.cache.put(key, result)
        return result

    @op(TransformArgs, reply=TransformReply, role="compute", spread=True)
    async def handle_transform(self, args: TransformArgs) -> TransformReply:
        """Rows through a fitted pipeline's transforms under its NaN policy; `index` lists the rows kept."""
        version = self._version(args)
        rows = None if args.rows is None else self._rows(version, args.rows)
        if version.compiled.transforms and version.fitted is None:  # before any extraction
            raise BadRequest("this pipeline version was never fitted: fit it first (POST /api/v1/features/fit)",
                             field="pipeline")
        matrix = rows if rows is not None else await self._matrix(version, args)
        out, index = await self._off_loop(matrix.size, _transformed, version, matrix)
        return {"pipeline": version.ref, "features": version.compiled.features, "values": out, "index": index,
                "dropped": int(len(matrix) - len(out))}

    # -- live -------------------------------------------------------------------------------------------

    def on_bar(self, topic: str, body: Any) -> None:
        parsed = topics.parse(topic)
        if parsed.symbol is None or parsed.timeframe is None or not self.live_entries:
            return
        bar = check_bar(body)
        out = topics.feature(parsed.symbol, parsed.timeframe)
        for entry in self.live_entries:
            row = self.live.advance(parsed.symbol, parsed.timeframe, entry, bar)
            if row is not None:
                self.publish(out, row)

    # -- a symbol's streams moving between processes (`ml_processing.core.shards`) ------------------------

    def shard_symbols(self) -> set[str]:
        return {symbol for symbol, _ in self.live.series}

    def shard_state(self, symbols: Sequence[str]) -> dict[str, list[str]]:
        """The timeframes of each symbol's streams: the next owner warms them from the market series."""
        wanted = set(symbols)
        out: dict[str, list[str]] = {}
        for symbol, timeframe in self.live.series:
            if symbol in wanted:
                out.setdefault(symbol, []).append(timeframe)
        return out

    def shard_drop(self, symbols: Sequence[str]) -> None:
        gone = set(symbols)
        for key in [k for k in self.live.series if k[0] in gone]:
            del self.live.series[key]

    async def shard_load(self, states: Mapping[str, Any]) -> None:
        """The streams of gained symbols warm from their market series, which moved with them."""
        self.shard_drop(list(states))
        pairs = [(symbol, timeframe) for symbol, timeframes in states.items() for timeframe in timeframes or ()]
        if pairs and self.live_entries and self.config.warm_from_market:
            self.spawn(self._warm_from_market(pairs), "warm_from_market", for_message=True)

    async def _warm_from_market(self, pairs: Sequence[tuple[str, str]] | None = None) -> None:
        """Replay the bars the live market state holds (the ``indicators`` service) through every live
        pipeline, so rows are complete from the first new bar after a restart, as indicators are. Without
        that service the streams warm up on new bars."""
        market = Indicators(self.request)
        if pairs is None:
            try:
                pairs = [(item["symbol"], item["timeframe"]) for item in await market.series()]
            except MlpError as exc:  # the indicators plugin is disabled, or runs elsewhere and is not there yet
                log.info("features_not_warmed", reason=exc.message)
                return
        for symbol, timeframe in pairs:
            if (symbol, timeframe) in self.live:
                continue  # bars already arrived on the topic: those streams are live
            try:
                held = await market.bars(symbol, timeframe)
            except MlpError as exc:
                log.warning("features_warm_failed", symbol=symbol, timeframe=timeframe, error=exc.message)
                continue
            columns = {name: values.tolist() for name, values in held_columns(held).items()}
            bars = ({**{name: values[i] for name, values in columns.items()}, "final": True}
                    for i in range(len(columns["ts"])))
            await self.live.advance_all(symbol, timeframe, self.live_entries, bars)
            self.warmed += 1
        log.info("features_warmed", series=self.warmed)

    @op(StreamArgs, reply=StreamReply, role="admin", shard="symbol")
    async def handle_stream(self, args: StreamArgs) -> StreamReply:
        """Bars through the live state of a series and pipeline: one row per committed bar."""
        version = self.store.get(args.pipeline, args.version)
        if len(args.bars) > self.config.max_rows:
            raise TooLarge(f"{len(args.bars):,} bars; at most {self.config.max_rows:,} per request", field="bars")
        rows = await self.live.advance_all(args.symbol, args.timeframe, [version.ref],
                                           (bar.row() for bar in args.bars))
        return {"pipeline": version.ref, "features": version.compiled.features, "rows": rows}

    @op(RowArgs, reply=RowReply, role="read", shard="symbol")
    def handle_row(self, args: RowArgs) -> RowReply:
        """The latest live row of a series, for `pipeline` (default: its first live one)."""
        return self.live.latest(args.symbol, args.timeframe, args.pipeline)

    # -- health -----------------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        return {"ml_status": {"feature_pipelines": len(self.store.pipelines)}}

    def metrics(self) -> dict[str, Any]:
        return {"features": {"pipelines": len(self.store.pipelines), "versions": sum(1 for _ in self.store),
                             "rows_extracted": self.extracted, "live_series": len(self.live),
                             "series_warmed_from_market": self.warmed,
                             "refused_files": len(self.store.refused)}}


def _extract(version: Version, columns: Mapping[str, np.ndarray], apply: bool) -> tuple[np.ndarray, int | None]:
    """The feature matrix (through the fitted transforms when `apply`) and its first complete row."""
    matrix = P.extract(version.compiled, columns)
    if apply:
        matrix = P.transform(version.compiled, version.fitted, matrix)
    return matrix, P.first_complete(matrix)


def _transformed(version: Version, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return P.apply_nan_policy(version.compiled, P.transform(version.compiled, version.fitted, matrix))


def _fit(compiled: P.Compiled, matrix: np.ndarray) -> tuple[list[dict[str, Any]], int]:
    """The fitted transforms and the number of complete rows they were fitted on."""
    return P.fit(compiled, matrix), int((~np.isnan(matrix).any(axis=1)).sum())
