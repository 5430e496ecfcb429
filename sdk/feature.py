"""The feature-extractor contract: one step of a feature pipeline, built-in or a third party's.

Plugins register extractors through the ``register_feature_extractors`` hook; every actor reads them as
``ctx.registries["features"]``. A pipeline step names an extractor, its parameters and (optionally) which
columns feed its inputs: OHLCV, ``ts``, or the output of an earlier step. The extractor computes in
``batch`` over whole float64 arrays and, one row at a time, through the `FeatureStream` that ``stream``
returns. The contract every extractor meets (the test suite checks it for every one registered): feeding
the rows one by one through ``update`` gives the values ``batch`` gives on the whole columns, NaN where
``batch`` has NaN. Leading NaN inputs (an earlier step still warming up) are part of that contract.

``registries`` is handed to both, so an extractor may build on registered indicators
(``registries["indicators"]["STDDEV"]``) without importing the plugin that provides them.

>>> class Double(FeatureExtractor):
...     name = "double"
...     def lookback(self, params): return 0
...     def batch(self, inputs, params, registries): return (inputs[0] * 2,)
...     def stream(self, params, registries): return MapStream(lambda x: (x * 2,))
>>> Double().output_names({}, ("close",))
['double']
>>> Double().output_names({}, ("volume",))
['double(volume)']
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, TypedDict

import numpy as np

from .indicator import Param, format_param, resolve_params


class ExtractorInfo(TypedDict):
    """What `FeatureExtractor.describe` tells about an extractor (op ``extractors``, docs)."""

    name: str
    inputs: list[str]
    outputs: list[str]
    params: list[dict[str, Any]]  # `Param.describe` of each parameter
    lookback_default: int
    doc: str


class FeatureStream(ABC):
    """One step's state over a stream of rows."""

    @abstractmethod
    def update(self, *inputs: float) -> tuple[float, ...]:
        """Commit one row (the step's input values, in order); the outputs at it."""


class MapStream(FeatureStream):
    """A stateless step: each row's outputs depend on that row only."""

    def __init__(self, fn: Callable[..., tuple[float, ...]]) -> None:
        self.update = fn  # type: ignore[method-assign]

    def update(self, *inputs: float) -> tuple[float, ...]:  # replaced per instance
        raise NotImplementedError


class FeatureExtractor(ABC):
    """Base of every extractor. Subclasses set the class attributes and implement the three methods."""

    name: ClassVar[str]
    doc: ClassVar[str] = ""
    params: ClassVar[tuple[Param, ...]] = ()
    inputs: ClassVar[tuple[str, ...]] = ("close",)  # the default columns; a step may name others
    outputs: ClassVar[tuple[str, ...]] = ("value",)

    def resolve(self, given: Mapping[str, Any] | None) -> dict[str, int | float]:
        """Check `given` against `params`: unknown names and bad values raise `BadRequest`."""
        return resolve_params(self.name, self.params, given)

    @abstractmethod
    def lookback(self, params: Mapping[str, int | float]) -> int:
        """Rows consumed before the first value, counted from the first row whose inputs are all numbers."""

    @abstractmethod
    def batch(self, inputs: Sequence[np.ndarray], params: Mapping[str, int | float],
              registries: Mapping[str, Mapping[str, Any]]) -> tuple[np.ndarray, ...]:
        """Every output over whole float64 arrays (one per input, in order)."""

    @abstractmethod
    def stream(self, params: Mapping[str, int | float],
               registries: Mapping[str, Mapping[str, Any]]) -> FeatureStream:
        """A fresh streaming state, O(1) per row."""

    def output_names(self, params: Mapping[str, int | float], inputs: Sequence[str]) -> list[str]:
        """Stable column names: ``name[_p1_p2][(in1,in2)][.output]``; the inputs are written only when
        they differ from the extractor's defaults, the output only when there are several."""
        base = "_".join([self.name, *(format_param(params[p.name]) for p in self.params)])
        if tuple(inputs) != self.inputs:
            base += f"({','.join(inputs)})"
        return [base] if len(self.outputs) == 1 else [f"{base}.{out}" for out in self.outputs]

    def describe(self) -> ExtractorInfo:
        """Name, columns, parameters, lookback at the default parameters and the one-line doc."""
        defaults = {p.name: p.default for p in self.params}
        return {"name": self.name, "inputs": list(self.inputs), "outputs": list(self.outputs),
                "params": [p.describe() for p in self.params], "lookback_default": self.lookback(defaults),
                "doc": self.doc}
