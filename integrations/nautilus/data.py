"""The Nautilus data the `MlProcessing` actor publishes: a model's prediction for each bar, and signals.

Both are Nautilus custom data (subclasses of ``nautilus_trader.core.data.Data``), published on the message
bus under a `DataType` whose metadata names the instrument, so a strategy subscribes to one instrument's:

    self.subscribe_data(signal_type(instrument_id))      # then on_data(data) receives MlSignal

They are plain classes rather than ``@customdataclass`` ones: that decorator reads each field's type from
``__annotations__`` with ``.__name__``, which fails on the string annotations of
``from __future__ import annotations``; nothing here needs its Arrow schema (these objects live on the
message bus, not in a catalog).
"""

from __future__ import annotations

import math
from typing import Any

from nautilus_trader.core.data import Data
from nautilus_trader.model.data import DataType
from nautilus_trader.model.identifiers import InstrumentId


class MlPrediction(Data):
    """A model's prediction for one bar.

    ``model`` is ``NAME@VERSION``; ``value`` the prediction (a class label, or a number for a regressor);
    ``probabilities`` one per class of ``classes`` (empty for a regressor); ``p_up`` the probability of the
    second class of a binary classifier (NaN otherwise); ``bar_ts`` the service's ``ts`` of the bar (its
    open time, epoch ms); ``ts_event`` the Nautilus bar's ``ts_event``.
    """

    def __init__(self, instrument_id: InstrumentId, model: str, value: Any, probabilities: tuple[float, ...],
                 classes: tuple[Any, ...], bar_ts: int, ts_event: int, ts_init: int) -> None:
        self.instrument_id = instrument_id
        self.model = model
        self.value = value
        self.probabilities = probabilities
        self.classes = classes
        self.bar_ts = bar_ts
        self._ts_event = ts_event
        self._ts_init = ts_init

    @property
    def p_up(self) -> float:
        return float(self.probabilities[1]) if len(self.probabilities) == 2 else math.nan

    @property
    def ts_event(self) -> int:
        return self._ts_event

    @property
    def ts_init(self) -> int:
        return self._ts_init

    def __repr__(self) -> str:
        return (f"MlPrediction({self.instrument_id}, model={self.model}, value={self.value!r}, "
                f"p_up={self.p_up:.4f}, ts_event={self._ts_event})")


class MlSignal(Data):
    """A trading signal for one instrument: ``side`` is ``buy``, ``sell`` or ``flat``.

    ``strength`` in [0, 1]; ``reason`` the service's words (``P(up) 0.652 crossed 0.6 (was flat)``, a pattern's
    name); ``model`` ``NAME@VERSION`` of the model behind it (empty for a pattern's signal); ``source`` who
    decided: ``service`` (published by ml-processing) or ``rule`` (the actor applied the service's threshold
    rule to the predictions: every signal of a backtest, and flat signals).
    """

    def __init__(self, instrument_id: InstrumentId, side: str, strength: float, reason: str, model: str,
                 source: str, bar_ts: int, ts_event: int, ts_init: int) -> None:
        self.instrument_id = instrument_id
        self.side = side
        self.strength = strength
        self.reason = reason
        self.model = model
        self.source = source
        self.bar_ts = bar_ts
        self._ts_event = ts_event
        self._ts_init = ts_init

    @property
    def ts_event(self) -> int:
        return self._ts_event

    @property
    def ts_init(self) -> int:
        return self._ts_init

    def __repr__(self) -> str:
        return (f"MlSignal({self.instrument_id}, side={self.side}, strength={self.strength}, model={self.model}, "
                f"source={self.source}, ts_event={self._ts_event})")


def prediction_type(instrument_id: InstrumentId) -> DataType:
    """The data type of one instrument's predictions (subscribe with ``subscribe_data``)."""
    return DataType(MlPrediction, metadata={"instrument_id": instrument_id.value})


def signal_type(instrument_id: InstrumentId) -> DataType:
    """The data type of one instrument's signals (subscribe with ``subscribe_data``)."""
    return DataType(MlSignal, metadata={"instrument_id": instrument_id.value})
