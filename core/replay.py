"""``ml-processing replay``: bars through the live path of an in-process service, and a report of what it did.

The command starts a `Kernel` from the configuration, kept apart from any running service: loopback
endpoints on ports the OS picks (``tcp://127.0.0.1:*``, the REST edge on port 0) and, unless ``--data-dir``
names one, a fresh temporary data directory that is deleted afterwards. The real registry is never touched,
and on the empty one the default models are trained first (a few seconds).

The replay then talks to the service as a feed and an engine would, over ZeroMQ only: a PUB socket sends
each bar as msgpack ``{ts, open, high, low, close, volume}`` on ``bar.SYMBOL.TIMEFRAME`` to the proxy's
input, and a SUB socket on its output receives ``feature.SYMBOL.TIMEFRAME`` (one row per bar, from the
first bar), ``prediction.SYMBOL`` (from the end of the feature pipeline's lookback) and ``signal.SYMBOL``.

* Slow joiner: a probe on ``kernel.replay`` is sent until it comes back (bounded), so no bar is published
  before both sockets are connected and subscribed.
* Flow: bars go out in batches; at most ``window`` bars are in flight, a bar counting as done once its
  feature row or prediction has come back. If nothing comes back for ``stall_timeout`` seconds while the
  window is full, the replay stops waiting for acknowledgements (reported as a warning), so it never hangs.
  ``--rate`` paces the bars in time instead of as fast as the service keeps up.
* End: the replay waits (bounded) for the last bar's prediction, asks the ``models`` service for its live
  report (op ``live`` with timelines), stops the kernel (in-flight requests drain, state is saved) and
  writes ``report.json`` and ``report.html`` into ``--out``.

Bars come from a CSV file (`read_csv`) or from a seeded synthetic market (`synthetic_bars`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import dataclasses
import html
import itertools
import json
import math
import re
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO, TypedDict, TypeVar

import numpy as np
import zmq
import zmq.asyncio

from ml_processing.bus import codec, topics

from .config import Config
from .errors import BadRequest, CodecError, MlpError
from .kernel import VERSION, Kernel
from .storage import atomic_write

DEFAULT_BARS = 20_000
DEFAULT_SEED = 1
DEFAULT_SYMBOL = "REPLAY"
DEFAULT_TIMEFRAME = "1m"
DEFAULT_OUT = "replay-report"
START_MS = 1_735_689_600_000  # 2025-01-01T00:00:00Z: the first synthetic bar
LOOPBACK = "tcp://127.0.0.1:*"
PROBE_TOPIC = topics.kernel("replay")
TIME_COLUMNS = ("ts", "timestamp", "date", "datetime", "time")
PRICE_COLUMNS = ("open", "high", "low", "close", "volume")
MAX_BARS = 10_000_000

T = TypeVar("T")

_TIMEFRAME = re.compile(r"^(\d{1,4})([smhdw])$")
_UNIT_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


class Bar(TypedDict):
    """One bar as it travels on ``bar.SYMBOL.TIMEFRAME``: ``ts`` is its open time in epoch milliseconds."""

    ts: int
    open: float
    high: float
    low: float
    close: float
    volume: float


class ReplayInputError(Exception):
    """Bad arguments or an unusable CSV file (exit code 2)."""


class ReplayError(Exception):
    """The replay could not run (exit code 1)."""


class Interrupted(Exception):
    """SIGINT or SIGTERM stopped the replay (exit code 130)."""


# -- bars ---------------------------------------------------------------------------------------------------


def timeframe_ms(timeframe: str) -> int:
    """Milliseconds of a timeframe: N followed by s, m, h, d or w.

    >>> timeframe_ms("15m"), timeframe_ms("1d")
    (900000, 86400000)
    """
    match = _TIMEFRAME.match(timeframe)
    if match is None or int(match.group(1)) == 0:
        raise ReplayInputError(f"timeframe {timeframe!r} is not N followed by s, m, h, d or w (e.g. 1m, 4h)")
    return int(match.group(1)) * _UNIT_MS[match.group(2)]


def synthetic_bars(n: int, seed: int = DEFAULT_SEED, *, start_ms: int = START_MS,
                   step_ms: int = 60_000) -> list[Bar]:
    """`n` bars of a seeded synthetic market, one every `step_ms` from `start_ms`; one seed, one series.

    Log returns follow ``r_t = 0.2 r_(t-1) + s_t e_t`` (a little momentum) with a GARCH(1,1)-like variance
    ``s_t^2 = 2e-8 + 0.08 r_(t-1)^2 + 0.9 s_(t-1)^2`` (quiet and busy stretches alternate). The open is the
    previous close; high and low stretch the body by a half-normal draw of the current volatility; volume
    grows with the size of the move, with log-normal noise.

    >>> bars = synthetic_bars(3, seed=7)
    >>> [b["ts"] - START_MS for b in bars], bars == synthetic_bars(3, seed=7)
    ([0, 60000, 120000], True)
    >>> all(b["low"] <= min(b["open"], b["close"]) <= max(b["open"], b["close"]) <= b["high"] for b in bars)
    True
    """
    rng = np.random.default_rng(seed)
    shocks = rng.standard_normal(n)
    returns = np.empty(n)
    sigma = np.empty(n)
    variance, previous = 1e-6, 0.0
    for i in range(n):
        variance = 2e-8 + 0.08 * previous * previous + 0.9 * variance
        previous = 0.2 * previous + math.sqrt(variance) * shocks[i]
        returns[i], sigma[i] = previous, math.sqrt(variance)
    close = 100.0 * np.exp(np.cumsum(returns))
    open_ = np.concatenate([[100.0], close[:-1]])
    high = np.maximum(open_, close) * (1 + np.abs(rng.normal(0.0, 1.0, n)) * sigma)
    low = np.minimum(open_, close) * (1 - np.abs(rng.normal(0.0, 1.0, n)) * sigma)
    volume = 1_000.0 * (1 + 200 * np.abs(returns)) * rng.lognormal(0.0, 0.2, n)
    start = start_ms // step_ms * step_ms
    return [Bar(ts=start + i * step_ms, open=float(open_[i]), high=float(high[i]), low=float(low[i]),
                close=float(close[i]), volume=float(volume[i])) for i in range(n)]


def parse_time(text: str) -> int:
    """Epoch milliseconds of a timestamp cell: an ISO 8601 date or date-time (UTC unless it carries an
    offset), or an epoch number, read as seconds below 1e11, milliseconds below 1e14, microseconds below
    1e17 and nanoseconds above.

    >>> parse_time("2025-01-01T00:01:00Z"), parse_time("1735689660"), parse_time("1735689660000")
    (1735689660000, 1735689660000, 1735689660000)
    >>> parse_time("2025-01-02")
    1735776000000
    """
    text = text.strip()
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    if math.isfinite(number):
        if number < 0:
            raise ValueError(f"negative timestamp {text!r}")
        scale = 1_000.0 if number < 1e11 else 1.0 if number < 1e14 else 1e-3 if number < 1e17 else 1e-6
        return round(number * scale)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is neither an ISO 8601 date nor an epoch number") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return round(moment.timestamp() * 1000)


@dataclass
class CsvBars:
    """Bars read from a CSV file, in time order, and the rows that were skipped (``line N: why``)."""

    bars: list[Bar]
    skipped: list[str] = field(default_factory=list)
    reordered: bool = False  # the file was not in time order and was sorted


def _columns(header: Sequence[str], path: Path) -> tuple[int, dict[str, int]]:
    """(index of the time column, name -> index of the price columns) of a header; case-insensitive."""
    names = [name.strip().lower() for name in header]
    where = {name: i for i, name in reversed(list(enumerate(names)))}
    time_column = next((c for c in TIME_COLUMNS if c in where), None)
    missing = [c for c in PRICE_COLUMNS if c not in where]
    if time_column is None or missing:
        what = ", ".join((["a time column (ts, timestamp or date)"] if time_column is None else []) + missing)
        raise ReplayInputError(f"{path}: missing {what}; the header has: {', '.join(header) or 'nothing'} "
                               "(needed: ts, timestamp or date, and open, high, low, close, volume)")
    return where[time_column], {c: where[c] for c in PRICE_COLUMNS}


def _row(cells: Sequence[str], time_index: int, price_index: Mapping[str, int]) -> Bar:
    """One CSV row as a bar; `ValueError` naming the bad cell."""
    needed = max(time_index, *price_index.values())
    if len(cells) <= needed:
        raise ValueError(f"{len(cells)} cells, the header has at least {needed + 1}")
    ts = parse_time(cells[time_index])
    values: dict[str, float] = {}
    for name, index in price_index.items():
        text = cells[index].strip()
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"{name}: not a number ({text!r:.40})") from None
        if not math.isfinite(value):
            raise ValueError(f"{name}: not a finite number ({text!r:.40})")
        values[name] = value
    if values["volume"] < 0:
        raise ValueError(f"volume: negative ({values['volume']})")
    if values["high"] < values["low"]:
        raise ValueError(f"high {values['high']} is below low {values['low']}")
    return Bar(ts=ts, open=values["open"], high=values["high"], low=values["low"], close=values["close"],
               volume=values["volume"])


def read_csv(path: str | Path, *, limit: int | None = None) -> CsvBars:
    """Bars of a CSV file with a header: ``ts``, ``timestamp`` or ``date`` (ISO dates or epoch numbers) and
    ``open``, ``high``, ``low``, ``close``, ``volume``, in any letter case. Rows that cannot be read are
    skipped and reported with their line number; rows out of time order are sorted, and a repeated
    timestamp keeps its first row. `limit` keeps the first bars in time order. `ReplayInputError` when the
    file cannot be read, a column is missing or no row is usable."""
    path = Path(path)
    rows: list[tuple[int, int, Bar]] = []  # (ts, line, bar)
    skipped: list[tuple[int, str]] = []  # (line, why)
    try:
        with path.open(encoding="utf-8-sig", newline="") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None:
                raise ReplayInputError(f"{path}: empty file (a header and bars are needed)")
            time_index, price_index = _columns(header, path)
            line = reader.line_num
            for cells in reader:
                start, line = line + 1, reader.line_num
                if not any(cell.strip() for cell in cells):
                    continue
                try:
                    bar = _row(cells, time_index, price_index)
                except ValueError as exc:
                    skipped.append((start, str(exc)))
                    continue
                rows.append((bar["ts"], start, bar))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ReplayInputError(f"{path}: cannot read: {exc}") from None
    return _ordered(rows, skipped, path, limit)


def _ordered(rows: list[tuple[int, int, Bar]], skipped: list[tuple[int, str]], path: Path,
             limit: int | None) -> CsvBars:
    """The rows' bars in time order, without repeated timestamps (reported)."""
    reordered = any(a[0] > b[0] for a, b in itertools.pairwise(rows))
    if reordered:
        rows.sort(key=lambda row: row[0])
    bars: list[Bar] = []
    first_line: dict[int, int] = {}
    for ts, line, bar in rows:
        if ts in first_line:
            skipped.append((line, f"timestamp {ts} repeats line {first_line[ts]}"))
            continue
        first_line[ts] = line
        bars.append(bar)
    reported = [f"line {line}: {why}" for line, why in sorted(skipped)]
    if not bars:
        detail = f"; first problem: {reported[0]}" if reported else ""
        raise ReplayInputError(f"{path}: no usable bars ({len(reported)} bad rows{detail})")
    return CsvBars(bars[:limit] if limit else bars, reported, reordered)


