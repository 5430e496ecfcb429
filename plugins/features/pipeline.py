"""A feature pipeline: its spec (what a user writes), its compiled form, and how it runs.

A spec is a map::

    {"steps": [
        {"indicator": "RSI", "params": {"timeperiod": 14}},          # any registered indicator
        {"feature": "log_return", "params": {"k": 1}},                # any registered extractor
        {"feature": "lag", "params": {"k": 1}, "inputs": ["RSI_14"]}, # inputs: OHLCV, ts or earlier columns
        {"feature": "zscore", "inputs": ["volume"], "as": "volume_z", "output": true},
        {"transform": "standard"},                                    # fitted; "columns" limits it
        {"transform": "clip", "params": {"lower": -4, "upper": 4}}],
     "nan": "drop", "fill": 0.0}

Extract steps add columns, named as docs/FEATURES.md says (``as`` renames a step's outputs; ``"output":
false`` keeps a column as an input of later steps only). The features are the visible columns in step
order. Transform steps run after extraction, in order, on the columns they name (default all).

NaN policy (``nan``), applied after the transforms: ``drop`` leaves out rows with any NaN (the warm-up
rows, mostly), ``fill`` replaces NaN with ``fill``, ``reject`` refuses input that yields a NaN.

The same compiled pipeline runs in batch (`extract`, whole columns) and as a `PipelineStream` (one bar in,
one row out, O(1)); the contract test proves the rows equal.
"""

from __future__ import annotations

import hashlib
import math
import operator
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ml_processing.sdk import BadRequest
from ml_processing.sdk.bars import FIELDS
from ml_processing.sdk.feature import FeatureExtractor, FeatureStream
from ml_processing.sdk.indicator import Indicator, IndicatorStream
from ml_processing.sdk.services.features import MAX_STEPS, NAN_POLICIES

from . import transforms

#: Columns a pipeline may read from its input besides earlier steps' outputs.
BASE_COLUMNS = ("ts", *FIELDS)
_NAME = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")
_COLUMN = re.compile(r"^[A-Za-z0-9_.(),\-]{1,128}$")
Registries = Mapping[str, Mapping[str, Any]]


def check_name(name: Any, field: str = "name") -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise BadRequest(f"pipeline name must be 1-64 letters, digits, '_' or '-', got {name!r:.60}", field=field)
    return name


@dataclass(frozen=True)
class Extract:
    """One extract step, bound: an indicator or an extractor, its parameters and columns."""

    source: Indicator | FeatureExtractor
    params: dict[str, int | float]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    visible: bool
    lookback: int  # rows before its first value, assuming OHLCV has no NaN

    def batch(self, columns: Mapping[str, np.ndarray], registries: Registries) -> tuple[np.ndarray, ...]:
        arrays = [columns[c] for c in self.inputs]
        if isinstance(self.source, Indicator):
            return self.source.batch(dict(zip(self.source.inputs, arrays, strict=True)), self.params)
        return self.source.batch(arrays, self.params, registries)

    def stream(self, registries: Registries) -> FeatureStream | IndicatorStream:
        if isinstance(self.source, Indicator):
            return self.source.stream(self.params)
        return self.source.stream(self.params, registries)


@dataclass(frozen=True)
class Transform:
    kind: str
    params: dict[str, int | float]
    columns: tuple[int, ...]  # indexes into the features


@dataclass
class Compiled:
    """A spec checked against the registries: columns, features, lookback, transforms."""

    spec: dict[str, Any]
    extracts: list[Extract]
    transforms: list[Transform]
    features: list[str]
    inputs: list[str]  # base columns read
    lookback: int
    nan: str
    fill: float
    registries: Registries = field(repr=False)

    @property
    def needs_fit(self) -> bool:
        return any(t.kind in transforms.SCALERS for t in self.transforms)


