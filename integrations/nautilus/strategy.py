"""`SignalFollower`: an example strategy that trades ml-processing's signals with a fixed size.

A ``buy`` signal makes the position long ``trade_size``, a ``sell`` signal short ``trade_size``, a ``flat``
signal (``MlProcessingConfig.flat_on_neutral``) closes it; before the first signal it is flat. Each signal
sends one market order for the difference between that target and the position (counting orders still
working), so with a netting account the position always ends where the last signal points. An example,
not advice: no costs model, stops or sizing beyond the fixed size.
"""

from __future__ import annotations

from decimal import Decimal

from nautilus_trader.config import StrategyConfig
from nautilus_trader.core.data import Data
from nautilus_trader.model.enums import OrderSide
from nautilus_trader.model.identifiers import InstrumentId
from nautilus_trader.model.instruments import Instrument
from nautilus_trader.trading.strategy import Strategy

from .data import MlSignal, signal_type
from .wire import TARGETS, model_name


class SignalFollowerConfig(StrategyConfig, frozen=True, forbid_unknown_fields=True):
    """``instrument_id``: what to trade (the `MlProcessing` actor's bar type's instrument). ``trade_size``:
    the position a signal asks for, in the instrument's quantity. ``model``: follow only this model's signals
    (``NAME``; None follows every signal of the instrument). ``close_positions_on_stop``: flatten at stop."""

    instrument_id: InstrumentId
    trade_size: Decimal
    model: str | None = None
    close_positions_on_stop: bool = True


class SignalFollower(Strategy):
    """Long, short or flat by the latest `MlSignal` of its instrument, one fixed size."""

    def __init__(self, config: SignalFollowerConfig) -> None:
        super().__init__(config)
        self.instrument: Instrument | None = None
        self.followed = 0  # signals acted upon
        self.orders_sent = 0

    def on_start(self) -> None:
        self.instrument = self.cache.instrument(self.config.instrument_id)
        if self.instrument is None:
            self.log.error(f"no instrument {self.config.instrument_id} in the cache: stopping")
            self.stop()
            return
        self.subscribe_data(signal_type(self.config.instrument_id))

    def on_data(self, data: Data) -> None:
        if not isinstance(data, MlSignal) or data.side not in TARGETS:
            return
        if self.config.model is not None and model_name(data.model) != self.config.model:
            return
        self.followed += 1
        self.move_to(Decimal(TARGETS[data.side]) * self.config.trade_size)

    def move_to(self, target: Decimal) -> None:
        """Send the market order that takes the position (with what is still working) to `target`."""
        assert self.instrument is not None
        instrument_id = self.config.instrument_id
        working = sum((order.leaves_qty.as_decimal() * (1 if order.side == OrderSide.BUY else -1)
                       for order in (*self.cache.orders_open(instrument_id=instrument_id, strategy_id=self.id),
                                     *self.cache.orders_inflight(instrument_id=instrument_id, strategy_id=self.id))),
                      Decimal(0))
        delta = target - (self.portfolio.net_position(instrument_id) + working)
        if delta == 0:
            return
        order = self.order_factory.market(instrument_id, OrderSide.BUY if delta > 0 else OrderSide.SELL,
                                          self.instrument.make_qty(abs(delta)))
        self.submit_order(order)
        self.orders_sent += 1

    def on_stop(self) -> None:
        self.cancel_all_orders(self.config.instrument_id)
        if self.config.close_positions_on_stop:
            self.close_all_positions(self.config.instrument_id)
