"""A restart on a large saved market state: the indicators service reopens a TA-Lib stream per live indicator
of every saved series while the kernel starts, and TA-Lib refuses to change its (process-wide) candle
settings while any stream is open. Every actor must still start, ``patterns`` included, and answer. Also:
candle settings already in force are applied without touching TA-Lib, and a change that TA-Lib refuses says
so."""

from __future__ import annotations

import gc
from pathlib import Path

import numpy as np
import pytest
import talib.stream

from ml_processing.plugins.patterns.candles import apply_candle_settings
from ml_processing.sdk.synthetic import market, rows
from tests.conftest import make_config
from tests.support.kernels import running

SYMBOLS = 26  # x (1m and the five timeframes it resamples into) = 156 series
BARS = 1_500  # per symbol, one-minute bars: enough for every live indicator of the 1m..1h series to open


async def test_every_actor_starts_and_answers_on_a_saved_state_of_150_series(tmp_path: Path) -> None:
    config = make_config(tmp_path, modules=())
    async with running(config) as kernel:
        for k in range(SYMBOLS):
            await kernel.request("indicators", "ingest", {"symbol": f"SYM{k}", "timeframe": "1m",
                                                          "bars": rows(market(BARS, seed=k))}, timeout=30)
        saved = len(await kernel.request("indicators", "series", {}))
    assert saved >= 150
    assert (tmp_path / "var" / "market" / "state.msgpack").exists()

    async with running(config) as kernel:  # a new kernel on the same data directory
        health = await kernel.request("kernel", "health", {})
        for name, actor in health["actors"].items():
            assert (actor["state"], actor["restarts"], actor["last_error"]) == ("running", 0, None), name
        assert len(await kernel.request("indicators", "series", {})) == saved
        held = await kernel.request("indicators", "bars", {"symbol": "SYM3", "timeframe": "1m"})
        columns = {c: held[c] for c in ("open", "high", "low", "close")}
        out = await kernel.request("patterns", "detect", {**columns, "patterns": ["CDLENGULFING", "SWING_POINTS"]})
        engulfing = talib.CDLENGULFING(*columns.values())
        assert out["bars"] == BARS and out["events"]["CDLENGULFING"]["index"].tolist() == \
            np.flatnonzero(engulfing).tolist()
        assert out["counts"]["SWING_POINTS"] > 0


def test_candle_settings_in_force_apply_while_streams_are_open_and_a_change_is_refused_clearly() -> None:
    stream = talib.stream.SMA(np.arange(30.0), timeperiod=5)  # an open TA-Lib stream handle
    try:
        assert apply_candle_settings({}) == {}  # the defaults are in force: nothing to change
        with pytest.raises(RuntimeError, match=r"BodyDoji cannot change .* while TA-Lib streams are open"):
            apply_candle_settings({"BodyDoji": {"factor": 0.5}})
        assert apply_candle_settings({}) == {}  # the refused change left nothing half-applied
    finally:
        del stream
        gc.collect()
    wider = {"BodyDoji": {"range": "HighLow", "period": 10, "factor": 0.5}}
    try:
        assert apply_candle_settings(wider) == wider  # no stream open: TA-Lib takes it
        stream = talib.stream.SMA(np.arange(30.0), timeperiod=5)
        assert apply_candle_settings(wider) == wider  # in force: applied again with a stream open
        del stream
        gc.collect()
    finally:
        apply_candle_settings({})
