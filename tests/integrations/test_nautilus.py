"""The NautilusTrader integration against a real ml-processing kernel (real sockets, no mocks): a
``BacktestEngine`` over 2,000 hourly EUR/USD bars of the seeded synthetic market with the `MlProcessing`
actor and the `SignalFollower` strategy, the live mode over the service's pub/sub, and CURVE keys."""

from __future__ import annotations

import asyncio
import dataclasses
import doctest
import json
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest

pytest.importorskip("nautilus_trader")

import xgboost as xgb
from nautilus_trader.backtest.engine import BacktestEngine, BacktestEngineConfig
from nautilus_trader.cache.cache import Cache
from nautilus_trader.common.actor import Actor
from nautilus_trader.common.component import LiveClock, MessageBus
from nautilus_trader.common.config import ActorFactory
from nautilus_trader.config import ImportableActorConfig, LoggingConfig
from nautilus_trader.core.data import Data
from nautilus_trader.data.engine import DataEngine
from nautilus_trader.model.currencies import USD
from nautilus_trader.model.data import Bar, BarType
from nautilus_trader.model.enums import AccountType, OmsType, OrderSide
from nautilus_trader.model.events import OrderFilled
from nautilus_trader.model.identifiers import TraderId, Venue
from nautilus_trader.model.objects import Money, Price, Quantity
from nautilus_trader.portfolio.portfolio import Portfolio
from nautilus_trader.test_kit.providers import TestInstrumentProvider

from ml_processing.bus.errors import Timeout
from ml_processing.core.config import Config, PluginSection, SecurityConfig
from ml_processing.core.kernel import Kernel
from ml_processing.core.security.keys import KeyRing
from ml_processing.integrations.nautilus import (
    MlPrediction,
    MlProcessing,
    MlProcessingConfig,
    MlSignal,
    SignalFollower,
    SignalFollowerConfig,
    links,
    prediction_type,
    signal_type,
    wire,
)
from ml_processing.integrations.nautilus import data as data_module
from ml_processing.sdk import synthetic
from tests.conftest import make_config
from tests.support.kernels import running
from tests.support.waiting import wait_until

HOUR_MS = 3_600_000
BAR_TYPE = BarType.from_str("EUR/USD.SIM-1-HOUR-MID-EXTERNAL")
INSTRUMENT = TestInstrumentProvider.default_fx_ccy("EUR/USD")
LOOKBACK = 20  # the default pipeline's
THRESHOLDS = {"buy_above": 0.55, "sell_below": 0.45}  # the model is attached with these: the actor reads them
SIZE = Decimal(10_000)


def market(n: int, seed: int) -> dict[str, np.ndarray]:
    """`n` hourly EUR/USD-like bars from 2026-01-01, prices to 5 decimals as Nautilus holds them."""
    bars = synthetic.market(n, seed, momentum=0.25, step_ms=HOUR_MS, price=1.1)
    return {k: (v if k == "ts" else np.round(v, 5) if k != "volume" else np.round(v)) for k, v in bars.items()}


def nautilus_bars(columns: dict[str, np.ndarray]) -> list[Bar]:
    """The bars as Nautilus holds them: stamped at their close (ts_event = open + 1 hour)."""
    out = []
    for i, ts in enumerate(columns["ts"].tolist()):
        stamp = (ts + HOUR_MS) * 1_000_000
        out.append(Bar(BAR_TYPE, Price(columns["open"][i], 5), Price(columns["high"][i], 5),
                       Price(columns["low"][i], 5), Price(columns["close"][i], 5),
                       Quantity(columns["volume"][i], 0), stamp, stamp))
    return out


async def register_model(kernel: Kernel) -> None:
    """Model ``m``: an xgboost classifier of the next bar's direction on the default pipeline's rows, trained
    on another seed of the market than the one traded (deterministic, a second to train)."""
    train = market(2_000, seed=5)
    fitted = await kernel.request("features", "fit", {"pipeline": "default", **train})
    rows = await kernel.request("features", "transform", {"pipeline": fitted["pipeline"], **train})
    labels = (np.diff(train["close"])[rows["index"][:-1]] > 0).astype(int)
    booster = xgb.train({"objective": "binary:logistic", "nthread": 1, "max_depth": 3, "seed": 1},
                        xgb.DMatrix(np.asarray(rows["values"][:-1]), label=labels), num_boost_round=30)
    await kernel.request("models", "register", {"model_id": "m", "kind": "xgboost", "pipeline": fitted["pipeline"],
                                                 "artifact": bytes(booster.save_raw(raw_format="ubj"))})


