"""Whether batch chart detection uses the compiled walks (`compiled`: the zigzag and the levels as plain
loops compiled by numba) or the numpy formulations that compute the same without numba (`search`,
`levels.LevelBook`).

numba is optional, and heavy (importing it and loading the compiled walks takes one to three seconds and
about 150 MiB), so it is loaded only when batch chart detection first runs. As a library (tests, benchmarks,
a notebook), that first call loads it and waits. In a service (`in_background`, which the ``patterns`` actor
sets when it starts) nothing waits: the first batch detection starts loading it on a thread, and batch
detection uses the numpy formulations until it is ready. `ENABLED` switches the compiled walks off (the
tests run both ways against the recorded events).
"""

from __future__ import annotations

import threading
from types import ModuleType

import numpy as np

from ml_processing.sdk import get_logger

log = get_logger(__name__)

ENABLED = True
_state: dict[str, ModuleType | bool | None] = {"walks": None, "done": False, "started": False, "background": False}
_lock = threading.Lock()


def walks() -> ModuleType | None:
    """The `compiled` module once it is loaded and warm; None without numba, with `ENABLED` off, or (in the
    background mode) while it loads."""
    if not ENABLED:
        return None
    if not _state["done"]:
        if not _state["background"]:
            warm()
        elif not _state["started"]:
            _state["started"] = True
            threading.Thread(target=warm, name="chart-walks", daemon=True).start()
    return _state["walks"]  # type: ignore[return-value]


def in_background() -> None:
    """Never wait for the compiled walks: load them on a thread at first use (a service's event loop)."""
    _state["background"] = True


def status() -> str:
    """``compiled``, ``loading``, or ``numpy`` (numba missing, not loaded yet, failed or switched off)."""
    if ENABLED and _state["walks"] is not None:
        return "compiled"
    return "loading" if ENABLED and _state["started"] and not _state["done"] else "numpy"


def warm() -> None:
    """Import numba and the walks, and run them once on a tiny series (compiling them, or loading them from
    numba's cache), so that no caller waits for it later. Walks that fail to load are not used: the numpy
    formulations stand in, and the failure is logged."""
    with _lock:
        if _state["done"]:
            return
        from . import compiled

        if not compiled.COMPILED:
            log.info("chart_walks_not_compiled", reason="numba is not installed")
            _state["done"] = True
            return
        nan = np.full(3, np.nan)
        try:
            compiled.zigzag_walk(nan, nan, nan, 1.0)
            compiled.level_walk(np.ones(1), np.ones(1, np.bool_), np.ones(1), np.zeros(1, np.int64), nan, nan, 1, 2)
        except Exception:
            log.exception("chart_walks_compile_failed")
        else:
            _state["walks"] = compiled
            log.info("chart_walks_compiled")
        _state["done"] = True
