"""The MDP/0.2 worker: serves one service for a (usually remote) broker, heartbeating both ways."""

from __future__ import annotations

import asyncio
import os

import structlog
import zmq
import zmq.asyncio

from .clock import ClockLike, monotonic_of
from .frames import DISCONNECT, EMPTY, FINAL, HEARTBEAT, READY, W_REQUEST, WORKER, ZERO_COPY, CurveKeys
from .serving import LocalService, serve_request

log = structlog.get_logger(__name__)


class Worker:
    """An asyncio MDP/0.2 worker serving one service for a (usually remote) broker.

    The broker gives a worker one request at a time; heartbeats keep flowing while a request runs. When
    the broker falls silent for ``liveness`` heartbeat intervals, or says DISCONNECT, the worker
    reconnects with a fresh socket and says READY again. `stop` lets the request in progress finish (up
    to ``drain_timeout``) and reply before the worker says DISCONNECT. Heartbeats and the broker's
    silence are measured on `clock` (anything with ``monotonic()``, or a callable; real time by default).
    """

    def __init__(self, context: zmq.asyncio.Context, broker: str, service: str, handler: LocalService, *,
                 heartbeat_interval: float = 2.5, liveness: int = 3, reconnect_delay: float = 0.1,
                 drain_timeout: float = 10.0, clock: ClockLike | None = None, keys: CurveKeys | None = None,
                 identity_prefix: bytes = b"") -> None:
        self._context = context
        self.keys = keys  # CURVE: a broker with authentication on takes READY only from a worker-role key
        self.broker = broker
        self.identity_prefix = identity_prefix  # the broker can drop a whole process's workers by it
        self.service = service
        self._handler = handler
        self.heartbeat_interval = heartbeat_interval
        self.liveness = liveness
        self.reconnect_delay = reconnect_delay
        self.drain_timeout = drain_timeout
        self._monotonic = monotonic_of(clock)
        self._stopped = False
        self._busy: asyncio.Task[None] | None = None
        self.requests = 0
        self.reconnects = 0
        self.malformed = 0

    def _count_malformed(self) -> None:
        self.malformed += 1

    def stop(self) -> None:
        self._stopped = True

    async def run(self) -> None:
        delay = self.reconnect_delay
        while not self._stopped:
            sock = self._context.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            if self.identity_prefix:
                sock.setsockopt(zmq.ROUTING_ID, self.identity_prefix + os.urandom(8).hex().encode())
            if self.keys is not None:
                self.keys.apply(sock)
            sock.connect(self.broker)
            try:
                served = await self._serve(sock)
            finally:
                if self._busy is not None:
                    await asyncio.wait([self._busy], timeout=self.heartbeat_interval)
                sock.close(linger=0)
            if self._stopped:
                return
            self.reconnects += 1
            delay = self.reconnect_delay if served else min(delay * 2, self.heartbeat_interval)
            log.warning("worker_reconnecting", service=self.service, broker=self.broker, delay=delay)
            await asyncio.sleep(delay)

    async def _serve(self, sock: zmq.asyncio.Socket) -> bool:
        """Serve on one connection until the broker is lost; True if any message came from it."""
        service = self.service.encode()
        monotonic = self._monotonic
        await sock.send_multipart([WORKER, READY, service])
        heard = False
        last_recv = last_send = monotonic()
        poll_ms = int(min(self.heartbeat_interval, 0.1) * 1000)  # also how soon `stop` is noticed
        while not self._stopped:
            if await sock.poll(poll_ms, zmq.POLLIN):  # type: ignore[call-arg]
                frames = await sock.recv_multipart()
                heard = True
                last_recv = monotonic()
                if frames and frames[0] == EMPTY:  # tolerate brokers that keep MDP/0.1's delimiter
                    frames = frames[1:]
                if len(frames) < 2 or frames[0] != WORKER:
                    self.malformed += 1
                    log.warning("malformed_frame_dropped", service=self.service, frames=len(frames))
                    continue
                command = frames[1]
                if command == W_REQUEST and len(frames) >= 4:
                    self.requests += 1
                    self._busy = asyncio.create_task(self._handle(sock, frames[2], frames[4:]))
                elif command == DISCONNECT:
                    log.info("worker_disconnected_by_broker", service=self.service)
                    return heard
            now = monotonic()
            if now - last_send >= self.heartbeat_interval:
                await sock.send_multipart([WORKER, HEARTBEAT])
                last_send = now
            if now - last_recv > self.heartbeat_interval * self.liveness:
                log.warning("broker_silent", service=self.service, broker=self.broker)
                return heard
        if self._busy is not None and not self._busy.done():  # drain: let the reply go out first
            await asyncio.wait([self._busy], timeout=self.drain_timeout)
        await sock.send_multipart([WORKER, DISCONNECT])
        return heard

    async def _handle(self, sock: zmq.asyncio.Socket, client: bytes, body: list[bytes]) -> None:
        reply = serve_request(self._handler, body, self._count_malformed)
        if not isinstance(reply, bytes):
            reply = await reply
        if not sock.closed:
            await sock.send_multipart([WORKER, FINAL, client, EMPTY, reply], copy=len(reply) < ZERO_COPY)