def service_config(tmp_path: Path, *, auth: bool = False) -> Config:
    """Model ``m`` attached to every bar series with `THRESHOLDS`, no self-labelling; no resampling."""
    options = {"defaults": False, "live": [{"model": "m", "horizon": 0, **THRESHOLDS}]}
    cfg = make_config(tmp_path, modules=(), sections={"models": PluginSection(True, options),
                                                      "indicators": PluginSection(True, {"timeframes": []})})
    return dataclasses.replace(cfg, security=SecurityConfig(auth=True)) if auth else cfg


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[Kernel]:
    async with running(service_config(tmp_path)) as kernel:
        await register_model(kernel)
        yield kernel


class Collector(Actor):
    """Every prediction and signal the integration publishes for the instrument, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.predictions: list[MlPrediction] = []
        self.signals: list[MlSignal] = []

    def on_start(self) -> None:
        self.subscribe_data(prediction_type(INSTRUMENT.id))
        self.subscribe_data(signal_type(INSTRUMENT.id))

    def on_data(self, data: Data) -> None:
        (self.predictions if isinstance(data, MlPrediction) else self.signals).append(data)


@dataclasses.dataclass
class Run:
    predictions: list[MlPrediction]
    signals: list[MlSignal]
    fills: list[tuple[int, Decimal, bool]]  # (ts_event, signed quantity, reduce-only order)
    counts: dict[str, int]
    followed: int


def backtest(bars: list[Bar], **options: Any) -> Run:
    """A BacktestEngine over `bars` with the actor, the example strategy and a collector (blocking)."""
    engine = BacktestEngine(BacktestEngineConfig(logging=LoggingConfig(log_level="ERROR")))
    try:
        engine.add_venue(Venue("SIM"), oms_type=OmsType.NETTING, account_type=AccountType.MARGIN,
                         base_currency=USD, starting_balances=[Money(1_000_000, USD)])
        engine.add_instrument(INSTRUMENT)
        engine.add_data(bars)
        actor = MlProcessing(MlProcessingConfig(bar_type=BAR_TYPE, model="m", **options))
        collector = Collector()
        strategy = SignalFollower(SignalFollowerConfig(instrument_id=INSTRUMENT.id, trade_size=SIZE, model="m"))
        engine.add_actor(actor)
        engine.add_actor(collector)
        engine.add_strategy(strategy)
        engine.run()
        fills = []
        for order in engine.cache.orders():
            for event in order.events:
                if isinstance(event, OrderFilled):
                    sign = 1 if event.order_side == OrderSide.BUY else -1
                    fills.append((event.ts_event, sign * event.last_qty.as_decimal(), order.is_reduce_only))
        return Run(collector.predictions, collector.signals, sorted(fills, key=lambda f: f[0]), dict(actor.counts),
                   strategy.followed)
    finally:
        engine.dispose()


def expected_signals(predictions: list[MlPrediction]) -> list[tuple[int, str]]:
    """The service's rule, written out again: a zone change to buy (P(up) >= 0.55) or sell (<= 0.45)."""
    zone, out = "flat", []
    for p in predictions:
        now = "buy" if p.p_up >= THRESHOLDS["buy_above"] else "sell" if p.p_up <= THRESHOLDS["sell_below"] else "flat"
        if now != zone and now != "flat":
            out.append((p.ts_event, now))
        zone = now
    return out


def position_at(fills: list[tuple[int, Decimal, bool]], ts: int) -> Decimal:
    return sum((qty for stamp, qty, reduce_only in fills if stamp <= ts and not reduce_only), Decimal(0))