# -- the replay ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Flow:
    """Flow-control limits of a replay (bars, seconds)."""

    window: int = 64  # bars in flight at most (each waits behind the others: latency grows with it)
    batch: int = 16  # bars sent back to back
    stall_timeout: float = 10.0  # no acknowledgement this long with a full window: stop waiting for them
    idle_timeout: float = 3.0  # at the end: nothing more came back this long
    drain_timeout: float = 60.0  # at the end: the longest wait for the last prediction
    handshake_timeout: float = 5.0  # the slow-joiner probe
    request_timeout: float = 30.0  # the final models.live request


@dataclass
class _Tap:
    """What came back on the SUB socket for the replayed series."""

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


async def _listen(sub: zmq.asyncio.Socket, tap: _Tap) -> None:
    while True:
        frames = await sub.recv_multipart()
        if len(frames) != 2:
            tap.malformed += 1
            continue
        try:
            tap.receive(frames[0].decode(), codec.unpackb(frames[1]))
        except (CodecError, UnicodeDecodeError):
            tap.malformed += 1


async def _wait(event: asyncio.Event, seconds: float) -> bool:
    """Wait for `event` (cleared first) up to `seconds`; whether it was set."""
    event.clear()
    try:
        async with asyncio.timeout(max(0.0, seconds)):
            await event.wait()
    except TimeoutError:
        return False
    return True