def compile_spec(spec: Any, registries: Registries) -> Compiled:
    """Check a spec (every problem a `BadRequest` naming the step and field) and bind it."""
    if not isinstance(spec, Mapping):
        raise BadRequest(f"a pipeline spec must be a map with 'steps', got {type(spec).__name__}", field="steps")
    unknown = set(spec) - {"steps", "nan", "fill", "description"}
    if unknown:
        raise BadRequest(f"unknown pipeline key {sorted(unknown)[0]!r} (keys: steps, nan, fill, description)",
                         field=str(sorted(unknown)[0]))
    steps = spec.get("steps")
    if not isinstance(steps, list) or not steps:
        raise BadRequest("'steps' must be a non-empty list of steps", field="steps")
    if len(steps) > MAX_STEPS:
        raise BadRequest(f"{len(steps)} steps; at most {MAX_STEPS}", field="steps")
    nan = spec.get("nan", "drop")
    if nan not in NAN_POLICIES:
        raise BadRequest(f"'nan' must be one of {', '.join(NAN_POLICIES)}, got {nan!r:.40}", field="nan")
    fill = spec.get("fill", 0.0)
    if isinstance(fill, bool) or not isinstance(fill, (int, float)) or not math.isfinite(fill):
        raise BadRequest(f"'fill' must be a finite number, got {fill!r:.40}", field="fill")
    description = spec.get("description", "")
    if not isinstance(description, str):
        raise BadRequest("'description' must be a string", field="description")

    lookbacks: dict[str, int] = dict.fromkeys(BASE_COLUMNS, 0)
    extracts: list[Extract] = []
    raw_transforms: list[tuple[int, str, dict[str, int | float], Any]] = []
    normalized: list[dict[str, Any]] = []
    for i, step in enumerate(steps):
        where = f"steps[{i}]"
        if not isinstance(step, Mapping):
            raise BadRequest(f"{where} must be a map", field=where)
        kinds = [k for k in ("indicator", "feature", "transform") if k in step]
        if len(kinds) != 1:
            raise BadRequest(f"{where} needs exactly one of 'indicator', 'feature' or 'transform'", field=where)
        kind = kinds[0]
        if kind == "transform":
            extra = set(step) - {"transform", "params", "columns"}
            if extra:
                raise BadRequest(f"{where}: unknown key {sorted(extra)[0]!r}", field=f"{where}.{sorted(extra)[0]}")
            params = transforms.check(step["transform"], step.get("params"), where)
            raw_transforms.append((i, step["transform"], params, step.get("columns")))
            normalized.append({"transform": step["transform"], "params": params,
                               **({"columns": list(step["columns"])} if step.get("columns") is not None else {})})
            continue
        extract, entry = _bind(i, kind, step, registries, lookbacks)
        for name in extract.outputs:
            lookbacks[name] = extract.lookback
        extracts.append(extract)
        normalized.append(entry)

    features = [name for e in extracts if e.visible for name in e.outputs]
    if not features:
        raise BadRequest("the pipeline outputs no column: every extract step has \"output\": false", field="steps")
    index = {name: j for j, name in enumerate(features)}
    bound_transforms = []
    for i, kind, params, columns in raw_transforms:
        if columns is None:
            chosen = tuple(range(len(features)))
        else:
            if not isinstance(columns, list) or not columns or not all(isinstance(c, str) for c in columns):
                raise BadRequest(f"steps[{i}].columns must be a non-empty list of feature names",
                                 field=f"steps[{i}].columns")
            missing = [c for c in columns if c not in index]
            if missing:
                raise BadRequest(f"steps[{i}].columns: {missing[0]!r} is not a feature of this pipeline "
                                 f"(features: {', '.join(features)})", field=f"steps[{i}].columns")
            chosen = tuple(index[c] for c in columns)
        bound_transforms.append(Transform(kind, params, chosen))
    used = sorted({c for e in extracts for c in e.inputs if c in BASE_COLUMNS}, key=BASE_COLUMNS.index)
    lookback = max(lookbacks[name] for name in features)
    normalized_spec = {"steps": normalized, "nan": nan, "fill": float(fill),
                       **({"description": description} if description else {})}
    return Compiled(normalized_spec, extracts, bound_transforms, features, used, lookback, nan, float(fill),
                    registries)