async def test_a_backtest_gets_a_prediction_for_every_bar_and_trades_the_signals(service: Kernel) -> None:
    columns = market(2_000, seed=11)
    bars = nautilus_bars(columns)
    run = await asyncio.to_thread(backtest, bars, broker=service.endpoints["broker"][0])

    # every bar after the pipeline's lookback got its prediction, in order, stamped as its bar
    assert run.counts["bars"] == len(bars) and run.counts["warming"] == LOOKBACK
    assert [p.ts_event for p in run.predictions] == [b.ts_event for b in bars[LOOKBACK:]]
    assert [p.bar_ts for p in run.predictions] == columns["ts"][LOOKBACK:].tolist()
    assert {p.model for p in run.predictions} == {"m@1"}
    # the answers are the service's: spot-check against a direct request on the same window of bars
    for i in (LOOKBACK, 1_000, len(bars) - 1):
        window = {k: v[max(0, i + 1 - 250): i + 1] for k, v in columns.items()}
        direct = await service.request("models", "predict", {"model": "m", "bars": window})
        assert run.predictions[i - LOOKBACK].probabilities == pytest.approx(direct["probabilities"], abs=1e-12)

    # the signals are the service's threshold rule over those predictions (with the attached thresholds)
    expected = expected_signals(run.predictions)
    assert len(expected) > 20, "too few signals for the test to mean anything"
    assert [(s.ts_event, s.side) for s in run.signals] == expected
    assert all(s.source == "rule" and s.model == "m@1" for s in run.signals)
    assert run.followed == len(expected)

    # the orders followed the signals: after each signal the position is the signal's side, one size
    for ts, side in expected:
        assert position_at(run.fills, ts) == {"buy": SIZE, "sell": -SIZE}[side], (ts, side)
    opened = [f for f in run.fills if not f[2]]
    assert {stamp for stamp, _, _ in opened} <= {ts for ts, _ in expected}  # no order without a signal
    assert sum(q for _, q, _ in run.fills) == 0  # closed at the end (close_positions_on_stop)


async def test_a_backtest_is_deterministic_and_repeatable(service: Kernel) -> None:
    bars = nautilus_bars(market(200, seed=12))
    first = await asyncio.to_thread(backtest, bars, broker=service.endpoints["broker"][0])
    again = await asyncio.to_thread(backtest, bars, broker=service.endpoints["broker"][0])
    assert [p.probabilities for p in first.predictions] == [p.probabilities for p in again.predictions]
    assert [(s.ts_event, s.side) for s in first.signals] == [(s.ts_event, s.side) for s in again.signals]
    assert first.fills == again.fills and len(first.predictions) == 200 - LOOKBACK


@dataclasses.dataclass
class LiveHarness:
    """The parts of a live Nautilus node the actor touches, on the running asyncio loop (the kernel's too):
    a live clock, the message bus, a cache, a portfolio, and a data engine that bars are fed through."""

    clock: LiveClock = dataclasses.field(default_factory=LiveClock)

    def __post_init__(self) -> None:
        self.msgbus = MessageBus(trader_id=TraderId("TESTER-001"), clock=self.clock)
        self.cache = Cache(database=None)
        self.portfolio = Portfolio(msgbus=self.msgbus, cache=self.cache, clock=self.clock)
        self.data_engine = DataEngine(msgbus=self.msgbus, cache=self.cache, clock=self.clock)
        self.data_engine.start()

    def add(self, actor: Actor) -> Actor:
        actor.register_base(portfolio=self.portfolio, msgbus=self.msgbus, cache=self.cache, clock=self.clock)
        actor.start()
        return actor


async def test_live_mode_streams_bars_over_pubsub_and_publishes_the_services_answers(service: Kernel) -> None:
    columns = market(300, seed=13)
    bars = nautilus_bars(columns)
    harness = LiveHarness()
    actor = MlProcessing(MlProcessingConfig(
        bar_type=BAR_TYPE, mode="live", model="m", pub_in=service.endpoints["pub_in"][0],
        pub_out=service.endpoints["pub_out"][0], flat_on_neutral=True, **THRESHOLDS))
    collector = Collector()
    harness.add(collector)
    harness.add(actor)
    try:
        await wait_until(lambda: actor.connected, timeout=10, what="the pub/sub probe")
        for bar in bars:
            harness.data_engine.process(bar)
            await asyncio.sleep(0.001)  # the kernel runs on this loop too
        await wait_until(lambda: len(collector.predictions) >= len(bars) - LOOKBACK, timeout=30,
                         what="a live prediction for every bar after the lookback")
        await asyncio.sleep(0.2)  # nothing more comes
    finally:
        actor.stop()
        collector.stop()
    live = await service.request("models", "live", {})

    assert actor.counts["bars"] == len(bars) and actor.counts["published"] == len(bars)
    assert [p.ts_event for p in collector.predictions] == [b.ts_event for b in bars[LOOKBACK:]]
    assert {p.model for p in collector.predictions} == {"m@1"}
    # buy and sell are the service's own signals; flat comes from the same rule over the predictions
    service_signals = [s for s in collector.signals if s.source == "service"]
    assert len(service_signals) == live["counts"]["signals"] > 5
    assert {s.side for s in service_signals} == {"buy", "sell"} and {s.source for s in collector.signals} == \
        {"service", "rule"} and all(s.side == "flat" for s in collector.signals if s.source == "rule")
    assert [(s.ts_event, s.side) for s in service_signals] == expected_signals(collector.predictions)

    # a backtest of the same bars answers what the live path answered
    run = await asyncio.to_thread(backtest, bars, broker=service.endpoints["broker"][0], flat_on_neutral=True)
    assert [p.ts_event for p in run.predictions] == [p.ts_event for p in collector.predictions]
    for replayed, streamed in zip(run.predictions, collector.predictions, strict=True):
        assert replayed.probabilities == pytest.approx(streamed.probabilities, abs=1e-6)
    assert [(s.ts_event, s.side) for s in run.signals] == [(s.ts_event, s.side) for s in collector.signals]


