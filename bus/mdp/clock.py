"""The time source of heartbeats, expiry and request deadlines, injectable so tests can move time.

The bus imports nothing of ml-processing, so a clock is anything with a ``monotonic()`` method (such as
the kernel's ``Clock``) or a bare callable returning seconds.

>>> class Frozen:
...     def monotonic(self) -> float:
...         return 42.0
>>> monotonic_of(Frozen())()
42.0
>>> monotonic_of(lambda: 7.0)()
7.0
>>> import time; monotonic_of(None) is time.monotonic
True
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol, TypeAlias


class HasMonotonic(Protocol):
    def monotonic(self) -> float: ...


ClockLike: TypeAlias = "HasMonotonic | Callable[[], float]"


def monotonic_of(clock: ClockLike | None) -> Callable[[], float]:
    """The ``monotonic`` function of `clock` (real time when None)."""
    if clock is None:
        return time.monotonic
    method = getattr(clock, "monotonic", None)
    if callable(method):
        return method  # type: ignore[no-any-return]
    if callable(clock):
        return clock
    raise TypeError(f"a clock has a monotonic() method or is a callable, got {type(clock).__name__}")
