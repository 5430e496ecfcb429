"""The broker's socket side: replies to clients, answers to in-process requesters, in-flight accounting.

`BrokerSocket` is the base of the broker's classes: `ServiceTable` (remote services and their workers)
builds on it and `Broker` on that. A request from the broker's own process waits on a future keyed by a
made-up client address (see `LOCAL_ADDR`) instead of a socket; the senders here answer either kind.

Every message the broker sends goes through `_emit`. While the socket is drained, what the second and
later messages of the drain cause is held in an outbox and sent in one pass when the drain ends
(`_flush`): under load the sends of a wake-up leave together, so ZeroMQ's I/O thread is woken once for
them rather than once per reply. The first message's answer leaves at once: when one request arrives at a
time it is not held back behind the check for more.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass

import structlog
import zmq

from .. import codec
from ..errors import MlpError
from .frames import (
    CLIENT,
    EMPTY,
    MORE_NOBLOCK,
    NOBLOCK,
    ZERO_COPY,
    Dialect,
    SocketReader,
    send_frame,
    send_frames,
)

log = structlog.get_logger(__name__)

LOCAL_ADDR = b"\xff\x00mlp-local-"  # prefix of in-process requesters' addresses (kept in `_waiters`)


@dataclass
class BrokerStats:
    requests: int = 0
    local_requests: int = 0
    errors: int = 0
    malformed: int = 0
    timeouts: int = 0
    workers_expired: int = 0
    refused: int = 0  # requests the gate refused (unknown key, missing role)
    refused_ready: int = 0  # READYs the gate refused (no worker role for that service)


@dataclass
class Pending:
    """A request waiting for a worker, or held by one, until its reply or its deadline."""

    client: bytes
    dialect: Dialect
    body: list[bytes]
    deadline: float


class BrokerSocket:
    """Sends on the broker's ROUTER socket and counts what is in flight (for `Broker.drain`)."""

    def __init__(self) -> None:
        self._sock: zmq.Socket[bytes] | None = None
        self._reader: SocketReader | None = None
        self._waiters: dict[bytes, asyncio.Future[bytes]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._outbox: list[list[bytes]] | None = None  # held during a drain (after its first message)
        self.stats = BrokerStats()

    # -- sending -----------------------------------------------------------------------------------

    def _fail_pending(self, pending: Pending, service: bytes, error: MlpError) -> None:
        fut = self._waiters.get(pending.client)
        if fut is not None:
            if not fut.done():
                fut.set_result(codec.encode_error(error))
            return
        self._reply_error(pending.client, pending.dialect, service, error)
        self._end()

    def _reply_error(self, client: bytes, dialect: Dialect, service: bytes, error: MlpError) -> None:
        self.stats.errors += 1
        fut = self._waiters.get(client)
        if fut is not None:
            if not fut.done():
                fut.set_result(codec.encode_error(error))
            return
        self._send_client(client, dialect, service, [codec.encode_error(error)])

    def _send_client(self, client: bytes, dialect: Dialect, service: bytes, body: list[bytes],
                     *, final: bool = True) -> None:
        sock = self._sock
        if sock is None:
            return
        frames = ([client, EMPTY, CLIENT, dialect.final if final else dialect.partial, service, *body]
                  if dialect.delimited else [client, CLIENT, dialect.final if final else dialect.partial, service, *body])
        outbox = self._outbox  # `_emit` written out: every reply leaves here
        if outbox is not None:
            outbox.append(frames)
            return
        try:  # `send_frames` written out
            for frame in frames[:-1]:
                send_frame(sock, frame, MORE_NOBLOCK)
            last = frames[-1]
            if len(last) < ZERO_COPY:
                send_frame(sock, last, NOBLOCK)
            else:
                send_frame(sock, last, NOBLOCK, False)
        except zmq.ZMQError as exc:
            log.warning("message_not_sent", error=str(exc), frames=len(frames))

    def _emit(self, frames: list[bytes]) -> None:
        """Send one message on the broker's socket, or hold it in the drain's outbox."""
        outbox = self._outbox
        if outbox is not None:
            outbox.append(frames)
            return
        if self._sock is None:
            return
        try:
            send_frames(self._sock, frames)
        except zmq.ZMQError as exc:
            log.warning("message_not_sent", error=str(exc), frames=len(frames))

    def _flush(self) -> None:
        """The end of a drain: send what it held, in order, and send at once again."""
        outbox, self._outbox = self._outbox, None
        if not outbox or self._sock is None:
            return
        sock = self._sock
        for frames in outbox:
            try:
                send_frames(sock, frames)
            except zmq.ZMQError as exc:
                log.warning("message_not_sent", error=str(exc), frames=len(frames))

    def _count_malformed(self) -> None:
        self.stats.malformed += 1

    def _reader_kick(self) -> None:
        if self._reader is not None:
            self._reader.kick()

    # -- in-flight accounting (drain) --------------------------------------------------------------

    def _begin(self) -> None:
        self._inflight += 1
        self._idle.clear()

    def _end(self) -> None:
        self._inflight -= 1
        if self._inflight <= 0:
            self._inflight = 0
            self._idle.set()

    @property
    def inflight(self) -> int:
        return self._inflight

    def _spawn(self, coro: Awaitable[None]) -> None:
        self._begin()

        async def run() -> None:
            try:
                await coro
            finally:
                self._end()
                self._reader_kick()

        task = asyncio.ensure_future(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