async def test_with_authentication_on_both_modes_take_the_clients_keys(tmp_path: Path) -> None:
    cfg = service_config(tmp_path, auth=True)
    ring = KeyRing(cfg.data_path / cfg.security.directory)
    public, secret = ring.add_client("engine", ["compute"])
    server = ring.server()[0]
    key_file = tmp_path / "engine.key"
    key_file.write_text(json.dumps({"server": server, "public": public, "secret": secret}), encoding="utf-8")
    bars = nautilus_bars(market(60, seed=14))
    async with running(cfg) as service:
        await register_model(service)
        broker = service.endpoints["broker"][0]
        run = await asyncio.to_thread(backtest, bars, broker=broker, keys_file=str(key_file))
        assert len(run.predictions) == len(bars) - LOOKBACK

        harness = LiveHarness()
        actor = MlProcessing(MlProcessingConfig(
            bar_type=BAR_TYPE, mode="live", model="m", pub_in=service.endpoints["pub_in"][0],
            pub_out=service.endpoints["pub_out"][0], server_key=server, public_key=public, secret_key=secret))
        collector = Collector()
        harness.add(collector)
        harness.add(actor)
        try:
            await wait_until(lambda: actor.connected, timeout=10, what="the pub/sub probe over CURVE")
            for bar in bars:
                harness.data_engine.process(bar)
                await asyncio.sleep(0.001)
            await wait_until(lambda: len(collector.predictions) >= len(bars) - LOOKBACK, timeout=20,
                             what="live predictions over CURVE")
        finally:
            actor.stop()
            collector.stop()
        assert [p.probabilities for p in collector.predictions] == [p.probabilities for p in run.predictions]

        with pytest.raises(Timeout):  # without keys the handshake fails: no answer comes
            await asyncio.to_thread(backtest, bars, broker=broker, timeout_s=1.0)


@pytest.mark.parametrize("module", [wire, links, data_module], ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_module_doctests(module: Any) -> None:
    """The integration's doctests (tests/test_doctests.py walks the packages that need no extra)."""
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0


def test_bad_configurations_are_refused_before_anything_connects() -> None:
    with pytest.raises(ValueError, match="time bars"):
        MlProcessing(MlProcessingConfig(bar_type=BarType.from_str("EUR/USD.SIM-100-TICK-LAST-EXTERNAL")))
    with pytest.raises(ValueError, match="together"):
        MlProcessing(MlProcessingConfig(bar_type=BAR_TYPE, server_key="S" * 40))
    with pytest.raises(ValueError, match="sell_below"):
        MlProcessingConfig(bar_type=BAR_TYPE, buy_above=0.4, sell_below=0.6)
    with pytest.raises(ValueError, match="timeframe"):
        MlProcessing(MlProcessingConfig(bar_type=BAR_TYPE, timeframe="1 hour"))
    with pytest.raises(msgspec.ValidationError, match="unknown field `modle`"):  # a misspelt option is refused
        ActorFactory.create(ImportableActorConfig(
            actor_path="ml_processing.integrations.nautilus:MlProcessing",
            config_path="ml_processing.integrations.nautilus:MlProcessingConfig",
            config={"bar_type": str(BAR_TYPE), "modle": "m"}))
    actor = MlProcessing(MlProcessingConfig(bar_type=BAR_TYPE))
    assert (actor.symbol, actor.timeframe, actor.step_ms) == ("EUR/USD", "1h", HOUR_MS)