def _bind(i: int, kind: str, step: Mapping[str, Any], registries: Registries,
          lookbacks: Mapping[str, int]) -> tuple[Extract, dict[str, Any]]:
    where = f"steps[{i}]"
    extra = set(step) - {kind, "params", "inputs", "as", "output"}
    if extra:
        raise BadRequest(f"{where}: unknown key {sorted(extra)[0]!r}", field=f"{where}.{sorted(extra)[0]}")
    name = step[kind]
    table = registries.get("indicators" if kind == "indicator" else "features", {})
    source = table.get(name.upper() if kind == "indicator" and isinstance(name, str) else name)
    if source is None:
        what = "indicator" if kind == "indicator" else "feature extractor"
        raise BadRequest(f"{where}: unknown {what} {name!r:.60} (see GET /api/v1/features/pipeline for extractors, "
                         "the indicators service's list for indicators)", field=f"{where}.{kind}")
    try:
        params = source.resolve(step.get("params"))
    except BadRequest as exc:
        raise BadRequest(f"{where}: {exc.message}", field=f"{where}.params.{exc.field}") from None
    inputs = step.get("inputs", list(source.inputs))
    if (not isinstance(inputs, list) or len(inputs) != len(source.inputs)
            or not all(isinstance(c, str) for c in inputs)):
        raise BadRequest(f"{where}: 'inputs' must list {len(source.inputs)} column(s) for "
                         f"{', '.join(source.inputs)}", field=f"{where}.inputs")
    missing = [c for c in inputs if c not in lookbacks]
    if missing:
        raise BadRequest(f"{where}: input column {missing[0]!r} is neither {', '.join(BASE_COLUMNS)} nor the "
                         "output of an earlier step", field=f"{where}.inputs")
    if isinstance(source, Indicator):
        base = source.output_key(params, source.outputs[0]).split(".")[0]
        if list(inputs) != list(source.inputs):
            base += f"({','.join(inputs)})"
        outputs = [base] if len(source.outputs) == 1 else [f"{base}.{o}" for o in source.outputs]
        own = source.lookback(params)
    else:
        outputs = source.output_names(params, inputs)
        own = source.lookback(params)
    rename = step.get("as")
    if rename is not None:
        names = [rename] if isinstance(rename, str) else rename
        if (not isinstance(names, list) or len(names) != len(outputs)
                or not all(isinstance(n, str) and _COLUMN.fullmatch(n) for n in names)):
            raise BadRequest(f"{where}: 'as' must give {len(outputs)} name(s) of letters, digits and _.(),-",
                             field=f"{where}.as")
        outputs = names
    taken = [n for n in outputs if n in lookbacks]
    if taken:
        raise BadRequest(f"{where}: column {taken[0]!r} already exists (rename it with 'as')", field=f"{where}.as")
    visible = step.get("output", True)
    if not isinstance(visible, bool):
        raise BadRequest(f"{where}: 'output' must be true or false", field=f"{where}.output")
    lookback = max(lookbacks[c] for c in inputs) + own
    entry = {kind: source.name, "params": params, "inputs": list(inputs),
             **({"as": step["as"]} if rename is not None else {}), **({"output": False} if not visible else {})}
    return Extract(source, params, tuple(inputs), tuple(outputs), visible, lookback), entry


# -- batch ----------------------------------------------------------------------------------------------


def digest(columns: Mapping[str, np.ndarray]) -> str:
    """A content hash of the input columns (the feature cache key, with the pipeline version)."""
    h = hashlib.blake2b(digest_size=16)
    for name in sorted(columns):
        h.update(name.encode())
        h.update(np.ascontiguousarray(columns[name]).view(np.uint8))
    return h.hexdigest()


def extract(compiled: Compiled, columns: Mapping[str, np.ndarray]) -> np.ndarray:
    """Rows x features, float64, NaN where a feature has no value (the warm-up rows)."""
    table: dict[str, np.ndarray] = dict(columns)
    for step in compiled.extracts:
        for name, values in zip(step.outputs, step.batch(table, compiled.registries), strict=True):
            table[name] = np.asarray(values, dtype=np.float64)
    n = len(next(iter(columns.values()))) if columns else 0
    matrix = np.empty((n, len(compiled.features)), dtype=np.float64)
    for j, name in enumerate(compiled.features):
        matrix[:, j] = table[name]
    return matrix


def first_complete(matrix: np.ndarray) -> int | None:
    """Index of the first row with every feature a number; None if there is none."""
    complete = ~np.isnan(matrix).any(axis=1)
    return int(np.argmax(complete)) if complete.any() else None


def transform(compiled: Compiled, fitted: Sequence[Mapping[str, Any]] | None, matrix: np.ndarray) -> np.ndarray:
    """Every transform step applied in order (a new matrix); NaN policy not applied."""
    if compiled.transforms and fitted is None:
        raise BadRequest("this pipeline version was never fitted: fit it first (POST /api/v1/features/fit)",
                         field="pipeline")
    out = matrix.copy()
    for step, state in zip(compiled.transforms, fitted or [{}] * len(compiled.transforms), strict=True):
        cols = list(step.columns)
        out[:, cols] = transforms.apply(step.kind, step.params, state, out[:, cols])
    return out


