"""The indicator contract: what every indicator declares and does, built-in or a third party's.

Plugins register indicators through the ``register_indicators`` hook; the kernel keeps them in one
registry that every actor reads (`ActorContext.registries`), so an indicator registered by any package is
usable wherever the built-in ones are (live state, features, patterns, sentiment) without any plugin
importing another. This module is the contract they share.

An indicator declares its ``name``, ``group``, the OHLCV ``inputs`` it reads, its ``params`` (with
defaults and checks), its ``outputs`` and its ``lookback`` (bars before the first value), and computes
in ``batch`` over whole arrays and, one bar at a time, through the `IndicatorStream` that ``stream``
returns: ``update(bar)`` commits a bar and returns the outputs at it, ``peek(bar)`` previews a still-forming
bar without committing. The contract every indicator meets (and the test suite checks for every one
registered): feeding a series bar by bar through ``update`` gives the values ``batch`` gives on the series.

>>> p = Param("timeperiod", int, 14, minimum=1)
>>> p.check(20), p.check(None)
(20, 14)
>>> p.check(0)
Traceback (most recent call last):
...
ml_processing.bus.errors.BadRequest: parameter 'timeperiod' must be >= 1, got 0
>>> Param("window", int, 5).check(2**31)  # an int parameter fits a C int even without a declared bound
Traceback (most recent call last):
...
ml_processing.bus.errors.BadRequest: parameter 'window' must be <= 2147483647, got 2147483648
"""

from __future__ import annotations

import math
import reprlib
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ml_processing.core.errors import BadRequest

from .bars import FIELDS

#: The OHLCV columns an indicator may read, in their canonical order.
COLUMNS: tuple[str, ...] = FIELDS  # the inputs an indicator may read

#: The bounds of a C ``int``: an integer parameter never leaves them, declared bounds or not.
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


@dataclass(frozen=True)
class Param:
    """One parameter: its type (int or float), default, inclusive bounds and meaning. An ``int`` parameter
    is also bounded to a C ``int`` (`INT32_MIN`, `INT32_MAX`); a ``float`` one is finite."""

    name: str
    type: type
    default: int | float
    minimum: float | None = None
    maximum: float | None = None
    doc: str = ""

    def check(self, value: Any) -> int | float:
        """The value to use (the default for ``None``); `BadRequest` naming the parameter otherwise."""
        if value is None:
            return self.default
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise BadRequest(f"parameter {self.name!r} must be a number, got {reprlib.repr(value)}", field=self.name)
        checked: int | float
        if self.type is int:
            if isinstance(value, float) and not value.is_integer():
                raise BadRequest(f"parameter {self.name!r} must be an integer, got {reprlib.repr(value)}", field=self.name)
            checked = int(value)
        else:
            checked = float(value)
            if not math.isfinite(checked):
                raise BadRequest(f"parameter {self.name!r} must be finite, got {reprlib.repr(value)}", field=self.name)
        minimum, maximum = self.minimum, self.maximum
        if self.type is int:
            minimum = INT32_MIN if minimum is None else max(minimum, INT32_MIN)
            maximum = INT32_MAX if maximum is None else min(maximum, INT32_MAX)
        if minimum is not None and checked < minimum:
            raise BadRequest(f"parameter {self.name!r} must be >= {_bound(minimum)}, got {reprlib.repr(value)}", field=self.name)
        if maximum is not None and checked > maximum:
            raise BadRequest(f"parameter {self.name!r} must be <= {_bound(maximum)}, got {reprlib.repr(value)}", field=self.name)
        return checked

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type.__name__, "default": self.default,
                "minimum": self.minimum, "maximum": self.maximum, "doc": self.doc}

    def markdown(self) -> str:
        """As the generated docs write it, e.g. the name in backquotes, "=14 [1..100000]"."""
        bounds = ""
        if self.minimum is not None or self.maximum is not None:
            lo = "" if self.minimum is None else _bound(self.minimum)
            hi = "" if self.maximum is None else _bound(self.maximum)
            bounds = f" [{lo}..{hi}]"
        return f"`{self.name}`={self.default}{bounds}"


def _bound(value: float) -> str:
    """A bound as people write it: ``100000``, ``2147483647``, ``0.01``, ``3e+37``."""
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else f"{value:g}"


def resolve_params(owner: str, params: tuple[Param, ...], given: Mapping[str, Any] | None) -> dict[str, int | float]:
    """`given` checked against `params` (defaults filled in); `BadRequest` naming an unknown or bad one."""
    given = given or {}
    if not isinstance(given, Mapping):
        raise BadRequest(f"params of {owner} must be a map, got {type(given).__name__}", field="params")
    known = {p.name for p in params}
    unknown = [k for k in given if k not in known]
    if unknown:
        raise BadRequest(f"{owner} has no parameter {unknown[0]!r} (parameters: "
                         f"{', '.join(sorted(known)) or 'none'})", field=str(unknown[0]))
    return {p.name: p.check(given.get(p.name)) for p in params}


def format_param(value: int | float) -> str:
    """A parameter as it appears in an output name: ``20``, ``2.5``."""
    return str(value) if isinstance(value, int) else f"{value:g}"


