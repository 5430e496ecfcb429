"""The replay itself: an in-process service, bars published to it as a feed would, what comes back collected.

`replay` starts a `Kernel` from the configuration on `loopback` endpoints (ports the OS picks), kept apart
from any running service, and talks to it over ZeroMQ only: a PUB socket sends each bar as msgpack
``{ts, open, high, low, close, volume}`` on ``bar.SYMBOL.TIMEFRAME`` to the proxy's input, and a SUB socket
on its output receives ``feature.SYMBOL.TIMEFRAME`` (one row per bar, from the first bar),
``prediction.SYMBOL`` (from the end of the feature pipeline's lookback) and ``signal.SYMBOL`` (`Tap`).

* Slow joiner: a probe on ``kernel.replay`` is sent until it comes back (bounded), so no bar is published
  before both sockets are connected and subscribed.
* Flow: bars go out in batches; at most ``window`` bars are in flight, a bar counting as done once its
  feature row or prediction has come back. If nothing comes back for ``stall_timeout`` seconds while the
  window is full, the replay stops waiting for acknowledgements (reported as a warning), so it never hangs.
  A rate paces the bars in time instead of as fast as the service keeps up.
* Authentication: with ``[security] auth`` on (``ml-processing replay --auth``) the service serves ZeroMQ
  over CURVE only; the replay allows a key of its own (role ``compute``, which may publish and subscribe) in
  the service's allow-list for the run, and its feed and subscriber connect with it (`_replay_keys`).
* End: the replay waits (bounded) for the last bar's prediction, asks the ``models`` service for its live
  report with timelines (`ml_processing.sdk.services.models.Models`), stops the kernel (in-flight requests
  drain, state is saved) and builds the report (`build_report`).

The replay runs the service in its own process, so this module imports the kernel: the one place a plugin
imports ``ml_processing.core.kernel`` (everything else comes from the SDK, but the command line's
`Command`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
import zmq.asyncio

from ml_processing.sdk import Config, MlpError, codec, topics
from ml_processing.sdk.service import Kernel  # a command that runs a private service builds its kernel
from ml_processing.sdk.services.models import LiveReport, Models

from .progress import Progress
from .report import build_report
from .sources import Bar, ReplayInputError
from .tap import PROBE_TOPIC, Tap, listen
from .trading import DEFAULT_COST_BPS

DEFAULT_SYMBOL = "REPLAY"
DEFAULT_TIMEFRAME = "1m"
LOOPBACK = "tcp://127.0.0.1:*"


class ReplayError(Exception):
    """The replay could not run (exit code 1)."""


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


async def _wait(event: asyncio.Event, seconds: float) -> bool:
    """Wait for `event` (cleared first) up to `seconds`; whether it was set."""
    event.clear()
    try:
        async with asyncio.timeout(max(0.0, seconds)):
            await event.wait()
    except TimeoutError:
        return False
    return True


async def _handshake(pub: zmq.asyncio.Socket, tap: Tap, timeout: float) -> None:
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
    tap: Tap
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


async def _drain(tap: Tap, n: int, flow: Flow, warnings: list[str]) -> None:
    """Wait for the last bar's prediction, until nothing has come back for ``idle_timeout`` (bounded)."""
    deadline = time.monotonic() + flow.drain_timeout
    while tap.predicted < n - 1:
        left = deadline - time.monotonic()
        if left <= 0:
            warnings.append(f"the last prediction did not arrive within {flow.drain_timeout:g} s")
            return
        if not await _wait(tap.changed, min(flow.idle_timeout, left)):
            return


async def _tick(progress: Progress, tap: Tap) -> None:
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
                 progress: Progress | None = None, flow: Flow | None = None, cost_bps: float = DEFAULT_COST_BPS,
                 periods_per_year: float | None = None) -> dict[str, Any]:
    """Start a kernel from `config` (on `loopback` ports), publish `bars` on ``bar.SYMBOL.TIMEFRAME`` as a
    feed would, collect what comes back, stop the kernel; the report (see `build_report`: `cost_bps` and
    `periods_per_year`, None for the timeframe's, set its trading figures)."""
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
    forget: Callable[[], None] = _nothing
    context = zmq.asyncio.Context()
    n = len(bars)
    tap = Tap.of(symbol, timeframe, [bar["ts"] for bar in bars])
    tasks: list[asyncio.Task[None]] = []
    try:
        await kernel.start()
        startup = time.perf_counter() - began
        keys, forget = _replay_keys(kernel)
        pub, sub = _sockets(context, kernel, tap, keys)
        tasks.append(asyncio.create_task(listen(sub, tap), name="replay-listen"))
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
        forget()
    return build_report(bars=bars, tap=tap, live=live, symbol=symbol, timeframe=timeframe, source=source,
                        config_source=config.source, startup=startup, elapsed=elapsed, flow=flow_report,
                        warnings=warnings, cost_bps=cost_bps, periods_per_year=periods_per_year)


def _nothing() -> None:
    pass


#: The CURVE keys of a client: (the service's public key, the client's public key, its secret key), Z85.
ClientKeys = tuple[str, str, str]


def _replay_keys(kernel: Kernel) -> tuple[ClientKeys | None, Callable[[], None]]:
    """With authentication on: a key pair allowed (role ``compute``: it may publish and subscribe) in the
    started service's allow-list for this run, and what removes it again; (None, nothing to do) otherwise."""
    if not kernel.config.security.auth:
        return None, _nothing
    ring = kernel.security.keys
    public, secret = ring.add_client("replay", ["compute"])
    assert secret is not None  # a new pair

    def forget() -> None:
        ring.remove(public)

    return (ring.server()[0], public, secret), forget


def _sockets(context: zmq.asyncio.Context, kernel: Kernel, tap: Tap,
             keys: ClientKeys | None = None) -> tuple[zmq.asyncio.Socket, zmq.asyncio.Socket]:
    """A PUB socket on the proxy's input, a SUB socket on its output subscribed to the replayed series
    (CURVE clients with `keys` when the service authenticates)."""
    pub = context.socket(zmq.PUB)
    sub = context.socket(zmq.SUB)
    for sock in (pub, sub):
        sock.setsockopt(zmq.LINGER, 0)
        if keys is not None:  # a CURVE client: the service's public key, then the client's own pair
            for option, key in zip((zmq.CURVE_SERVERKEY, zmq.CURVE_PUBLICKEY, zmq.CURVE_SECRETKEY), keys, strict=True):
                sock.setsockopt(option, key.encode())
    pub.setsockopt(zmq.SNDHWM, 0)  # flow control bounds what is queued; nothing is ever dropped here
    sub.setsockopt(zmq.RCVHWM, 0)
    pub.connect(kernel.endpoints["pub_in"][0])
    sub.connect(kernel.endpoints["pub_out"][0])
    for prefix in tap.prefixes:
        sub.setsockopt(zmq.SUBSCRIBE, prefix.encode())
    return pub, sub


async def _live_report(kernel: Kernel, flow: Flow, warnings: list[str]) -> LiveReport | None:
    """The ``models`` service's live report with timelines; None (with a warning) without one."""
    try:
        live = await Models(kernel.request, timeout=flow.request_timeout).live(timelines=True)
    except MlpError as exc:
        warnings.append(f"no live report from the models service: {exc.message}")
        return None
    if not isinstance(live, dict):  # a models service of another plugin that answers otherwise
        warnings.append(f"the models service's live report is not a map: {live!r:.60}")
        return None
    return live