def apply_nan_policy(compiled: Compiled, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows kept, their indexes into `matrix`) under the pipeline's NaN policy."""
    index = np.arange(len(matrix))
    nan_rows = np.isnan(matrix).any(axis=1)
    if not nan_rows.any():
        return matrix, index
    if compiled.nan == "drop":
        return matrix[~nan_rows], index[~nan_rows]
    if compiled.nan == "fill":
        return np.where(np.isnan(matrix), compiled.fill, matrix), index
    row = int(np.argmax(nan_rows))
    col = int(np.argmax(np.isnan(matrix[row])))
    raise BadRequest(f"row {row} has no value for feature {compiled.features[col]!r} and this pipeline's NaN "
                     "policy is 'reject' (send more bars before it, or use nan = 'drop' or 'fill')", field="rows")


def fit(compiled: Compiled, matrix: np.ndarray) -> list[dict[str, Any]]:
    """Fit every transform in order on the complete rows of `matrix` (each on the previous one's output)."""
    rows = matrix[~np.isnan(matrix).any(axis=1)]
    if len(rows) < 2:
        raise BadRequest(f"{len(rows)} complete row(s) to fit on; at least 2 are needed (send more bars than the "
                         f"pipeline's lookback of {compiled.lookback})", field="rows")
    fitted = []
    for step in compiled.transforms:
        cols = list(step.columns)
        state = transforms.fit(step.kind, step.params, rows[:, cols])
        rows[:, cols] = transforms.apply(step.kind, step.params, state, rows[:, cols])
        fitted.append(state)
    return fitted


# -- streaming ------------------------------------------------------------------------------------------


class PipelineStream:
    """One series' pipeline state: `update` takes one bar and returns its feature row, O(1)."""

    def __init__(self, compiled: Compiled, fitted: Sequence[Mapping[str, Any]] | None) -> None:
        self.compiled = compiled
        self.fitted = fitted  # (a property: setting it rebinds the transforms)
        self.steps = [_row_step(step.stream(compiled.registries), step) for step in compiled.extracts]
        features = compiled.features
        self._row = (operator.itemgetter(*features) if len(features) > 1
                     else lambda table: (table[features[0]],))

    def update(self, bar: Mapping[str, float]) -> list[float]:
        """The features of this bar (NaN while warming up), before transforms."""
        table = dict(bar)
        for step in self.steps:
            step(table)
        return list(self._row(table))

    @property
    def fitted(self) -> Sequence[Mapping[str, Any]] | None:
        return self._fitted

    @fitted.setter
    def fitted(self, fitted: Sequence[Mapping[str, Any]] | None) -> None:
        """A (newly) fitted version's numbers: the extract state stays, the transforms are rebound."""
        self._fitted = fitted
        width = len(self.compiled.features)
        self._transforms = [] if fitted is None else [
            transforms.row_function(step.kind, step.params, state, step.columns, width)
            for step, state in zip(self.compiled.transforms, fitted, strict=True)]

    def transformed(self, row: list[float]) -> list[float] | None:
        """`row` through the fitted transforms; None when the pipeline needs fitting and was not."""
        if self._fitted is None and self.compiled.transforms:
            return None
        for apply in self._transforms:
            row = apply(row)
        return row


def _row_step(stream: Any, step: Extract) -> Any:
    """A function that advances `stream` by one row of `table` (a dict of column values), writing the step's
    outputs into it. Specialised for the common shapes: the per-row path is most of the live cost."""
    inputs, outputs = step.inputs, step.outputs
    if isinstance(step.source, Indicator):
        names = step.source.inputs
        if len(names) == 1 and len(outputs) == 1:
            (name,), (column,), (output,) = names, inputs, outputs

            def one_indicator(table: dict[str, float]) -> None:
                table[output] = stream.update({name: table[column]})[0]

            return one_indicator

        pairs = tuple(zip(names, inputs, strict=True))
        if len(outputs) == 1:
            (output,) = outputs

            def indicator_one_output(table: dict[str, float]) -> None:
                table[output] = stream.update({n: table[c] for n, c in pairs})[0]

            return indicator_one_output

        def indicator(table: dict[str, float]) -> None:
            values = stream.update({n: table[c] for n, c in pairs})
            table.update(zip(outputs, values, strict=True))

        return indicator
    if len(inputs) == 1 and len(outputs) == 1:
        (column,), (output,) = inputs, outputs

        def one(table: dict[str, float]) -> None:
            table[output] = stream.update(table[column])[0]

        return one
    if len(inputs) == 2 and len(outputs) == 1:
        (a, b), (output,) = inputs, outputs

        def two(table: dict[str, float]) -> None:
            table[output] = stream.update(table[a], table[b])[0]

        return two

    def general(table: dict[str, float]) -> None:
        values = stream.update(*[table[c] for c in inputs])
        table.update(zip(outputs, values, strict=True))

    return general
