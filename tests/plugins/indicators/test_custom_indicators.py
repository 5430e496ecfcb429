"""The indicators TA-Lib lacks, checked against reference formulas written independently here."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from ml_processing.plugins.indicators.custom import Ichimoku, SessionVwap
from tests.support.series import ohlcv


def test_ichimoku_matches_the_textbook_formula() -> None:
    data = ohlcv(300)
    high, low = data["high"].tolist(), data["low"].tolist()
    params = {"tenkan": 9, "kijun": 26, "senkou": 52}
    tenkan, kijun, span_a, span_b = Ichimoku().batch(data, params)

    def mid(t: int, n: int) -> float:
        return (max(high[t - n + 1: t + 1]) + min(low[t - n + 1: t + 1])) / 2

    for t in range(300):
        if t < 51:
            assert np.isnan([tenkan[t], kijun[t], span_a[t], span_b[t]]).all()
            continue
        assert tenkan[t] == pytest.approx(mid(t, 9), rel=1e-12)
        assert kijun[t] == pytest.approx(mid(t, 26), rel=1e-12)
        assert span_a[t] == pytest.approx((mid(t, 9) + mid(t, 26)) / 2, rel=1e-12)
        assert span_b[t] == pytest.approx(mid(t, 52), rel=1e-12)


@pytest.mark.parametrize("start_minute", [0, 570])
def test_session_vwap_restarts_every_session(start_minute: int) -> None:
    data = ohlcv(200)  # hourly bars: several sessions
    (vwap,) = SessionVwap().batch(data, {"session_start_minute": start_minute})
    sums: dict[dt.date, list[float]] = {}
    for t in range(200):
        stamp = dt.datetime.fromtimestamp(data["ts"][t] / 1000, tz=dt.UTC) - dt.timedelta(minutes=start_minute)
        pv_w = sums.setdefault(stamp.date(), [0.0, 0.0])
        price = (data["high"][t] + data["low"][t] + data["close"][t]) / 3
        pv_w[0] += price * data["volume"][t]
        pv_w[1] += data["volume"][t]
        assert vwap[t] == pytest.approx(pv_w[0] / pv_w[1], rel=1e-12), t


def test_session_vwap_with_no_volume_yet_is_nan() -> None:
    data = ohlcv(30)
    data["volume"][:] = 0.0
    (vwap,) = SessionVwap().batch(data, {"session_start_minute": 0})
    assert np.isnan(vwap).all()
