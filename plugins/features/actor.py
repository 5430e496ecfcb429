"""The ``features`` service: pipelines (create, fit, delete, list), batch extraction and transformation with
a cache, and live feature rows for every bar series.

Live: for each pipeline in ``[plugins.features] live`` and every series seen on ``bar.SYMBOL.TIMEFRAME``,
each committed bar (final, newer than the series' last) goes through the pipeline's stream and the row is
published on ``feature.SYMBOL.TIMEFRAME``. Not-final and stale bars are ignored, as the indicators service
does (docs/PROTOCOL.md section 4).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ml_processing.bus import topics
from ml_processing.sdk import Actor, BadRequest, MlpError, NotFound, Unavailable, get_logger
from ml_processing.sdk.args import text
from ml_processing.sdk.bars import FIELDS, check_bar, check_bars, read_columns

from . import pipeline as P
from . import transforms
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
#: Above this many rows a request is computed on the thread pool, off the event loop.
INLINE_ROWS = 20_000


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


@dataclass
class _Live:
    version: Version
    stream: P.PipelineStream
    last_ts: int | None = None
    last: dict[str, Any] | None = None  # the latest published row


class Features(Actor):
    """Ops: ``extractors``, ``pipelines``, ``create``, ``fit``, ``delete``, ``extract``, ``transform``,
    ``stream``, ``row``."""

    name = "features"

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
        # (symbol, timeframe) -> live entry (NAME: follows the latest version, or NAME@VERSION) -> state
        self.live: dict[tuple[str, str], dict[str, _Live]] = {}
        self.live_entries = [entry for entry in self.config.live if self.store.get(entry)]
        self.subscribe(topics.BAR + ".", self.on_bar)
        self.warmed = 0
        if self.live_entries and self.config.warm_from_market:
            self.spawn(self._warm_from_market(), "warm_from_market")
        log.info("pipelines_ready", pipelines=len(self.store.pipelines), versions=sum(1 for _ in self.store),
                 refused=len(self.store.refused))

    def cache_for(self) -> Any:
        cache = self.settings.cache
        return self.cache("features", cache.feature_cache_size, cache.feature_cache_ttl)

    # -- pipelines --------------------------------------------------------------------------------------

    def handle_extractors(self, args: dict[str, Any]) -> dict[str, Any]:
        """Every registered extractor and transform, with parameters."""
        return {"extractors": [e.describe() for e in self.registries.get("features", {}).values()],
                "transforms": [{"name": kind, "params": [p.describe() for p in transforms.PARAMS[kind]],
                                "doc": transforms.DOCS[kind]} for kind in transforms.KINDS],
                "nan_policies": list(P.NAN_POLICIES)}

    def handle_pipelines(self, args: dict[str, Any]) -> dict[str, Any]:
        """Every pipeline (or the one named ``pipeline``): its versions, steps, features, fitted state."""
        name = args.get("pipeline") or args.get("name")
        names = [self.store.get(name).name] if name else sorted(self.store.pipelines)
        return {"pipelines": [{"name": n, "declared": n in self.declared,
                               "latest": max(self.store.pipelines[n]),
                               "versions": [v.describe() for _, v in sorted(self.store.pipelines[n].items())]}
                              for n in names],
                "refused_files": self.store.refused}

    def handle_create(self, args: dict[str, Any]) -> dict[str, Any]:
        """``{name, steps, nan?, fill?, description?}``: a new version, or the latest if it is the same."""
        spec = {k: v for k, v in args.items() if k != "name"}
        version, new = self.store.create(args.get("name"), spec)
        return {**version.describe(), "pipeline": version.ref, "new": new}

    async def handle_fit(self, args: dict[str, Any]) -> dict[str, Any]:
        """Fit the transforms of ``pipeline`` (a version) on OHLCV columns (or on feature ``rows``): the
        fitted pipeline is the next version."""
        base = self.store.get(args.get("pipeline"), args.get("version"))
        if not base.compiled.needs_fit:
            raise BadRequest(f"pipeline {base.ref} has no transform to fit (standard, minmax or robust)",
                             field="pipeline")
        matrix = await self._matrix(base, args)
        fitted = (P.fit(base.compiled, matrix) if len(matrix) <= INLINE_ROWS
                  else await self.run_in_thread(P.fit, base.compiled, matrix))
        rows = int((~np.isnan(matrix).any(axis=1)).sum())
        version = self.store.add_fitted(base, fitted, rows)
        return {**version.describe(), "pipeline": version.ref, "fitted_from": base.ref, "rows": rows}

    def handle_delete(self, args: dict[str, Any]) -> dict[str, Any]:
        """Delete ``pipeline`` (every version) or one ``version``. A pipeline declared in plugins.toml is
        never deleted whole (it would come back at the next start); its last version neither."""
        version = self.store.get(args.get("pipeline"), args.get("version"))
        name = version.name
        whole = args.get("version") is None and "@" not in str(args.get("pipeline"))
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

    def _version(self, args: Mapping[str, Any]) -> Version:
        if "steps" in args:  # inline: a pipeline used once, never saved
            spec = {k: args[k] for k in ("steps", "nan", "fill") if k in args}
            compiled = P.compile_spec(spec, self.registries)
            return Version("inline", 0, compiled, None if compiled.needs_fit else [{} for _ in compiled.transforms],
                           "")
        return self.store.get(args.get("pipeline"), args.get("version"))

    async def _matrix(self, version: Version, args: Mapping[str, Any]) -> np.ndarray:
        """Raw features: extracted from the input columns, or the given feature ``rows``."""
        if "rows" in args:
            return self._rows(version, args["rows"])
        columns, n = read_columns(args, version.compiled.inputs, self.config.max_rows)
        return await self._extract(version, columns, n)

    async def _extract(self, version: Version, columns: dict[str, np.ndarray], n: int) -> np.ndarray:
        if n <= version.compiled.lookback:
            raise BadRequest(f"{n} bars; pipeline {version.ref} needs more than its lookback of "
                             f"{version.compiled.lookback} bars for a single complete row",
                             field=version.compiled.inputs[0])
        if n > INLINE_ROWS:
            return await self.run_in_thread(P.extract, version.compiled, columns)
        return P.extract(version.compiled, columns)

    def _rows(self, version: Version, rows: Any) -> np.ndarray:
        width = len(version.compiled.features)
        if isinstance(rows, np.ndarray):
            matrix = rows.astype(np.float64, copy=False)
        elif isinstance(rows, list):
            try:
                matrix = np.array([[np.nan if v is None else v for v in row] for row in rows], dtype=np.float64)
            except (TypeError, ValueError):
                raise BadRequest("'rows' must be a list of rows of numbers (null for missing)", field="rows") from None
        else:
            raise BadRequest(f"'rows' must be a list of rows, got {type(rows).__name__}", field="rows")
        if matrix.ndim == 1 and len(matrix) == width:
            matrix = matrix.reshape(1, width)
        if matrix.ndim != 2 or matrix.shape[1] != width:
            raise BadRequest(f"each row must have {width} values ({', '.join(version.compiled.features)}), got "
                             f"shape {list(matrix.shape)}", field="rows")
        if len(matrix) > self.config.max_rows:
            raise BadRequest(f"{len(matrix):,} rows; at most {self.config.max_rows:,}", field="rows")
        return matrix

    async def handle_extract(self, args: dict[str, Any]) -> dict[str, Any]:
        """OHLCV columns + ``pipeline`` (NAME, NAME@VERSION, or inline ``steps``) -> the feature matrix, its
        column names and the index of the first complete row. ``transform: true`` applies the fitted
        transforms (not the NaN policy) too."""
        version = self._version(args)
        apply = args.get("transform", False)
        if not isinstance(apply, bool):
            raise BadRequest("'transform' must be true or false", field="transform")
        columns, n = read_columns(args, version.compiled.inputs, self.config.max_rows)
        key = (version.ref, apply, P.digest(columns)) if version.number else None
        hit = self.cache.get(key) if key is not None else None
        if hit is not None:
            return {**hit, "cached": True}
        matrix = await self._extract(version, columns, n)
        if apply:
            matrix = P.transform(version.compiled, version.fitted, matrix)
        self.extracted += n
        result = {"pipeline": version.ref, "features": version.compiled.features, "rows": n,
                  "first_complete": P.first_complete(matrix), "values": matrix}
        if key is not None:
            self.cache.put(key, result)
        return {**result, "cached": False}

    async def handle_transform(self, args: dict[str, Any]) -> dict[str, Any]:
        """Feature ``rows`` (or OHLCV columns) + a fitted pipeline -> transformed rows under its NaN policy,
        with ``index``: which input rows they are."""
        version = self._version(args)
        matrix = await self._matrix(version, args)
        out, index = P.apply_nan_policy(version.compiled, P.transform(version.compiled, version.fitted, matrix))
        return {"pipeline": version.ref, "features": version.compiled.features, "values": out, "index": index,
                "dropped": int(len(matrix) - len(out))}

    # -- live -------------------------------------------------------------------------------------------

    def _state(self, symbol: str, timeframe: str, entry: str) -> _Live:
        """The live state of `entry` on a series. An entry naming no version follows the latest one: a newly
        fitted version (same steps) takes over the warm stream, new steps start a new one."""
        version = self.store.get(entry)
        per = self.live.setdefault((symbol, timeframe), {})
        state = per.get(entry)
        if state is not None and state.version is version:
            return state
        if state is None or state.version.compiled.spec != version.compiled.spec:
            state = per[entry] = _Live(version, P.PipelineStream(version.compiled, version.fitted))
        else:
            state.version, state.stream.fitted = version, version.fitted
        return state

    def _advance(self, symbol: str, timeframe: str, entry: str, bar: Mapping[str, Any]) -> dict[str, Any] | None:
        state = self._state(symbol, timeframe, entry)
        if not bar["final"] or (state.last_ts is not None and bar["ts"] <= state.last_ts):
            return None
        state.last_ts = bar["ts"]
        row = state.stream.update(bar)
        transformed = state.stream.transformed(row)
        state.last = {"symbol": symbol, "timeframe": timeframe, "ts": bar["ts"], "pipeline": state.version.ref,
                      "values": _nulls(row), "transformed": None if transformed is None else _nulls(transformed),
                      "complete": all(v == v for v in row)}
        return state.last

    def on_bar(self, topic: str, body: Any) -> None:
        parsed = topics.parse(topic)
        if parsed.symbol is None or parsed.timeframe is None or not self.live_entries:
            return
        bar = check_bar(body)
        out = topics.feature(parsed.symbol, parsed.timeframe)
        for entry in self.live_entries:
            row = self._advance(parsed.symbol, parsed.timeframe, entry, bar)
            if row is not None:
                self.publish(out, row)

    async def _warm_from_market(self) -> None:
        """Replay the bars the live market state holds (the ``indicators`` service, over the bus) through
        every live pipeline, so rows are complete from the first new bar after a restart, as indicators are.
        Without that service the streams warm up on new bars."""
        series = None
        for _ in range(50):  # services join the broker once every actor has started: wait for it, bounded
            try:
                series = await self.request("indicators", "series")
                break
            except Unavailable as exc:
                reason = exc.message
                await asyncio.sleep(0.1)
            except MlpError as exc:
                reason = exc.message
                break
        if series is None:
            log.info("features_not_warmed", reason=reason)
            return
        for item in series:
            symbol, timeframe = item["symbol"], item["timeframe"]
            if (symbol, timeframe) in self.live:
                continue  # bars already arrived on the topic: those streams are live
            try:
                held = await self.request("indicators", "bars", {"symbol": symbol, "timeframe": timeframe})
            except MlpError as exc:
                log.warning("features_warm_failed", symbol=symbol, timeframe=timeframe, error=exc.message)
                continue
            columns = {name: held[name].tolist() for name in ("ts", *FIELDS)}
            for i in range(len(columns["ts"])):
                bar = {name: values[i] for name, values in columns.items()} | {"final": True}
                for entry in self.live_entries:
                    self._advance(symbol, timeframe, entry, bar)
            self.warmed += 1
        log.info("features_warmed", series=self.warmed)

    def handle_stream(self, args: dict[str, Any]) -> dict[str, Any]:
        """``{pipeline, symbol, timeframe, bars: [...]}``: push bars through the live state of that series
        and pipeline version; one row per committed bar."""
        version = self._version(args)
        if not version.number:
            raise BadRequest("streaming needs a saved pipeline, not inline steps", field="pipeline")
        symbol, timeframe = text(args, "symbol"), text(args, "timeframe")
        topics.bar(symbol, timeframe)  # validates both
        checked = check_bars(args.get("bars"), self.config.max_rows)
        rows = [row for bar in checked if (row := self._advance(symbol, timeframe, version.ref, bar)) is not None]
        return {"pipeline": version.ref, "features": version.compiled.features, "rows": rows}

    def handle_row(self, args: dict[str, Any]) -> dict[str, Any]:
        """The latest live row of ``symbol``/``timeframe`` for ``pipeline`` (default: the first live one)."""
        symbol, timeframe = text(args, "symbol"), text(args, "timeframe")
        per = self.live.get((symbol, timeframe))
        if not per:
            raise NotFound(f"no live features for {symbol} {timeframe} yet", field="symbol")
        entry = args.get("pipeline") or next(iter(per))
        state = per.get(entry)
        if state is None or state.last is None:
            raise NotFound(f"no live rows of {entry!r} for {symbol} {timeframe} (live: {', '.join(per)})",
                           field="pipeline")
        return {**state.last, "features": state.version.compiled.features}

    # -- health -----------------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        return {"ml_status": {"feature_pipelines": len(self.store.pipelines)}}

    def metrics(self) -> dict[str, Any]:
        return {"features": {"pipelines": len(self.store.pipelines), "versions": sum(1 for _ in self.store),
                             "rows_extracted": self.extracted, "live_series": len(self.live),
                             "series_warmed_from_market": self.warmed,
                             "refused_files": len(self.store.refused)}}


def _nulls(row: list[float]) -> list[float | None]:
    return [None if v != v else v for v in row]

