"""`MlProcessing`: a Nautilus actor that streams the bars it subscribes to into ml-processing and publishes the
answers as Nautilus data (`MlPrediction`, `MlSignal`) that strategies subscribe to.

Two modes (``MlProcessingConfig.mode``):

* ``backtest``: each bar asks ``models.predict`` over MDP with the last ``window`` bars and waits for the
  answer before the engine moves on, so a ``BacktestEngine`` run is deterministic. The version of the model
  is pinned at start; signals come from the service's own threshold rule (`SignalRule`) with the thresholds
  the service attaches the model with (``models.live``), or those configured.
* ``live``: each closed bar is published on ``bar.SYMBOL.TIMEFRAME`` and the service's live path answers on
  ``prediction.SYMBOL`` and ``signal.SYMBOL`` (the model must be attached: ``[plugins.models] live``); the
  SUB socket is read on the node's asyncio loop.

With authentication on, the actor takes the keys the project's ``Client`` takes: ``keys_file`` (written by
``ml-processing keys client NAME --role compute --out FILE``) or ``server_key``, ``public_key`` and
``secret_key``. A ``compute`` key is enough for both modes.
"""

from __future__ import annotations

from typing import Any, Literal

import zmq
from nautilus_trader.common.actor import Actor
from nautilus_trader.config import ActorConfig, PositiveFloat, PositiveInt
from nautilus_trader.model.data import Bar, BarType
from nautilus_trader.model.enums import bar_aggregation_to_str

from ml_processing.bus import topics
from ml_processing.bus.mdp import Client

from .data import MlPrediction, MlSignal, prediction_type, signal_type
from .links import ModelInfo, RequestLink, StreamLink
from .wire import (
    BarWindow,
    SignalRule,
    attached_thresholds,
    bar_body,
    bar_ts_ms,
    client_keys,
    event_ns,
    model_name,
    p_up,
    service_symbol,
    step_ms,
    timeframe_of,
)


class MlProcessingConfig(ActorConfig, frozen=True, forbid_unknown_fields=True):
    """Configuration of `MlProcessing`.

    ``bar_type``: the bars to stream (time bars). ``mode``: ``backtest`` or ``live``. ``model``: the model
    whose predictions and signals are followed (``ensemble`` by default). ``broker``, ``pub_in``,
    ``pub_out``: the service's endpoints (docs/PROTOCOL.md). ``symbol``, ``timeframe``: the series' names on
    the service's side (default: the instrument's symbol, the bar type's step). ``window``: bars a backtest
    request sends (at least the pipeline's lookback; more makes indicators with memory, such as RSI, match the
    live path's to within 1e-6). ``buy_above``, ``sell_below``: the signal thresholds of a backtest (default:
    the service's for the model). ``flat_on_neutral``: also signal ``flat`` when P(up) goes back between the
    thresholds. ``publish_bars``: live, publish the bars (off when a feed already publishes this series).
    ``bar_ts_on_close``: Nautilus stamps time bars at their close (its default); the service's ``ts`` is the
    open. ``timeout_s``: the longest wait for an answer in a backtest. Keys: see the module.
    """

    bar_type: BarType
    mode: Literal["backtest", "live"] = "backtest"
    model: str = "ensemble"
    broker: str = "tcp://127.0.0.1:5555"
    pub_in: str = "tcp://127.0.0.1:5556"
    pub_out: str = "tcp://127.0.0.1:5557"
    symbol: str | None = None
    timeframe: str | None = None
    window: PositiveInt = 250
    buy_above: float | None = None
    sell_below: float | None = None
    flat_on_neutral: bool = False
    publish_bars: bool = True
    bar_ts_on_close: bool = True
    timeout_s: PositiveFloat = 10.0
    keys_file: str | None = None
    server_key: str | None = None
    public_key: str | None = None
    secret_key: str | None = None

    def __post_init__(self) -> None:
        buy = 1.0 if self.buy_above is None else self.buy_above
        sell = 0.0 if self.sell_below is None else self.sell_below
        if not 0.0 <= sell <= buy <= 1.0:
            raise ValueError(f"buy_above, sell_below: need 0 <= sell_below ({self.sell_below}) <= buy_above "
                             f"({self.buy_above}) <= 1")


