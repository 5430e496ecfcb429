"""Whether batch chart detection uses the compiled walks (`compiled`: the zigzag and the levels as plain
loops compiled by numba) or the numpy formulations that compute the same without numba (`search`,
`levels.LevelBook`). numba is optional: imported on first use, where installed; `ENABLED` switches the
compiled walks off (the tests run both ways against the recorded events).
"""

from __future__ import annotations

from types import ModuleType

import numpy as np

from ml_processing.sdk import get_logger

log = get_logger(__name__)

ENABLED = True
_loaded: list[ModuleType | None] = []


def walks() -> ModuleType | None:
    """The `compiled` module, or None without numba or with `ENABLED` off."""
    if not ENABLED:
        return None
    if not _loaded:
        try:
            from . import compiled
        except ImportError as exc:
            log.info("chart_walks_not_compiled", reason=str(exc))
            _loaded.append(None)
        else:
            _loaded.append(compiled)
    return _loaded[0]


def warm() -> None:
    """Compile the walks now (or load them from numba's cache) on a tiny series, so no request waits for it.
    Walks that fail to compile are not used: the numpy formulations stand in, and the failure is logged."""
    compiled = walks()
    if compiled is None:
        return
    empty, nan = np.zeros(0), np.full(3, np.nan)
    try:
        compiled.zigzag_walk(nan, nan, nan, 1.0)
        compiled.level_walk(empty, np.zeros(0, np.bool_), empty, empty, empty, 1, 2)
    except Exception:
        log.exception("chart_walks_compile_failed")
        _loaded[0] = None