async def _handshake(pub: zmq.asyncio.Socket, tap: _Tap, timeout: float) -> None:
    """Send probes until one comes back: both sockets are then connected and subscribed."""
    deadline = time.monotonic() + timeout
    probe = 0
    while not tap.joined.is_set():
        if time.monotonic() > deadline:
            raise ReplayError(f"the pub/sub proxy did not echo a probe within {timeout:g} s")
        await pub.send_multipart([PROBE_TOPIC.encode(), codec.packb({"probe": probe})])
        probe += 1
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.05):
                await tap.joined.wait()


@dataclass
class _Sender:
    """Publishes the bars under the flow limits."""

    pub: zmq.asyncio.Socket
    topic: bytes
    bars: Sequence[Bar]
    tap: _Tap
    flow: Flow
    rate: float
    warnings: list[str]
    throttled: bool = True
    stalls: int = 0

    async def run(self) -> None:
        """Send every bar."""
        tap, n = self.tap, len(self.bars)
        batch = self.flow.batch if self.rate <= 0 else max(1, min(self.flow.batch, int(self.rate * 0.05)))
        start = time.perf_counter()
        while tap.sent < n:
            if self.rate > 0:
                await asyncio.sleep(max(0.0, start + tap.sent / self.rate - time.perf_counter()))
            end = min(n, tap.sent + batch)
            await self._room(end - tap.sent)
            for i in range(tap.sent, end):
                tap.sent_at[i] = time.perf_counter()
                await self.pub.send_multipart([self.topic, codec.packb(self.bars[i])])
            tap.sent = end
            await asyncio.sleep(0)  # the service runs on this loop too

    async def _room(self, count: int) -> None:
        """Wait until `count` more bars fit in the window; after a stall, stop waiting altogether."""
        tap = self.tap
        while self.throttled and tap.sent - tap.acked - 1 + count > self.flow.window:
            if not await _wait(tap.changed, self.flow.stall_timeout):
                self.stalls += 1
                self.throttled = False
                self.warnings.append(
                    f"nothing came back for {self.flow.stall_timeout:g} s with {tap.sent - tap.acked - 1} bars "
                    f"in flight (bar {tap.sent:,} of {len(self.bars):,}): the rest was sent without waiting")


async def _drain(tap: _Tap, n: int, flow: Flow, warnings: list[str]) -> None:
    """Wait for the last bar's prediction, until nothing has come back for ``idle_timeout`` (bounded)."""
    deadline = time.monotonic() + flow.drain_timeout
    while tap.predicted < n - 1:
        left = deadline - time.monotonic()
        if left <= 0:
            warnings.append(f"the last prediction did not arrive within {flow.drain_timeout:g} s")
            return
        if not await _wait(tap.changed, min(flow.idle_timeout, left)):
            return


class Progress:
    """Bars sent, predictions received, bars/s and ETA on a stream: one ``\\r``-updated line on a terminal,
    otherwise one line at every 10%."""

    def __init__(self, total: int, stream: TextIO, *, tty: bool | None = None) -> None:
        self.total = max(1, total)
        self.stream = stream
        self.tty = stream.isatty() if tty is None else tty
        self.start = time.perf_counter()
        self.decile = 0
        self.width = 0

    def note(self, text: str) -> None:
        """A status line of its own."""
        self._write(text + "\n")

    def begin(self) -> None:
        self.start = time.perf_counter()

    def line(self, sent: int, predictions: int) -> str:
        elapsed = max(1e-9, time.perf_counter() - self.start)
        rate = sent / elapsed
        eta = (self.total - sent) / rate if rate > 0 else math.inf
        eta_text = "--:--" if not math.isfinite(eta) else f"{int(eta) // 60:02d}:{int(eta) % 60:02d}"
        percent = 100 * sent / self.total
        return (f"replay {percent:5.1f}%  {sent:,}/{self.total:,} bars  {predictions:,} predictions  "
                f"{rate:,.0f} bars/s  ETA {eta_text}")

    def update(self, sent: int, predictions: int) -> None:
        if self.tty:
            text = self.line(sent, predictions)
            self._write("\r" + text.ljust(self.width))
            self.width = len(text)
            return
        decile = 10 * sent // self.total
        if decile > self.decile:
            self.decile = decile
            if decile < 10:  # the last line is `finish`'s, with every prediction counted
                self._write(self.line(sent, predictions) + "\n")

    def finish(self, sent: int, predictions: int) -> None:
        if self.tty:
            self.update(sent, predictions)
            self._write("\n")
        else:
            self.decile = 10
            self._write(self.line(sent, predictions) + "\n")

    def _write(self, text: str) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.stream.write(text)
            self.stream.flush()


async def _tick(progress: Progress, tap: _Tap) -> None:
    while True:
        progress.update(tap.sent, tap.predictions)
        await asyncio.sleep(0.2 if progress.tty else 0.05)


def loopback(config: Config) -> Config:
    """`config` with the broker, the pub/sub proxy and the REST edge on loopback ports the OS picks."""
    return dataclasses.replace(
        config,
        bus=dataclasses.replace(config.bus, broker_bind=(LOOPBACK,), pub_in=LOOPBACK, pub_out=LOOPBACK),
        edge=dataclasses.replace(config.edge, host="127.0.0.1", port=0))


def isolated(config: Config, data_dir: str | Path) -> Config:
    """`loopback` ports and `data_dir` as the data directory: a replay never meets a running service."""
    config = loopback(config)
    return dataclasses.replace(config, service=dataclasses.replace(config.service, data_dir=str(data_dir)))


