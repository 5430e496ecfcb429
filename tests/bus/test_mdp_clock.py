"""Heartbeats and expiry run on the injected clock: tests move time instead of sleeping through it.

The intervals below are long in clock time (a worker expires after 50 s, a broker is silent after 30 s)
and nothing here waits for them in real time: only advancing the clock makes them happen.
"""

from __future__ import annotations

import asyncio

import zmq
import zmq.asyncio

from ml_processing.bus import mdp
from ml_processing.core.clock import ManualClock

from .conftest import StartBroker
from .helpers import RawWorker, echo, recv, wait_until

SLOW_HEARTBEAT = 10.0
LIVENESS = 5


async def test_worker_expires_when_the_clock_passes_its_liveness(zctx: zmq.asyncio.Context,
                                                                 start_broker: StartBroker) -> None:
    clock = ManualClock()
    broker = await start_broker(heartbeat_interval=SLOW_HEARTBEAT, liveness=LIVENESS, clock=clock)
    raw = RawWorker(zctx, broker.bound[0], b"frozen")
    try:
        await raw.ready()
        await wait_until(lambda: broker.has_service("frozen"), what="raw worker registered")
        clock.advance(SLOW_HEARTBEAT * LIVENESS - SLOW_HEARTBEAT)  # a heartbeat is due, the expiry is not
        heartbeat = await recv(raw.sock)  # the broker's next tick ran on the advanced clock
        alive_before_expiry = broker.has_service("frozen")
        clock.advance(2 * SLOW_HEARTBEAT)
        await wait_until(lambda: broker.stats.workers_expired == 1, timeout=3.0, what="worker expired")
    finally:
        raw.close()

    assert heartbeat == [b"MDPW02", b"\x05"]
    assert alive_before_expiry is True
    assert broker.has_service("frozen") is False


async def test_broker_accepts_a_bare_monotonic_callable(zctx: zmq.asyncio.Context,
                                                        start_broker: StartBroker) -> None:
    now = [0.0]
    broker = await start_broker(heartbeat_interval=SLOW_HEARTBEAT, liveness=LIVENESS, clock=lambda: now[0])
    raw = RawWorker(zctx, broker.bound[0], b"callable")
    try:
        await raw.ready()
        await wait_until(lambda: broker.has_service("callable"), what="raw worker registered")
        now[0] = SLOW_HEARTBEAT * LIVENESS + 1.0
        await wait_until(lambda: broker.stats.workers_expired == 1, timeout=3.0, what="worker expired")
    finally:
        raw.close()

    assert broker.has_service("callable") is False


async def test_worker_reconnects_when_the_clock_says_the_broker_is_silent(zctx: zmq.asyncio.Context) -> None:
    clock = ManualClock()
    router = zctx.socket(zmq.ROUTER)  # a broker that never answers
    router.setsockopt(zmq.LINGER, 0)
    router.bind("tcp://127.0.0.1:*")
    worker = mdp.Worker(zctx, router.getsockopt_string(zmq.LAST_ENDPOINT), "lonely", echo,
                        heartbeat_interval=SLOW_HEARTBEAT, liveness=3, reconnect_delay=0.01, clock=clock)
    running = asyncio.create_task(worker.run())
    try:
        first = await recv(router)
        clock.advance(SLOW_HEARTBEAT * 3 + 1.0)  # past liveness: heartbeat due, and the broker is silent
        frames = [await recv(router)]
        while frames[-1][1:3] != [b"MDPW02", b"\x01"]:  # the heartbeat, then READY on a fresh socket
            frames.append(await recv(router))
    finally:
        worker.stop()
        await asyncio.wait_for(running, 3.0)
        router.close(linger=0)

    assert first[1:] == [b"MDPW02", b"\x01", b"lonely"]
    assert [b"MDPW02", b"\x05"] in [f[1:] for f in frames]
    assert frames[-1][0] != first[0]  # another identity: the worker reconnected
    assert worker.reconnects == 1
