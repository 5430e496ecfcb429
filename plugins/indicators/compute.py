"""Batch computation: resolve a request's indicators against the registry, run them, name the outputs.

Pure synchronous code (no bus): the actor calls `compute` with the op's checked arguments (`ComputeArgs`),
and so can anything that holds the registry.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ml_processing.sdk import BadRequest
from ml_processing.sdk.indicator import Indicator

from .ops import MAX_BARS, ComputeArgs, Computed, ComputeReply, IndicatorSpec

__all__ = ["MAX_BARS", "Request", "compute", "parse_indicators", "resolve"]


@dataclass(frozen=True)
class Request:
    """One indicator of a request, checked: the indicator, its parameters, its output keys."""

    indicator: Indicator
    params: dict[str, int | float]
    keys: tuple[str, ...]


def resolve(name: str, params: Mapping[str, Any] | None, registry: Mapping[str, Indicator], where: str) -> Request:
    """The indicator `name` (any case) with `params` checked; `BadRequest` naming ``{where}.name`` or
    ``{where}.params.PARAM``."""
    indicator = registry.get(name.upper())
    if indicator is None:
        raise BadRequest(f"{where}: unknown indicator {name!r} (the `list` op names them all)", field=f"{where}.name")
    try:
        resolved = indicator.resolve(params)
    except BadRequest as exc:
        field = f"{where}.params" if exc.field in (None, "params") else f"{where}.params.{exc.field}"
        raise BadRequest(f"{where} ({indicator.name}): {exc.message}", field=field) from None
    return Request(indicator, resolved, tuple(indicator.output_key(resolved, o) for o in indicator.outputs))


def parse_indicators(specs: Sequence[str | IndicatorSpec], registry: Mapping[str, Indicator]) -> list[Request]:
    """``["RSI", IndicatorSpec(name="SMA", params={"timeperiod": 20}), ...]`` -> checked requests.

    >>> from ml_processing.sdk.talib_functions import TalibIndicator
    >>> registry = {"RSI": TalibIndicator("RSI"), "SMA": TalibIndicator("SMA")}
    >>> [r.keys for r in parse_indicators(["RSI", IndicatorSpec(name="sma", params={"timeperiod": 5})], registry)]
    [('RSI_14',), ('SMA_5',)]
    >>> parse_indicators([IndicatorSpec(name="SMA", params={"timeperiod": 2**31})], registry)
    Traceback (most recent call last):
    ...
    ml_processing.bus.errors.BadRequest: indicators[0] (SMA): parameter 'timeperiod' must be <= 100000, got 2147483648
    """
    out = []
    for i, spec in enumerate(specs):
        if isinstance(spec, str):
            out.append(resolve(spec, None, registry, f"indicators[{i}]"))
        else:
            out.append(resolve(spec.name, spec.params, registry, f"indicators[{i}]"))
    return out


def compute(args: ComputeArgs, registry: Mapping[str, Indicator]) -> ComputeReply:
    """Run every requested indicator over the request's columns; outputs keyed by their stable names."""
    requests = parse_indicators(args.indicators, registry)
    data = args.require(tuple(dict.fromkeys(c for r in requests for c in r.indicator.inputs)))
    values: dict[str, np.ndarray] = {}
    described: list[Computed] = []
    for r in requests:
        outputs = r.indicator.batch(data, r.params)
        for key, series in zip(r.keys, outputs, strict=True):
            values[key] = np.asarray(series, dtype=np.float64)
        described.append(Computed(name=r.indicator.name, params=r.params, outputs=list(r.keys),
                                  lookback=r.indicator.lookback(r.params)))
    return ComputeReply(n=args.length, indicators=described, values=values)