async def replay(config: Config, bars: Sequence[Bar], *, symbol: str = DEFAULT_SYMBOL,
                 timeframe: str = DEFAULT_TIMEFRAME, rate: float = 0.0, source: str = "bars",
                 progress: Progress | None = None, flow: Flow | None = None) -> dict[str, Any]:
    """Start a kernel from `config` (on `loopback` ports), publish `bars` on ``bar.SYMBOL.TIMEFRAME`` as a
    feed would, collect what comes back, stop the kernel; the report (see `build_report`)."""
    topic = topics.bar(symbol, timeframe)
    flow = flow or Flow()
    if not bars:
        raise ReplayInputError("no bars to replay")
    warnings: list[str] = []
    began = time.perf_counter()
    if progress is not None:
        progress.note(f"replay: starting the service ({config.source}; a fresh registry trains the default "
                      "models first, a few seconds)")
    kernel = Kernel(loopback(config))
    context = zmq.asyncio.Context()
    n = len(bars)
    tap = _Tap(symbol, timeframe, {bar["ts"]: i for i, bar in enumerate(bars)}, np.full(n, np.nan),
               np.full(n, np.nan))
    tasks: list[asyncio.Task[None]] = []
    try:
        await kernel.start()
        startup = time.perf_counter() - began
        pub, sub = _sockets(context, kernel, tap)
        tasks.append(asyncio.create_task(_listen(sub, tap), name="replay-listen"))
        await _handshake(pub, tap, flow.handshake_timeout)
        sub.setsockopt(zmq.UNSUBSCRIBE, PROBE_TOPIC.encode())
        sender = _Sender(pub, topic.encode(), bars, tap, flow, rate, warnings)
        ticker = None
        if progress is not None:
            progress.begin()
            ticker = asyncio.create_task(_tick(progress, tap), name="replay-progress")
            tasks.append(ticker)
        first = time.perf_counter()
        await sender.run()
        sent = time.perf_counter()
        await _drain(tap, n, flow, warnings)
        elapsed = (max(tap.last_message, sent) if tap.acked >= 0 else time.perf_counter()) - first
        if progress is not None and ticker is not None:
            ticker.cancel()
            progress.finish(tap.sent, tap.predictions)
        live = await _live_report(kernel, flow, warnings)
        flow_report = {"window": flow.window, "batch": flow.batch, "rate": rate, "stalls": sender.stalls,
                       "throttled": sender.throttled, "complete": tap.predicted == n - 1}
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        context.destroy(linger=0)
        await kernel.stop()
    return build_report(bars=bars, tap=tap, live=live, symbol=symbol, timeframe=timeframe, source=source,
                        config=config, startup=startup, elapsed=elapsed, flow=flow_report, warnings=warnings)


def _sockets(context: zmq.asyncio.Context, kernel: Kernel,
             tap: _Tap) -> tuple[zmq.asyncio.Socket, zmq.asyncio.Socket]:
    """A PUB socket on the proxy's input, a SUB socket on its output subscribed to the replayed series."""
    pub = context.socket(zmq.PUB)
    sub = context.socket(zmq.SUB)
    for sock in (pub, sub):
        sock.setsockopt(zmq.LINGER, 0)
    pub.setsockopt(zmq.SNDHWM, 0)  # flow control bounds what is queued; nothing is ever dropped here
    sub.setsockopt(zmq.RCVHWM, 0)
    pub.connect(kernel.endpoints["pub_in"][0])
    sub.connect(kernel.endpoints["pub_out"][0])
    for prefix in (tap.feature_topic, tap.prediction_topic, tap.signal_topic, PROBE_TOPIC):
        sub.setsockopt(zmq.SUBSCRIBE, prefix.encode())
    return pub, sub


async def _live_report(kernel: Kernel, flow: Flow, warnings: list[str]) -> dict[str, Any] | None:
    """The ``models`` service's live report with timelines; None (with a warning) without one."""
    try:
        live = await kernel.request("models", "live", {"timelines": True}, timeout=flow.request_timeout)
    except MlpError as exc:
        warnings.append(f"no live report from the models service: {exc.message}")
        return None
    return live if isinstance(live, dict) else None


# -- the report ---------------------------------------------------------------------------------------------


def _percentiles(values: np.ndarray) -> dict[str, float] | None:
    values = values[~np.isnan(values)]
    if not len(values):
        return None
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return {"p50": round(float(p50), 3), "p90": round(float(p90), 3), "p99": round(float(p99), 3),
            "max": round(float(values.max()), 3), "bars": len(values)}


def _baseline(bars: Sequence[Bar], tap: _Tap, horizon: int) -> dict[str, Any] | None:
    """How often the close rose `horizon` bars after a predicted bar (what always guessing scores)."""
    predicted = np.flatnonzero(~np.isnan(tap.answered_at))
    predicted = predicted[predicted + horizon < len(bars)]
    if horizon <= 0 or not len(predicted):
        return None
    close = np.fromiter((bar["close"] for bar in bars), dtype=np.float64, count=len(bars))
    up = float(np.mean(close[predicted + horizon] > close[predicted]))
    return {"horizon": horizon, "labels": len(predicted), "up_rate": round(up, 4),
            "majority_accuracy": round(max(up, 1 - up), 4)}


def _timelines(live: Mapping[str, Any]) -> dict[str, Any]:
    """The service's timelines (sampled every 50 labels), each ending with the final figure."""
    raw = live.get("timelines") or {}
    accuracy: dict[str, list[tuple[float, float]]] = {}
    for model, points in (raw.get("accuracy") or {}).items():
        series = [(float(x), float(y)) for x, y in points]
        score = (live.get("scores") or {}).get(model) or {}
        if score.get("labels") and (not series or series[-1][0] < score["labels"]):
            series.append((float(score["labels"]), float(score["rolling_accuracy"])))
        accuracy[model] = series
    weights: dict[str, dict[str, Any]] = {}
    for ensemble, points in (raw.get("weights") or {}).items():
        state = (live.get("weights") or {}).get(ensemble) or {}
        steps = [(float(x), [float(w) for w in ws]) for x, ws in points]
        if state.get("updates") and (not steps or steps[-1][0] < state["updates"]):
            steps.append((float(state["updates"]), [float(w) for w in state["weights"]]))
        weights[ensemble] = {"members": list(state.get("members") or []), "points": steps}
    return {"accuracy": accuracy, "weights": weights}