class MlProcessing(Actor):
    """Streams bars into ml-processing; publishes its predictions and signals as `MlPrediction` and `MlSignal`
    (data types `prediction_type` and `signal_type` of the bar type's instrument).

    ``counts`` says what happened: ``bars`` seen, ``warming`` (backtest: bars before the pipeline's first
    complete row, never asked), ``predictions`` and ``signals`` published, ``published`` (live: bars sent).
    """

    def __init__(self, config: MlProcessingConfig) -> None:
        super().__init__(config)
        self.instrument_id = config.bar_type.instrument_id
        spec = config.bar_type.spec
        self.timeframe = config.timeframe or timeframe_of(bar_aggregation_to_str(spec.aggregation), spec.step)
        self.step_ms = step_ms(self.timeframe)
        self.symbol = config.symbol or service_symbol(self.instrument_id.symbol.value)
        topics.bar(self.symbol, self.timeframe)  # the service's grammar: BadRequest naming the part
        self.keys = client_keys(config.keys_file, config.server_key, config.public_key, config.secret_key)
        self.counts = dict.fromkeys(("bars", "warming", "predictions", "signals"), 0)
        self.model_info: ModelInfo | None = None
        self._context: zmq.Context[Any] | None = None
        self._client: Client | None = None
        self._requests: RequestLink | None = None
        self._stream: StreamLink | None = None
        self._window = BarWindow(config.window)
        self._rule: SignalRule | None = None
        self._prediction_type = prediction_type(self.instrument_id)
        self._signal_type = signal_type(self.instrument_id)

    @property
    def connected(self) -> bool:
        """Live: a probe went through the service's pub/sub, so no bar is published into a connection not yet
        made (bars wait until then). A backtest is connected once started."""
        return self._stream.joined if self._stream is not None else self._requests is not None

    # -- lifecycle ---------------------------------------------------------------------------------------

    def on_start(self) -> None:
        config = self.config
        self._context = zmq.Context()
        if config.mode == "backtest":
            self._requests = RequestLink(self._link_client())
            self.model_info = self._requests.describe(config.model)
            if self.model_info.lookback >= config.window:
                raise ValueError(f"window: {config.window} bars do not cover the lookback of pipeline "
                                 f"{self.model_info.pipeline} ({self.model_info.lookback} bars)")
            self._rule = self._signal_rule(required=True)
            self.log.info(f"backtest against {config.broker}: {self.model_info.ref} on pipeline "
                          f"{self.model_info.pipeline} (lookback {self.model_info.lookback}), {self.symbol} "
                          f"{self.timeframe}, signals at P(up) >= {self._rule.buy_above} / <= {self._rule.sell_below}")
        else:
            self._rule = self._signal_rule(required=False) if config.flat_on_neutral else None
            self._stream = StreamLink(self._context, pub_in=config.pub_in, pub_out=config.pub_out, keys=self.keys,
                                      symbol=self.symbol, timeframe=self.timeframe, log=self.log,
                                      on_prediction=self._on_prediction, on_signal=self._on_signal)
            self.log.info(f"live on {config.pub_in} -> {config.pub_out}: {self.symbol} {self.timeframe}, model "
                          f"{config.model}")
        self.subscribe_bars(config.bar_type)

    def on_stop(self) -> None:
        self.unsubscribe_bars(self.config.bar_type)
        self._close()

    def on_reset(self) -> None:
        self.counts = dict.fromkeys(self.counts, 0)
        self._window = BarWindow(self.config.window)
        if self._rule is not None:
            self._rule.zone = "flat"

    def on_dispose(self) -> None:
        self._close()

    def _close(self) -> None:
        if self._stream is not None:
            self.counts["published"] = self._stream.published
            self._stream.close()
            self._stream = None
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._context is not None:
            self._context.term()
            self._context = None

    def _link_client(self) -> Client:
        if self._client is None:
            assert self._context is not None
            self._client = Client(self.config.broker, timeout=self.config.timeout_s, context=self._context,
                                  keys=self.keys)
        return self._client

    def _signal_rule(self, *, required: bool) -> SignalRule | None:
        """The thresholds configured, or those the service attaches the model with (``models.live``), or
        the service's defaults (0.6, 0.4) for a model it does not attach."""
        config = self.config
        if config.buy_above is not None and config.sell_below is not None:
            return SignalRule(buy_above=config.buy_above, sell_below=config.sell_below)
        requests = self._requests or RequestLink(self._link_client())
        found = attached_thresholds(requests.live_report(), config.model, self.timeframe)
        if found is None and not required:
            self.log.warning(f"model {config.model} is not attached to {self.timeframe} bars in the service: "
                             "no live predictions will come (see [plugins.models] live)")
        buy, sell = found or (0.6, 0.4)
        return SignalRule(buy_above=config.buy_above if config.buy_above is not None else buy,
                          sell_below=config.sell_below if config.sell_below is not None else sell)

    # -- bars in -----------------------------------------------------------------------------------------

    def on_bar(self, bar: Bar) -> None:
        self.counts["bars"] += 1
        values = (bar.open.as_double(), bar.high.as_double(), bar.low.as_double(), bar.close.as_double(),
                  bar.volume.as_double())
        if self._stream is not None:
            if self.config.publish_bars:
                self._stream.publish_bar(bar_body(bar.ts_event, *values, step_ms=self.step_ms,
                                                  on_close=self.config.bar_ts_on_close))
            return
        assert self._requests is not None and self.model_info is not None
        ts = bar_ts_ms(bar.ts_event, step_ms=self.step_ms, on_close=self.config.bar_ts_on_close)
        self._window.append(ts, *values)
        if self._window.count <= self.model_info.lookback:
            self.counts["warming"] += 1
            return
        reply = self._requests.predict(self.model_info, self._window.columns())
        reply["model"] = f"{reply['model']}@{reply['version']}"
        self._publish_prediction(reply, ts, bar.ts_event, bar.ts_init)

    # -- answers out -------------------------------------------------------------------------------------

    def _publish_prediction(self, body: dict[str, Any], ts: int, ts_event: int, ts_init: int) -> None:
        probabilities = tuple(float(p) for p in body.get("probabilities") or ())
        self.publish_data(self._prediction_type, MlPrediction(
            self.instrument_id, str(body["model"]), body.get("prediction"), probabilities,
            tuple(body.get("classes") or ()), ts, ts_event, ts_init))
        self.counts["predictions"] += 1
        if self._rule is None:
            return
        signal = self._rule.update(p_up(probabilities))
        if signal is None:
            return
        side, strength, reason = signal
        if side == "flat" and not self.config.flat_on_neutral:
            return
        if side != "flat" and self._stream is not None:
            return  # live: the service publishes buy and sell itself
        self._publish_signal(side, strength, reason, str(body["model"]), "rule", ts, ts_event, ts_init)

    def _publish_signal(self, side: str, strength: float, reason: str, model: str, source: str, ts: int,
                        ts_event: int, ts_init: int) -> None:
        self.publish_data(self._signal_type, MlSignal(self.instrument_id, side, strength, reason, model, source, ts,
                                                      ts_event, ts_init))
        self.counts["signals"] += 1

    def _on_prediction(self, body: dict[str, Any]) -> None:
        """Live: ``prediction.SYMBOL`` of our timeframe, for the followed model."""
        if model_name(str(body.get("model", ""))) != self.config.model:
            return
        ts = body["ts"]
        self._publish_prediction(body, ts, event_ns(ts, step_ms=self.step_ms, on_close=self.config.bar_ts_on_close),
                                 self.clock.timestamp_ns())

    def _on_signal(self, body: dict[str, Any]) -> None:
        """Live: ``signal.SYMBOL`` of our timeframe from the followed model (pattern signals name no model)."""
        model = str(body.get("model", ""))
        side = body.get("side")
        if model_name(model) != self.config.model or side not in ("buy", "sell"):
            return
        ts = body["ts"]
        self._publish_signal(side, float(body.get("strength", 0.0)), str(body.get("reason", "")), model, "service",
                             ts, event_ns(ts, step_ms=self.step_ms, on_close=self.config.bar_ts_on_close),
                             self.clock.timestamp_ns())
