"""The two ways the `MlProcessing` actor talks to ml-processing, both through the service's documented protocol.

* `RequestLink` (backtest): one blocking MDP request per bar, ``models.predict`` with the last bars as
  columns (the model's feature pipeline computes the bar's row in the service), so each bar waits for its
  answer and a run is deterministic. Stateless on the service's side: no live state is touched, runs may
  repeat or overlap, and a key with the ``compute`` role is enough.
* `StreamLink` (live): bars go out on ``bar.SYMBOL.TIMEFRAME`` to the pub/sub proxy's input, the service's
  live path answers on ``prediction.SYMBOL`` and ``signal.SYMBOL`` (docs/PROTOCOL.md section 4,
  docs/MODELS.md), read by a SUB socket that the running asyncio loop (a Nautilus ``TradingNode``'s)
  watches, so answers reach the actor on the loop's thread, never from another thread.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import zmq

from ml_processing.bus import topics
from ml_processing.bus.mdp import Client, CurveKeys
from ml_processing.bus.pubsub import Publisher, Subscriber

#: Slow joiner: a probe goes PUB -> proxy -> SUB every `PROBE_INTERVAL_S` until one comes back, at most
#: `PROBE_TRIES` times; bars wait (at most `MAX_WAITING`) so none is published into a connection not yet made.
PROBE_INTERVAL_S = 0.02
PROBE_TRIES = 500
MAX_WAITING = 10_000


class Log(Protocol):
    def info(self, message: str) -> None: ...
    def warning(self, message: str) -> None: ...


@dataclass(frozen=True)
class ModelInfo:
    """The model a backtest asks: its version (pinned for the run), feature pipeline and that pipeline's
    lookback (bars before its first complete row)."""

    name: str
    version: int
    pipeline: str
    lookback: int

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


class RequestLink:
    """Backtest: ``models.predict`` with the last bars, one blocking request per bar."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.requests = 0

    def describe(self, model: str) -> ModelInfo:
        """The model's serving version, its pipeline and the pipeline's lookback (``models.get``,
        ``features.pipelines``)."""
        got = self.client.request("models", "get", {"model_id": model})
        version = int(got["serving"] if got.get("serving") is not None else got["current"])
        manifest = next((v for v in got.get("versions", ()) if v.get("version") == version), got)
        pipeline = manifest.get("pipeline") or got.get("pipeline")
        if not pipeline:
            raise ValueError(f"model {model}@{version} is not bound to a feature pipeline: the integration sends "
                             "bars, so it needs a model trained on a pipeline's rows (docs/MODELS.md)")
        name, _, number = str(pipeline).partition("@")
        listed = self.client.request("features", "pipelines", {"pipeline": name})
        found = next((v for v in listed["pipelines"][0]["versions"] if str(v["version"]) == number), None)
        if found is None:
            raise ValueError(f"model {model}@{version} is bound to pipeline {pipeline}, which the features service "
                             "does not list")
        return ModelInfo(model, version, str(pipeline), int(found["lookback"]))

    def live_report(self) -> dict[str, Any]:
        """``models.live``: which models the service attaches to bars, with their signal thresholds."""
        report: dict[str, Any] = self.client.request("models", "live", {})
        return report

    def predict(self, info: ModelInfo, columns: Mapping[str, np.ndarray]) -> dict[str, Any]:
        """The prediction for the last bar of `columns` (its window of bars), from the pinned version."""
        self.requests += 1
        reply: dict[str, Any] = self.client.request(
            "models", "predict", {"model": info.name, "version": info.version, "bars": dict(columns)})
        return reply