def build_report(*, bars: Sequence[Bar], tap: _Tap, live: Mapping[str, Any] | None, symbol: str,
                 timeframe: str, source: str, config: Config, startup: float, elapsed: float, flow: Mapping[str, Any],
                 warnings: Sequence[str]) -> dict[str, Any]:
    """Every figure of a replay, JSON-ready."""
    n = len(bars)
    service = dict(live.get("counts") or {}) if live else {}
    attached = list(live.get("attached") or []) if live else []
    horizon = int(attached[0].get("horizon") or 0) if len(attached) == 1 else 0
    elapsed = max(elapsed, 1e-9)
    latency = (tap.answered_at - tap.sent_at) * 1000
    return {
        "command": "replay", "version": VERSION, "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": config.source, "source": source, "symbol": symbol, "timeframe": timeframe,
        "bars": {"count": n, "first_ts": bars[0]["ts"], "last_ts": bars[-1]["ts"],
                 "first_close": bars[0]["close"], "last_close": bars[-1]["close"]},
        "counts": {"bars": n, "sent": tap.sent, "feature_rows": tap.feature_rows,
                   "complete_feature_rows": tap.complete_rows, "predictions": tap.predictions,
                   "predictions_by_model": dict(tap.by_model), "lookback": _lookback(bars, tap),
                   "signals": sum(tap.signals.values()), "signals_by_side": dict(tap.signals),
                   "labels": service.get("labels"), "other_timeframes": tap.other_timeframes,
                   "malformed": tap.malformed},
        "service_counts": service,
        "throughput": {"startup_s": round(startup, 3), "elapsed_s": round(elapsed, 3),
                       "bars_per_s": round(tap.sent / elapsed, 1),
                       "predictions_per_s": round(tap.predictions / elapsed, 1)},
        "latency_ms": _percentiles(latency),
        "scores": dict(live.get("scores") or {}) if live else {},
        "baseline": _baseline(bars, tap, horizon),
        "weights": dict(live.get("weights") or {}) if live else {},
        "timelines": _timelines(live) if live else {"accuracy": {}, "weights": {}},
        "drift": dict(live.get("drift") or {}) if live else {},
        "attached": attached,
        "flow": dict(flow),
        "warnings": list(warnings),
    }


def _lookback(bars: Sequence[Bar], tap: _Tap) -> int | None:
    """Bars before the first prediction (the feature pipeline's warm-up)."""
    if tap.first_prediction_ts is None:
        return None
    return next(i for i, bar in enumerate(bars) if bar["ts"] == tap.first_prediction_ts)


def _clean(value: Any) -> Any:
    """`value` with NaN and infinities as null (JSON has neither)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def write_report(report: Mapping[str, Any], out: str | Path) -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.html`` into `out` (created), each atomically; their paths."""
    folder = Path(out)
    paths = folder / "report.json", folder / "report.html"
    atomic_write(paths[0], json.dumps(_clean(report), indent=2, allow_nan=False).encode(), 0o644)
    atomic_write(paths[1], render_html(report).encode(), 0o644)
    return paths


def _number(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.{digits}f}" if math.isfinite(value) else "-"


def _final_weights(report: Mapping[str, Any]) -> dict[str, float]:
    """Member -> final weight, over every ensemble (a member of several keeps the first)."""
    out: dict[str, float] = {}
    for state in report.get("weights", {}).values():
        for member, weight in zip(state.get("members", []), state.get("weights", []), strict=False):
            out.setdefault(str(member).partition("@")[0], float(weight))
    return out


def score_rows(report: Mapping[str, Any]) -> list[list[str]]:
    """Per model: name, labels, accuracy, rolling accuracy, log loss, drifts, final ensemble weight."""
    weights = _final_weights(report)
    scores: Mapping[str, Any] = report.get("scores", {})
    ensembles = [m for m in scores if m in report.get("weights", {})]
    rows = []
    for model in [*ensembles, *sorted(m for m in scores if m not in ensembles)]:
        s = scores[model]
        rows.append([model, _number(s.get("labels")), _number(s.get("accuracy")),
                     _number(s.get("rolling_accuracy")), _number(s.get("log_loss")), _number(s.get("drifts")),
                     _number(weights.get(model))])
    return rows


SCORE_HEADER = ["model", "labels", "accuracy", "rolling", "log loss", "drifts", "weight"]


def summary(report: Mapping[str, Any]) -> str:
    """A short plain-text summary: the figures and a table of the models."""
    counts, speed = report["counts"], report["throughput"]
    lines = [f"replay {report['symbol']} {report['timeframe']} from {report['source']}: "
             f"{counts['bars']:,} bars, {counts['predictions']:,} predictions, {counts['signals']:,} signals, "
             f"{_number(counts['labels'])} labels, {speed['bars_per_s']:,.0f} bars/s "
             f"({speed['elapsed_s']:.1f} s after a {speed['startup_s']:.1f} s start)"]
    rows = [SCORE_HEADER, *score_rows(report)]
    if len(rows) > 1:
        widths = [max(len(row[i]) for row in rows) for i in range(len(SCORE_HEADER))]
        for row in rows:
            lines.append("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                                   for i, (cell, w) in enumerate(zip(row, widths, strict=True))))
    baseline = report.get("baseline")
    if baseline:
        lines.append(f"always guessing the commoner direction: {baseline['majority_accuracy']:.4f} "
                     f"(up {baseline['up_rate']:.4f} of {baseline['labels']:,} labels)")
    lines += [f"warning: {text}" for text in report.get("warnings", [])]
    return "\n".join(lines)


# -- charts -------------------------------------------------------------------------------------------------

PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
           "#9c755f", "#bab0ac")

