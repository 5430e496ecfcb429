"""What a Nautilus bar, instrument and key file become on ml-processing's wire, and the service's signal rule.

Pure functions and small classes, no Nautilus import: the timeframe of a bar type (``N`` then ``s``, ``m``,
``h``, ``d`` or ``w``, the service's grammar), a bar's body on ``bar.SYMBOL.TIMEFRAME`` (``ts`` the bar's
open time in epoch milliseconds), the last bars as columns (`BarWindow`), the probability of "up" in a
prediction, the threshold rule by which the service turns those probabilities into signals (`SignalRule`,
docs/MODELS.md) and the client keys of a service with authentication on (`client_keys`).

>>> timeframe_of("HOUR", 4), service_symbol("EUR/USD")
('4h', 'EUR/USD')
>>> bar_body(1_767_229_200_000_000_000, 1.1, 1.2, 1.0, 1.15, 1000.0, step_ms=3_600_000, on_close=True)["ts"]
1767225600000
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ml_processing.bus.mdp import CurveKeys

#: Nautilus bar aggregations the service has a timeframe unit for.
UNITS = {"SECOND": ("s", 1_000), "MINUTE": ("m", 60_000), "HOUR": ("h", 3_600_000), "DAY": ("d", 86_400_000),
         "WEEK": ("w", 604_800_000)}
#: Sides of a signal and the position each asks for (in units of the trade size).
TARGETS = {"buy": 1, "sell": -1, "flat": 0}
COLUMNS = ("ts", "open", "high", "low", "close", "volume")

_NOT_IN_SYMBOL = re.compile(r"[^A-Za-z0-9_\-/:+^=$]")
_TIMEFRAME = re.compile(r"^([1-9][0-9]{0,3})([smhdw])$")


def timeframe_of(aggregation: str, step: int) -> str:
    """The service's timeframe of a Nautilus time bar: aggregation name (``HOUR``) and step (4) -> ``4h``.

    >>> timeframe_of("MINUTE", 15)
    '15m'
    >>> timeframe_of("TICK", 100)
    Traceback (most recent call last):
    ...
    ValueError: bar_type: the service takes time bars (SECOND, MINUTE, HOUR, DAY, WEEK), not TICK
    """
    if aggregation not in UNITS:
        raise ValueError(f"bar_type: the service takes time bars ({', '.join(UNITS)}), not {aggregation}")
    if not 1 <= step <= 9999:
        raise ValueError(f"bar_type: a step of {step} is outside the service's 1..9999")
    return f"{step}{UNITS[aggregation][0]}"


def step_ms(timeframe: str) -> int:
    """Milliseconds of a timeframe: ``4h`` -> 14,400,000.

    >>> step_ms("15m")
    900000
    >>> step_ms("1 hour")
    Traceback (most recent call last):
    ...
    ValueError: timeframe: '1 hour' is not N followed by s, m, h, d or w (N from 1 to 9999)
    """
    match = _TIMEFRAME.match(timeframe)
    if match is None:
        raise ValueError(f"timeframe: {timeframe!r} is not N followed by s, m, h, d or w (N from 1 to 9999)")
    units = {unit: ms for unit, ms in UNITS.values()}
    return int(match.group(1)) * units[match.group(2)]


def service_symbol(symbol: str) -> str:
    """A Nautilus symbol as a topic part of the service: characters the service's grammar refuses (dots,
    spaces) become ``_``; at most 64 characters.

    >>> service_symbol("ESZ5.CME"), service_symbol("BTC-USDT")
    ('ESZ5_CME', 'BTC-USDT')
    """
    return _NOT_IN_SYMBOL.sub("_", symbol)[:64]


def bar_ts_ms(ts_event_ns: int, *, step_ms: int, on_close: bool) -> int:
    """The service's ``ts`` of a bar (its open time, epoch ms) from Nautilus's ``ts_event`` (nanoseconds;
    the close time for bars stamped on close, Nautilus's default).

    >>> bar_ts_ms(1_767_229_200_000_000_000, step_ms=3_600_000, on_close=True)
    1767225600000
    """
    ms = ts_event_ns // 1_000_000
    return ms - step_ms if on_close else ms


def event_ns(ts_ms: int, *, step_ms: int, on_close: bool) -> int:
    """Nautilus's ``ts_event`` of the bar whose service ``ts`` is `ts_ms` (the inverse of `bar_ts_ms`).

    >>> event_ns(1_767_225_600_000, step_ms=3_600_000, on_close=True)
    1767229200000000000
    """
    return (ts_ms + step_ms if on_close else ts_ms) * 1_000_000


def bar_body(ts_event_ns: int, open_: float, high: float, low: float, close: float, volume: float, *,
             step_ms: int, on_close: bool) -> dict[str, Any]:
    """The body of ``bar.SYMBOL.TIMEFRAME`` (docs/PROTOCOL.md section 4) for one closed bar."""
    return {"ts": bar_ts_ms(ts_event_ns, step_ms=step_ms, on_close=on_close), "open": open_, "high": high,
            "low": low, "close": close, "volume": volume, "final": True}


class BarWindow:
    """The last `size` bars as float64 columns (``ts`` included), for a request that sends bars.

    >>> window = BarWindow(3)
    >>> for i in range(5):
    ...     window.append(i, 1.0 + i, 2.0 + i, 0.5 + i, 1.5 + i, 10.0)
    >>> window.count, window.columns()["close"].tolist()
    (5, [3.5, 4.5, 5.5])
    """

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("window: at least one bar")
        self.size = size
        self.count = 0  # bars appended so far
        self._data = np.empty((2 * size, len(COLUMNS)), dtype=np.float64)
        self._end = 0

    def append(self, ts: int, open_: float, high: float, low: float, close: float, volume: float) -> None:
        if self._end == len(self._data):  # full: keep the last size - 1 rows at the front (amortised copy)
            self._data[: self.size - 1] = self._data[self._end - self.size + 1: self._end]
            self._end = self.size - 1
        self._data[self._end] = (ts, open_, high, low, close, volume)
        self._end += 1
        self.count += 1

    def columns(self) -> dict[str, np.ndarray]:
        """The held bars (at most `size`, oldest first), one contiguous array per column."""
        rows = self._data[max(0, self._end - self.size): self._end]
        return {name: np.ascontiguousarray(rows[:, i]) for i, name in enumerate(COLUMNS)}


def p_up(probabilities: Sequence[float] | None) -> float:
    """P(up) of a binary classifier's probabilities (the second class's, as the service reads it), else NaN.

    >>> p_up([0.3, 0.7]), math.isnan(p_up(None))
    (0.7, True)
    """
    if probabilities is None or len(probabilities) != 2:
        return math.nan
    return float(probabilities[1])


class SignalRule:
    """The service's signal rule for one model on one series (docs/MODELS.md, ``[plugins.models] live``):
    P(up) at or above `buy_above` is the buy zone, at or below `sell_below` the sell zone, between them flat;
    entering a zone is a signal (the service publishes buy and sell; flat is returned for callers that
    close positions on it). The zone starts flat, as the service's does.

    >>> rule = SignalRule(buy_above=0.6, sell_below=0.4)
    >>> [rule.update(p) for p in (0.5, 0.65, 0.7, 0.45, 0.3)]
    [None, ('buy', 0.3, 'P(up) 0.650 crossed 0.6 (was flat)'), None, ('flat', 0.0, 'P(up) 0.450 left buy'), \
('sell', 0.4, 'P(up) 0.300 crossed 0.4 (was flat)')]
    """

    def __init__(self, *, buy_above: float, sell_below: float) -> None:
        if not 0.0 <= sell_below <= buy_above <= 1.0:
            raise ValueError(f"need 0 <= sell_below ({sell_below}) <= buy_above ({buy_above}) <= 1")
        self.buy_above = buy_above
        self.sell_below = sell_below
        self.zone = "flat"

    def update(self, up: float) -> tuple[str, float, str] | None:
        """The signal P(up) = `up` gives, as ``(side, strength, reason)``, or None when the zone holds."""
        if math.isnan(up):
            return None
        zone = "buy" if up >= self.buy_above else "sell" if up <= self.sell_below else "flat"
        if zone == self.zone:
            return None
        previous, self.zone = self.zone, zone
        if zone == "flat":
            return "flat", 0.0, f"P(up) {up:.3f} left {previous}"
        threshold = self.buy_above if zone == "buy" else self.sell_below
        strength = (up - 0.5) * 2 if zone == "buy" else (0.5 - up) * 2
        return zone, round(strength, 4), f"P(up) {up:.3f} crossed {threshold:g} (was {previous})"


def model_name(ref: str) -> str:
    """``NAME@VERSION`` -> ``NAME``.

    >>> model_name("ensemble@3"), model_name("ensemble")
    ('ensemble', 'ensemble')
    """
    return ref.partition("@")[0]


def attached_thresholds(report: Mapping[str, Any], model: str, timeframe: str) -> tuple[float, float] | None:
    """``(buy_above, sell_below)`` of `model` attached to `timeframe` in the ``models.live`` report, if any.

    >>> attached_thresholds({"attached": [{"model": "m", "timeframe": None, "buy_above": 0.7,
    ...                                    "sell_below": 0.3}]}, "m", "1h")
    (0.7, 0.3)
    """
    for spec in report.get("attached", ()):
        if spec.get("model") == model and spec.get("timeframe") in (None, timeframe):
            return float(spec["buy_above"]), float(spec["sell_below"])
    return None


def client_keys(keys_file: str | None, server: str | None, public: str | None,
                secret: str | None) -> CurveKeys | None:
    """The CURVE keys of a client of a service with authentication on: a key file written by
    ``ml-processing keys client NAME --role compute --out FILE`` (JSON ``server``, ``public``, ``secret``),
    or the three keys given one by one; None when neither is given (a service without authentication).

    >>> client_keys(None, None, None, None) is None
    True
    >>> client_keys(None, "S" * 40, "P" * 40, None)
    Traceback (most recent call last):
    ...
    ValueError: keys: give server_key, public_key and secret_key together (or keys_file)
    """
    given = [key for key in (server, public, secret) if key is not None]
    if keys_file is not None:
        if given:
            raise ValueError("keys: give keys_file or server_key/public_key/secret_key, not both")
        try:
            data = json.loads(Path(keys_file).read_text(encoding="utf-8"))
            server, public, secret = data["server"], data["public"], data["secret"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"keys_file {keys_file}: {exc}") from None
    elif not given:
        return None
    elif len(given) != 3:
        raise ValueError("keys: give server_key, public_key and secret_key together (or keys_file)")
    for name, key in (("server", server), ("public", public), ("secret", secret)):
        if not isinstance(key, str) or len(key) != 40:
            raise ValueError(f"keys: the {name} key must be 40 characters of Z85")
    return CurveKeys(str(server), str(public), str(secret))
