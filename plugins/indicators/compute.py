"""Batch computation: validate a request's columns and indicator list, run them, name the outputs.

Pure synchronous code (no bus): the actor calls `compute`, and so can anything that holds the registry.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ml_processing.core.errors import BadRequest, TooLarge
from ml_processing.core.indicator import Indicator

MAX_BARS = 1_000_000


@dataclass(frozen=True)
class Request:
    """One indicator of a compute request, checked."""

    indicator: Indicator
    params: dict[str, int | float]
    keys: tuple[str, ...]


def parse_indicators(spec: Any, registry: Mapping[str, Indicator]) -> list[Request]:
    """``["RSI", {"name": "SMA", "params": {"timeperiod": 20}}, ...]`` -> checked requests.

    >>> from ml_processing.plugins.indicators.talib_indicators import TalibIndicator
    >>> [r.keys for r in parse_indicators(["RSI", {"name": "SMA", "params": {"timeperiod": 5}}],
    ...                                   {"RSI": TalibIndicator("RSI"), "SMA": TalibIndicator("SMA")})]
    [('RSI_14',), ('SMA_5',)]
    """
    if not isinstance(spec, list) or not spec:
        raise BadRequest("'indicators' must be a non-empty list of names or {name, params} maps", field="indicators")
    out = []
    for i, item in enumerate(spec):
        where = f"indicators[{i}]"
        if isinstance(item, str):
            name, params = item, {}
        elif isinstance(item, Mapping):
            name, params = item.get("name"), item.get("params") or {}
            extra = set(item) - {"name", "params"}
            if extra:
                raise BadRequest(f"{where}: unknown field {sorted(extra)[0]!r} (fields: name, params)", field=where)
        else:
            raise BadRequest(f"{where} must be a name or a {{name, params}} map, got {type(item).__name__}",
                             field=where)
        if not isinstance(name, str) or name.upper() not in registry:
            raise BadRequest(f"{where}: unknown indicator {name!r} (the `list` op names them all)",
                             field=f"{where}.name")
        indicator = registry[name.upper()]
        try:
            resolved = indicator.resolve(params)
        except BadRequest as exc:
            raise BadRequest(f"{where} ({indicator.name}): {exc.message}", field=f"{where}.params.{exc.field}") from None
        out.append(Request(indicator, resolved, tuple(indicator.output_key(resolved, o) for o in indicator.outputs)))
    return out


def column(args: Mapping[str, Any], name: str) -> np.ndarray:
    """One input column as contiguous float64 (JSON null becomes NaN); `BadRequest` naming it otherwise."""
    if name not in args:
        raise BadRequest(f"missing input column {name!r}", field=name)
    raw = args[name]
    if isinstance(raw, np.ndarray):
        if raw.ndim != 1 or raw.dtype.kind not in "biuf":
            raise BadRequest(f"column {name!r} must be a 1-D numeric array", field=name)
        return np.ascontiguousarray(raw, dtype=np.float64)
    if not isinstance(raw, list):
        raise BadRequest(f"column {name!r} must be a list of numbers, got {type(raw).__name__}", field=name)
    if len(raw) > MAX_BARS:
        raise TooLarge(f"column {name!r} has {len(raw):,} bars; at most {MAX_BARS:,} per request", field=name)
    try:
        values = np.array(raw, dtype=np.float64)
    except (TypeError, ValueError):
        bad = next((v for v in raw if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)))), None)
        raise BadRequest(f"column {name!r} must hold only numbers or null, found {bad!r:.40}", field=name) from None
    if values.ndim != 1:
        raise BadRequest(f"column {name!r} must be a flat list of numbers", field=name)
    return values


def compute(args: Mapping[str, Any], registry: Mapping[str, Indicator]) -> dict[str, Any]:
    """Run every requested indicator over the request's columns; outputs keyed by their stable names."""
    requests = parse_indicators(args.get("indicators"), registry)
    needed = dict.fromkeys(c for r in requests for c in r.indicator.inputs)
    data = {name: column(args, name) for name in needed}
    lengths = {name: len(values) for name, values in data.items()}
    n = next(iter(lengths.values()))
    if len(set(lengths.values())) > 1:
        raise BadRequest(f"columns differ in length: {lengths}", field=max(lengths, key=lambda k: lengths[k]))
    if n > MAX_BARS:
        raise TooLarge(f"{n:,} bars; at most {MAX_BARS:,} per request", field="close")
    values: dict[str, np.ndarray] = {}
    described = []
    for r in requests:
        outputs = r.indicator.batch(data, r.params)
        for key, series in zip(r.keys, outputs, strict=True):
            values[key] = np.asarray(series, dtype=np.float64)
        described.append({"name": r.indicator.name, "params": r.params, "outputs": list(r.keys),
                          "lookback": r.indicator.lookback(r.params)})
    return {"n": n, "indicators": described, "values": values}