Series = Mapping[str, Sequence[tuple[float, float]]]
DASHES = ("2 3", "7 4", "10 3 2 3")
SAMPLED = "no data yet: the service samples these every 50 labels"


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About `count` round tick values covering ``[low, high]`` (steps of 1, 2, 2.5 or 5 times 10^k).

    >>> nice_ticks(0.0, 1.0)
    [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    >>> nice_ticks(50, 380, 4)
    [0.0, 100.0, 200.0, 300.0, 400.0]
    """
    if not high > low:
        high = low + 1.0
    raw = (high - low) / max(1, count)
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1.0, 2.0, 2.5, 5.0, 10.0) if m * power >= raw * 0.999)
    first = math.floor(low / step + 1e-9) * step
    ticks: list[float] = []
    value = first
    while value <= high + step * 1e-9 or len(ticks) < 2:
        ticks.append(round(value, 12))
        value = first + len(ticks) * step
    if ticks[-1] < high:
        ticks.append(round(first + len(ticks) * step, 12))
    return ticks


def _tick_label(value: float, step: float) -> str:
    decimals = max(0, -math.floor(math.log10(step) + 1e-9)) if step > 0 else 0
    if abs(step * 10**decimals - round(step * 10**decimals)) > 1e-9:
        decimals += 1
    return f"{value:,.{decimals}f}"


@dataclass(frozen=True)
class _Frame:
    """The plot area of a chart and the mapping of data to pixels."""

    left: float
    top: float
    width: float
    height: float
    x: tuple[float, float]
    y: tuple[float, float]

    def px(self, x: float, y: float) -> tuple[float, float]:
        fx = (x - self.x[0]) / (self.x[1] - self.x[0])
        fy = (y - self.y[0]) / (self.y[1] - self.y[0])
        return round(self.left + fx * self.width, 1), round(self.top + (1 - fy) * self.height, 1)


def _axes(frame: _Frame, xticks: list[float], yticks: list[float], x_label: str, y_label: str) -> list[str]:
    out = []
    bottom, right = frame.top + frame.height, frame.left + frame.width
    for i, value in enumerate(yticks):
        _, y = frame.px(frame.x[0], value)
        label = _tick_label(value, yticks[1] - yticks[0] if len(yticks) > 1 else 1.0)
        out.append(f'<line x1="{frame.left}" y1="{y}" x2="{right}" y2="{y}" class="grid"/>' if i else "")
        out.append(f'<text x="{frame.left - 6}" y="{y + 4}" text-anchor="end">{label}</text>')
    for value in xticks:
        x, _ = frame.px(value, frame.y[0])
        label = _tick_label(value, xticks[1] - xticks[0] if len(xticks) > 1 else 1.0)
        out.append(f'<line x1="{x}" y1="{bottom}" x2="{x}" y2="{bottom + 5}" class="axis"/>')
        out.append(f'<text x="{x}" y="{bottom + 18}" text-anchor="middle">{label}</text>')
    out.append(f'<line x1="{frame.left}" y1="{bottom}" x2="{right}" y2="{bottom}" class="axis"/>')
    out.append(f'<line x1="{frame.left}" y1="{frame.top}" x2="{frame.left}" y2="{bottom}" class="axis"/>')
    out.append(f'<text x="{frame.left + frame.width / 2}" y="{bottom + 36}" text-anchor="middle">'
               f"{html.escape(x_label)}</text>")
    middle = frame.top + frame.height / 2
    out.append(f'<text x="14" y="{middle}" text-anchor="middle" transform="rotate(-90 14 {middle})">'
               f"{html.escape(y_label)}</text>")
    return [part for part in out if part]


def _lines(frame: _Frame, series: Series, colors: Mapping[str, str]) -> list[str]:
    out = []
    for name, points in series.items():
        if not points:
            continue
        color = colors[name]
        coords = [frame.px(x, y) for x, y in points]
        path = " ".join(f"{x},{y}" for x, y in coords)
        out.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2">'
                   f"<title>{html.escape(name)}</title></polyline>")
        if len(coords) <= 60:
            out += [f'<circle cx="{x}" cy="{y}" r="2.5" fill="{color}"/>' for x, y in coords]
    return out


def _legend(names: Sequence[str], colors: Mapping[str, str], references: Sequence[str], left: float,
            top: float) -> list[str]:
    out = []
    for i, name in enumerate([*names, *references]):
        y = top + 18 * i
        look = (f'stroke="{colors[name]}" stroke-width="3"' if i < len(names) else
                f'class="reference" stroke-dasharray="{DASHES[(i - len(names)) % len(DASHES)]}"')
        out.append(f'<line x1="{left}" y1="{y}" x2="{left + 18}" y2="{y}" {look}/>')
        out.append(f'<text x="{left + 24}" y="{y + 4}">{html.escape(name)}</text>')
    return out


def svg_line_chart(series: Series, *, title: str, x_label: str, y_label: str,
                   y_range: tuple[float, float] | None = None, references: Sequence[tuple[float, str]] = (),
                   colors: Mapping[str, str] | None = None, empty: str = "no data",
                   width: int = 780, height: int = 320) -> str:
    """An inline SVG line chart: one polyline per series (``name -> [(x, y), ...]``), axes with round ticks,
    dashed horizontal reference lines ``(y, label)`` and a legend; no script, no external asset. The y axis
    spans `y_range`, or the data and the references."""
    names = list(series)
    colors = {name: (colors or {}).get(name) or PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}
    labels = [label for _, label in references]
    legend_width = 24 + 7 * max((len(n) for n in [*names, *labels]), default=0) + 12
    frame_left, frame_top = 64.0, 34.0
    plot_width = width - frame_left - 16 - legend_width
    plot_height = height - frame_top - 48
    parts = [f'<svg viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
             f'aria-label="{html.escape(title)}" class="chart">',
             f"<title>{html.escape(title)}</title>",
             f'<text x="{frame_left}" y="20" class="title">{html.escape(title)}</text>']
    xs = [x for points in series.values() for x, _ in points]
    ys = [y for points in series.values() for _, y in points] + [y for y, _ in references]
    if not xs:
        parts.append(f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" class="empty">'
                     f"{html.escape(empty)}</text></svg>")
        return "\n".join(parts)
    low, high = y_range if y_range is not None else (min(ys), max(ys))
    xticks, yticks = nice_ticks(min(xs), max(xs)), nice_ticks(low, high)
    frame = _Frame(frame_left, frame_top, plot_width, plot_height, (xticks[0], xticks[-1]),
                   (yticks[0], yticks[-1]))
    parts += _axes(frame, xticks, yticks, x_label, y_label)
    for i, (value, label) in enumerate(references):
        x0, y = frame.px(frame.x[0], value)
        x1, _ = frame.px(frame.x[1], value)
        parts.append(f'<line x1="{x0}" y1="{y}" x2="{x1}" y2="{y}" class="reference" '
                     f'stroke-dasharray="{DASHES[i % len(DASHES)]}">'
                     f"<title>{html.escape(label)}</title></line>")
    parts += _lines(frame, series, colors)
    parts += _legend(names, colors, labels, frame_left + plot_width + 20, frame_top + 8)
    parts.append("</svg>")
    return "\n".join(parts)


# -- the page -----------------------------------------------------------------------------------------------

_STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 60rem;
       color: #1d232a; padding: 0 1rem; }
h1 { font-size: 1.5rem; margin-bottom: 0.2rem; } h2 { font-size: 1.15rem; margin-top: 2rem; }
.meta { color: #5b6670; margin-top: 0; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; }
th, td { padding: 0.25rem 0.8rem; border-bottom: 1px solid #e1e5e8; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f3f5f7; font-weight: 600; }
.chart { display: block; margin: 0.5rem 0 1.5rem; font-size: 12px; fill: #1d232a; }
.chart .title { font-size: 14px; font-weight: 600; }
.chart .axis { stroke: #1d232a; stroke-width: 1; } .chart .grid { stroke: #e1e5e8; stroke-width: 1; }
.chart .reference { stroke: #6b757d; stroke-width: 1.2; }
.chart .empty { fill: #5b6670; }
.warnings li { color: #9a3412; }
"""


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(cell))}</th>" for cell in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(cell))}</td>" for cell in row) + "</tr>"
                   for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _figure_rows(report: Mapping[str, Any]) -> list[tuple[str, str]]:
    counts, speed, flow = report["counts"], report["throughput"], report.get("flow", {})
    sides = ", ".join(f"{side} {count:,}" for side, count in sorted(counts.get("signals_by_side", {}).items()))
    rows = [("bars replayed", _number(counts["bars"])),
            ("feature rows",
             f"{_number(counts['feature_rows'])} ({_number(counts['complete_feature_rows'])} complete)"),
            ("predictions", _number(counts["predictions"])),
            ("bars before the first prediction", _number(counts.get("lookback"))),
            ("signals", _number(counts["signals"]) + (f" ({sides})" if sides else "")),
            ("labels", _number(counts.get("labels"))),
            ("service start", f"{speed['startup_s']:.2f} s"),
            ("replay time", f"{speed['elapsed_s']:.2f} s"),
            ("throughput, end to end",
             f"{speed['bars_per_s']:,.1f} bars/s, {speed['predictions_per_s']:,.1f} predictions/s")]
    latency = report.get("latency_ms")
    if latency:
        rows.append((f"bar to prediction (up to {flow.get('window')} bars in flight)",
                     f"p50 {latency['p50']:.2f} ms, p90 {latency['p90']:.2f} ms, p99 {latency['p99']:.2f} ms, "
                     f"max {latency['max']:.2f} ms"))
    baseline = report.get("baseline")
    if baseline:
        rows.append(("commoner direction", f"{baseline['majority_accuracy']:.4f} (up {baseline['up_rate']:.4f}, "
                                           f"horizon {baseline['horizon']})"))
    rate = f"{flow['rate']:g} bars/s" if flow.get("rate") else "as fast as the service keeps up"
    rows.append(("flow", f"window {flow.get('window')}, batch {flow.get('batch')}, {rate}, "
                         f"stalls {flow.get('stalls')}"))
    return rows


