"""Batch computation: validate a request's columns and indicator list, run them, name the outputs.

Pure synchronous code (no bus): the actor calls `compute`, and so can anything that holds the registry.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ml_processing.sdk import BadRequest
from ml_processing.sdk.bars import read_columns
from ml_processing.sdk.indicator import Indicator

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


def compute(args: Mapping[str, Any], registry: Mapping[str, Indicator]) -> dict[str, Any]:
    """Run every requested indicator over the request's columns; outputs keyed by their stable names."""
    requests = parse_indicators(args.get("indicators"), registry)
    needed = dict.fromkeys(c for r in requests for c in r.indicator.inputs)
    data, n = read_columns(args, list(needed), MAX_BARS)
    values: dict[str, np.ndarray] = {}
    described = []
    for r in requests:
        outputs = r.indicator.batch(data, r.params)
        for key, series in zip(r.keys, outputs, strict=True):
            values[key] = np.asarray(series, dtype=np.float64)
        described.append({"name": r.indicator.name, "params": r.params, "outputs": list(r.keys),
                          "lookback": r.indicator.lookback(r.params)})
    return {"n": n, "indicators": described, "values": values}