class Indicator(ABC):
    """Base of every indicator. Subclasses set the class attributes and implement `batch`."""

    name: ClassVar[str]
    group: ClassVar[str] = "Custom"
    inputs: ClassVar[tuple[str, ...]] = ("close",)
    params: ClassVar[tuple[Param, ...]] = ()
    outputs: ClassVar[tuple[str, ...]] = ("value",)
    doc: ClassVar[str] = ""

    def resolve(self, given: Mapping[str, Any] | None) -> dict[str, int | float]:
        """Check `given` against `params`: unknown names and bad values raise `BadRequest`."""
        resolved = resolve_params(self.name, self.params, given)
        self.check_params(resolved)
        return resolved

    def check_params(self, params: Mapping[str, int | float]) -> None:  # noqa: B027 (optional)
        """Cross-parameter checks (e.g. fast < slow); raise `BadRequest` naming the parameter."""

    @abstractmethod
    def lookback(self, params: Mapping[str, int | float]) -> int:
        """Bars consumed before the first output value (the index of the first non-NaN value)."""

    @abstractmethod
    def batch(self, data: Mapping[str, np.ndarray], params: Mapping[str, int | float]) -> tuple[np.ndarray, ...]:
        """Every output over whole float64 arrays (one per name in `inputs`); NaN before the lookback."""

    def stream(self, params: Mapping[str, int | float]) -> IndicatorStream:
        """A fresh streaming state. The default recomputes `batch` over the bars seen so far, which is
        correct for any indicator but O(n) per bar: override it with an O(1) update where you can."""
        return RecomputeStream(self, params)

    def output_key(self, params: Mapping[str, int | float], output: str) -> str:
        """The stable name of one output: ``NAME_p1_p2[.output]`` with the parameters in declared order.

        >>> class Sma(Indicator):
        ...     name = "SMA"; params = (Param("timeperiod", int, 30),)
        ...     def lookback(self, params): return params["timeperiod"] - 1
        ...     def batch(self, data, params): return (data["close"],)
        >>> Sma().output_key({"timeperiod": 20}, "value")
        'SMA_20'
        """
        key = "_".join([self.name, *(format_param(params[p.name]) for p in self.params)])
        return key if len(self.outputs) == 1 else f"{key}.{output}"

    def describe(self) -> dict[str, Any]:
        """Metadata for ``list``, docs and clients."""
        defaults = {p.name: p.default for p in self.params}
        return {"name": self.name, "group": self.group, "inputs": list(self.inputs),
                "params": [p.describe() for p in self.params], "outputs": list(self.outputs),
                "lookback_default": self.lookback(defaults), "doc": self.doc}


class IndicatorStream(ABC):
    """One indicator's state over a stream of bars (maps of column -> float)."""

    @abstractmethod
    def update(self, bar: Mapping[str, float]) -> tuple[float, ...]:
        """Commit `bar`; the outputs at it (NaN while the lookback is not filled)."""

    @abstractmethod
    def peek(self, bar: Mapping[str, float]) -> tuple[float, ...]:
        """The outputs if `bar` were committed next, leaving the state unchanged."""

    def warm(self, columns: Mapping[str, np.ndarray]) -> tuple[float, ...]:
        """Commit many bars at once, oldest first, as `update` would one by one; the outputs at the last
        one (``()`` for no bars). `columns` holds one array per column (at least the indicator's inputs;
        ``ts`` int64, the others float64), all of one length. This is how a series held in memory or on disk warms a new stream:
        override it where the state can be built in one pass (TA-Lib opens its handles on the history).
        """
        names = list(columns)
        out: tuple[float, ...] = ()
        for row in zip(*(columns[name].tolist() for name in names), strict=True):
            out = self.update(dict(zip(names, row, strict=True)))
        return out


class RecomputeStream(IndicatorStream):
    """The fallback stream: keeps every bar and reruns `batch` (exact, but O(n) per bar)."""

    def __init__(self, indicator: Indicator, params: Mapping[str, int | float]) -> None:
        self.indicator = indicator
        self.params = dict(params)
        self.history: dict[str, list[float]] = {c: [] for c in indicator.inputs}

    def _last(self, extra: Mapping[str, float] | None) -> tuple[float, ...]:
        data = {c: np.array(v + ([float(extra[c])] if extra is not None else []), dtype=np.float64)
                for c, v in self.history.items()}
        return tuple(float(series[-1]) for series in self.indicator.batch(data, self.params))

    def update(self, bar: Mapping[str, float]) -> tuple[float, ...]:
        for c, values in self.history.items():
            values.append(float(bar[c]))
        return self._last(None)

    def warm(self, columns: Mapping[str, np.ndarray]) -> tuple[float, ...]:
        """One `batch` over the whole history (not one per bar)."""
        if not len(next(iter(columns.values()), ())):
            return ()
        for c, values in self.history.items():
            values.extend(np.asarray(columns[c], dtype=np.float64).tolist())
        return self._last(None)

    def peek(self, bar: Mapping[str, float]) -> tuple[float, ...]:
        return self._last(bar)