def _charts(report: Mapping[str, Any]) -> list[str]:
    timelines = report.get("timelines", {})
    accuracy: Mapping[str, Any] = timelines.get("accuracy", {})
    weights: Mapping[str, Any] = timelines.get("weights", {})
    members = [str(m).partition("@")[0] for state in weights.values() for m in state.get("members", [])]
    order = [*weights, *sorted(set(accuracy) | set(members))]
    colors = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(dict.fromkeys(order))}
    baseline = report.get("baseline")
    references = [(0.5, "coin flip")]
    if baseline and abs(baseline["majority_accuracy"] - 0.5) > 0.005:
        references.append((baseline["majority_accuracy"], "commoner direction"))
    series = {model: [(float(x), float(y)) for x, y in accuracy[model]]
              for model in sorted(accuracy, key=lambda m: (m not in weights, m))}
    window = next((s.get("window") for s in report.get("scores", {}).values()), None)
    charts = [svg_line_chart(series, title=f"Rolling accuracy (last {window or '?'} labels) per model",
                             x_label="labels", y_label="rolling accuracy", references=references,
                             colors=colors, empty=SAMPLED)]
    if not weights:
        charts.append(svg_line_chart({}, title="Ensemble weights", x_label="updates", y_label="weight",
                                     empty="no ensemble is attached to the bars"))
    for ensemble, state in weights.items():
        names = [str(m).partition("@")[0] for m in state.get("members", [])]
        member_series = {name: [(float(x), float(ws[j])) for x, ws in state.get("points", []) if j < len(ws)]
                         for j, name in enumerate(names)}
        charts.append(svg_line_chart(member_series, title=f"Weights of {ensemble}'s members", x_label="updates",
                                     y_label="weight", colors=colors, empty=SAMPLED))
    return charts


def render_html(report: Mapping[str, Any]) -> str:
    """The report as one self-contained HTML page: inline CSS and SVG charts, no script, no external asset."""
    e = html.escape
    title = f"Replay of {report['symbol']} {report['timeframe']}"
    bars = report["bars"]
    first = datetime.fromtimestamp(bars["first_ts"] / 1000, UTC).isoformat(timespec="minutes")
    last = datetime.fromtimestamp(bars["last_ts"] / 1000, UTC).isoformat(timespec="minutes")
    warnings = report.get("warnings", [])
    parts = [
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        f"<title>{e(title)}</title>", f"<style>{_STYLE}</style>", "</head>", "<body>",
        f"<h1>{e(title)}</h1>",
        f'<p class="meta">{e(str(report["source"]))}, bars from {e(first)} to {e(last)}; configuration '
        f"{e(str(report['config']))}; ml-processing {e(str(report['version']))}; "
        f"written {e(str(report['created']))}</p>",
        "<h2>Figures</h2>", _table(["figure", "value"], _figure_rows(report)),
        "<h2>Models (prequential: each scored on a label before learning from it)</h2>",
        _table(SCORE_HEADER, score_rows(report)) if report.get("scores") else "<p>No scores: no live model.</p>",
        "<h2>Over time</h2>", *_charts(report),
    ]
    if warnings:
        parts += ["<h2>Warnings</h2>", '<ul class="warnings">', *(f"<li>{e(w)}</li>" for w in warnings), "</ul>"]
    parts += ["</body>", "</html>", ""]
    return "\n".join(parts)


