"""What comes back on the SUB socket for the replayed series: feature rows, predictions and signals (counted by
side, and each source's side per bar for the trading figures), with the time each bar was sent and answered
(the flow control and the report read it)."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zmq.asyncio

from ml_processing.sdk import CodecError, codec, topics

PROBE_TOPIC = topics.kernel("replay")


@dataclass
class Tap:
    """Counts and times of what came back for one (symbol, timeframe)."""

    symbol: str
    timeframe: str
    index: dict[int, int]  # bar ts -> position
    sent_at: np.ndarray
    answered_at: np.ndarray
    sent: int = 0
    acked: int = -1  # the last bar whose feature row or prediction came back
    predicted: int = -1  # the last bar with a prediction
    feature_rows: int = 0
    complete_rows: int = 0
    predictions: int = 0
    by_model: dict[str, int] = field(default_factory=dict)
    signals: dict[str, int] = field(default_factory=dict)
    sides: dict[str, dict[int, str]] = field(default_factory=dict)  # signal source -> bar position -> side
    other_timeframes: int = 0
    malformed: int = 0
    first_prediction_ts: int | None = None
    last_message: float = 0.0
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    joined: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.feature_topic = topics.feature(self.symbol, self.timeframe)
        self.prediction_topic = topics.prediction(self.symbol)
        self.signal_topic = topics.signal(self.symbol)

    @classmethod
    def of(cls, symbol: str, timeframe: str, timestamps: list[int]) -> Tap:
        """A tap for bars with these open times, nothing sent yet."""
        n = len(timestamps)
        return cls(symbol, timeframe, {ts: i for i, ts in enumerate(timestamps)}, np.full(n, np.nan),
                   np.full(n, np.nan))

    @property
    def prefixes(self) -> tuple[str, ...]:
        """The topics to subscribe to: the series' feature rows, predictions, signals, and the probe."""
        return self.feature_topic, self.prediction_topic, self.signal_topic, PROBE_TOPIC

    def receive(self, topic: str, body: Any) -> None:
        """Account for one message."""
        now = time.perf_counter()
        if topic == PROBE_TOPIC:
            self.joined.set()
            return
        if not isinstance(body, Mapping):
            self.malformed += 1
            return
        if topic != self.feature_topic and body.get("timeframe") != self.timeframe:
            self.other_timeframes += 1
            return
        ts = body.get("ts")
        position = self.index.get(ts) if isinstance(ts, int) else None
        if topic == self.signal_topic:
            side = str(body.get("side"))
            self.signals[side] = self.signals.get(side, 0) + 1
            if position is not None:  # the last one received for a bar wins
                self.sides.setdefault(signal_source(body), {})[position] = side
        elif position is None:
            return
        elif topic == self.feature_topic:
            self.feature_rows += 1
            self.complete_rows += bool(body.get("complete"))
            self._ack(position, now)
        elif topic == self.prediction_topic:
            self.predictions += 1
            model = str(body.get("model", "?")).partition("@")[0]
            self.by_model[model] = self.by_model.get(model, 0) + 1
            if self.first_prediction_ts is None:
                self.first_prediction_ts = int(body["ts"])
            if math.isnan(self.answered_at[position]):
                self.answered_at[position] = now
            self.predicted = max(self.predicted, position)
            self._ack(position, now)

    def _ack(self, position: int, now: float) -> None:
        self.acked = max(self.acked, position)
        self.last_message = now
        self.changed.set()


def signal_source(body: Mapping[str, Any]) -> str:
    """Who sent a signal: its model without the version, else its ``source`` (``patterns``), else ``?``.

    >>> signal_source({"model": "ensemble@3"}), signal_source({"source": "patterns"}), signal_source({})
    ('ensemble', 'patterns', '?')
    """
    return str(body.get("model") or body.get("source") or "?").partition("@")[0]


async def listen(sub: zmq.asyncio.Socket, tap: Tap) -> None:
    """Feed every message of `sub` to `tap` (until cancelled); undecodable ones count as malformed."""
    while True:
        frames = await sub.recv_multipart()
        if len(frames) != 2:
            tap.malformed += 1
            continue
        try:
            tap.receive(frames[0].decode(), codec.unpackb(frames[1]))
        except (CodecError, UnicodeDecodeError):
            tap.malformed += 1