class StreamLink:
    """Live: bars published to the service, its predictions and signals for one symbol read back."""

    def __init__(self, context: zmq.Context[Any], *, pub_in: str, pub_out: str, keys: CurveKeys | None,
                 symbol: str, timeframe: str, log: Log, on_prediction: Callable[[dict[str, Any]], None],
                 on_signal: Callable[[dict[str, Any]], None]) -> None:
        self.symbol = symbol
        self.timeframe = timeframe
        self.log = log
        self.on_prediction = on_prediction
        self.on_signal = on_signal
        self.bar_topic = topics.bar(symbol, timeframe)
        self.prediction_topic = topics.prediction(symbol)
        self.signal_topic = topics.signal(symbol)
        self.probe_topic = topics.kernel(f"nautilus-{secrets.token_hex(4)}")  # an event no actor consumes
        self.joined = False
        self.waiting: deque[dict[str, Any]] = deque(maxlen=MAX_WAITING)
        self.published = 0
        self.dropped = 0  # malformed answers
        self._probes = 0
        self._timer: asyncio.TimerHandle | None = None
        # The subscriber hands over one drain's predictions, then its signals: they are put back in the
        # order the service published them (by bar, a prediction before its bar's signal) at the drain's end.
        self._answers: list[tuple[int, int, str, dict[str, Any]]] = []
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError("mode 'live' reads the service's pub/sub on the running asyncio loop of a Nautilus "
                               "TradingNode; in a BacktestEngine use mode 'backtest'") from None
        self.publisher = Publisher(context, pub_in, keys=keys)
        self.subscriber = Subscriber(context, pub_out, keys=keys)
        self.subscriber.subscribe(self.prediction_topic, self._answer)
        self.subscriber.subscribe(self.signal_topic, self._answer)
        self.subscriber.subscribe(self.probe_topic, self._probed)
        self.subscriber.start()
        self._probe()

    # -- the slow joiner ---------------------------------------------------------------------------------

    def _probe(self) -> None:
        self._timer = None
        if self.joined:
            return
        if self._probes >= PROBE_TRIES:
            self.log.warning(f"no probe came back through the service's pub/sub after {PROBE_TRIES} tries: "
                             "publishing bars anyway (check pub_in, pub_out and the keys)")
            self._join()
            return
        self.publisher.publish(self.probe_topic, {"probe": self._probes})
        self._probes += 1
        self._timer = self._loop.call_later(PROBE_INTERVAL_S, self._probe)

    def _probed(self, topic: str, body: Any) -> None:
        if topic == self.probe_topic and not self.joined:
            self.log.info(f"connected to the service's pub/sub ({self._probes} probes)")
            self._join()

    def _join(self) -> None:
        self.joined = True
        self.subscriber.unsubscribe(self.probe_topic, self._probed)
        while self.waiting:
            self._send(self.waiting.popleft())

    # -- bars out, answers in ----------------------------------------------------------------------------

    def publish_bar(self, body: dict[str, Any]) -> None:
        """Publish one closed bar (held until the connection is proven, at most `MAX_WAITING` of them)."""
        if self.joined:
            self._send(body)
        else:
            self.waiting.append(body)

    def _send(self, body: dict[str, Any]) -> None:
        self.publisher.publish(self.bar_topic, body)
        self.published += 1

    def _answer(self, topic: str, body: Any) -> None:
        if topic not in (self.prediction_topic, self.signal_topic):
            return  # a longer symbol sharing the prefix (prediction.EURUSD matches prediction.EURUSDX)
        if not isinstance(body, dict) or not isinstance(body.get("ts"), int):
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                self.log.warning(f"dropped a body on {topic} without an integer ts ({self.dropped} so far)")
            return
        if body.get("timeframe", self.timeframe) != self.timeframe:
            return  # another timeframe of the symbol
        if not self._answers:
            self._loop.call_soon(self._release)
        self._answers.append((body["ts"], 0 if topic == self.prediction_topic else 1, topic, body))

    def _release(self) -> None:
        answers, self._answers = self._answers, []
        answers.sort(key=lambda answer: answer[:2])  # stable: one bar's answers keep their order
        for _, _, topic, body in answers:
            if topic == self.prediction_topic:
                self.on_prediction(body)
            else:
                self.on_signal(body)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.subscriber.close()
        self.publisher.close()