# -- the command --------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``ml-processing replay`` (``--config`` is added by the caller)."""
    parser.add_argument("--csv", metavar="FILE", help="bars to replay: a CSV with ts (or timestamp/date), open, "
                        "high, low, close, volume (default: a seeded synthetic market)")
    parser.add_argument("--bars", type=int, metavar="N", help=f"bars to replay (default: {DEFAULT_BARS:,} "
                        "synthetic ones; with --csv every row, or the first N)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, metavar="S",
                        help=f"seed of the synthetic market (default: {DEFAULT_SEED})")
    parser.add_argument("--symbol", default=DEFAULT_SYMBOL, metavar="SYM",
                        help=f"symbol of the replayed series (default: {DEFAULT_SYMBOL})")
    parser.add_argument("--timeframe", default=DEFAULT_TIMEFRAME, metavar="TF",
                        help=f"timeframe of the bars (default: {DEFAULT_TIMEFRAME})")
    parser.add_argument("--out", default=DEFAULT_OUT, metavar="DIR",
                        help=f"where report.json and report.html go (default: ./{DEFAULT_OUT})")
    parser.add_argument("--rate", type=float, default=0.0, metavar="BARS_PER_S",
                        help="bars per second (default 0: as fast as the service keeps up)")
    parser.add_argument("--data-dir", metavar="DIR",
                        help="data directory of the replayed service (default: a fresh temporary one, deleted "
                             "afterwards)")
    parser.add_argument("--no-progress", action="store_true", help="no progress line on stderr")


@dataclass(frozen=True)
class Job:
    """A checked replay command line."""

    config: Config
    bars: list[Bar]
    source: str
    symbol: str
    timeframe: str
    rate: float
    out: Path
    data_dir: Path | None
    progress: bool


def prepare(args: argparse.Namespace, config: Config, *, stderr: TextIO | None = None) -> Job:
    """Check the arguments and read or make the bars; `ReplayInputError` for anything unusable."""
    stderr = stderr or sys.stderr
    try:
        topics.bar(args.symbol, args.timeframe)
    except BadRequest as exc:
        raise ReplayInputError(exc.message) from None
    step = timeframe_ms(args.timeframe)
    if args.bars is not None and not 1 <= args.bars <= MAX_BARS:
        raise ReplayInputError(f"--bars must be 1 to {MAX_BARS:,}, got {args.bars}")
    if not (math.isfinite(args.rate) and args.rate >= 0):
        raise ReplayInputError(f"--rate must be 0 (as fast as possible) or a positive number, got {args.rate}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ReplayInputError(f"--out {out} exists and is not a directory")
    if args.csv is None:
        bars = synthetic_bars(args.bars or DEFAULT_BARS, args.seed, step_ms=step)
        source = f"synthetic market, seed {args.seed}"
    else:
        read = read_csv(args.csv, limit=args.bars)
        _tell_skipped(read, stderr)
        bars, source = read.bars, f"CSV {args.csv}"
        _check_spacing(bars, args.timeframe, step, stderr)
    data_dir = Path(args.data_dir) if args.data_dir else None
    return Job(config, bars, source, args.symbol, args.timeframe, args.rate, out, data_dir,
               not args.no_progress)


def _tell_skipped(read: CsvBars, stderr: TextIO) -> None:
    for text in read.skipped[:20]:
        print(f"ml-processing replay: skipped {text}", file=stderr)
    if len(read.skipped) > 20:
        print(f"ml-processing replay: ... and {len(read.skipped) - 20} more skipped rows", file=stderr)
    if read.reordered:
        print("ml-processing replay: the rows were not in time order; replayed sorted by time", file=stderr)


def _check_spacing(bars: Sequence[Bar], timeframe: str, step: int, stderr: TextIO) -> None:
    """Warn when the bars' usual spacing is not the timeframe."""
    if len(bars) < 3:
        return
    spacing = int(np.median(np.diff([bar["ts"] for bar in bars])))
    if spacing != step:
        print(f"ml-processing replay: the bars are usually {spacing / 1000:g} s apart, but --timeframe "
              f"{timeframe} is {step / 1000:g} s", file=stderr)


async def _interruptible(coro: Coroutine[Any, Any, T]) -> T:
    """Await `coro`; SIGINT or SIGTERM cancels it (its cleanup runs) and raises `Interrupted`."""
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(coro)
    handled = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, task.cancel)
            handled.append(sig)
    try:
        return await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise  # this task itself is being cancelled, not by a signal
        raise Interrupted from None
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)


async def execute(job: Job, *, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """Run a prepared replay, write the report, print its paths and a summary; the exit code (130 when
    interrupted by SIGINT or SIGTERM: the service is stopped, the temporary data removed, no report)."""
    stdout, stderr = stdout or sys.stdout, stderr or sys.stderr
    data_dir = job.data_dir or Path(tempfile.mkdtemp(prefix="mlp-replay-"))
    progress = Progress(len(job.bars), stderr) if job.progress else None
    try:
        report = await _interruptible(replay(
            isolated(job.config, data_dir), job.bars, symbol=job.symbol, timeframe=job.timeframe, rate=job.rate,
            source=job.source, progress=progress))
    except ReplayError as exc:
        print(f"ml-processing replay: {exc}", file=stderr)
        return 1
    except Interrupted:
        print("\nml-processing replay: interrupted; no report written", file=stderr)
        return 130
    finally:
        if job.data_dir is None:
            shutil.rmtree(data_dir, ignore_errors=True)
    try:
        paths = write_report(report, job.out)
    except OSError as exc:
        print(f"ml-processing replay: cannot write the report into {job.out}: {exc}", file=stderr)
        return 1
    print(summary(report), file=stdout)
    print(f"report: {paths[0]}\n        {paths[1]}", file=stdout)
    return 0
