"""MDP/0.2 clients: a blocking one for scripts and benchmarks, an asyncio one with a socket pool."""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
import zmq
import zmq.asyncio

from .. import codec
from ..errors import CodecError, Timeout, Unavailable
from .frames import (
    C_FINAL,
    CLIENT,
    MMI_SERVICE,
    MORE,
    NOBLOCK,
    REQUEST,
    ZERO_COPY,
    CurveKeys,
    SocketReader,
    recv_body,
    recv_frame,
    send_frame,
    send_frames,
)

log = structlog.get_logger(__name__)

#: A received body frame: bytes, or a view of the frame in place from `ZERO_COPY` bytes up (`recv_body`).
Body = bytes | memoryview


def _recv_reply(sock: zmq.Socket[bytes], flags: int = NOBLOCK) -> list[Body]:
    """One reply ``[MDPC02, command, service, body...]``; ``zmq.Again`` only when none waits (with ``flags=0``,
    after the socket's ``RCVTIMEO``).

    A reply has its first three frames, so they are received as bytes, without the frame objects that
    tell whether more follow (each costs about as much again as the receive); the body frames are, and a
    large one is kept in place (`recv_body`). A message cut short ends the list early: the caller finds it
    malformed and drops the socket, so a bad message can never run into the reply to the next request.
    """
    frames: list[Body] = [recv_frame(sock, flags)]
    try:
        frames.append(recv_frame(sock, NOBLOCK))
        frames.append(recv_frame(sock, NOBLOCK))
        frame = recv_frame(sock, NOBLOCK, False)
        frames.append(frame.bytes if len(frame) < ZERO_COPY else frame.buffer)  # `recv_body` written out
        while frame.more:
            frame = recv_frame(sock, NOBLOCK, False)
            frames.append(recv_body(frame))
    except zmq.Again:
        pass
    return frames


def _as_bytes(frames: list[Body]) -> list[bytes]:
    """Body frames as bytes (a large one arrives as a view of the received frame)."""
    return [frame if type(frame) is bytes else bytes(frame) for frame in frames]


def _reply_frames(frames: list[Body], service: bytes) -> list[Body]:
    """The body frames of a FINAL reply to a request for `service`."""
    if len(frames) < 3 or frames[0] != CLIENT or frames[1] != C_FINAL:
        raise CodecError(f"malformed MDP reply: {len(frames)} frames, not MDPC02, FINAL, service, body")
    if frames[2] != service:
        raise CodecError(f"malformed MDP reply: for service {frames[2]!r}, expected {service!r}")
    return frames[3:]


def _reply_body(frames: list[Body], service: bytes) -> Body:
    body = _reply_frames(frames, service)
    if len(body) != 1:
        raise CodecError(f"malformed MDP reply: {len(body)} body frames, expected one")
    return body[0]


class Client:
    """A blocking MDP/0.2 client for scripts and benchmarks: one request at a time.

    >>> # with Client("tcp://127.0.0.1:5555") as c: c.request("kernel", "ping")
    """

    def __init__(self, broker: str, *, timeout: float = 5.0, context: zmq.Context[Any] | None = None,
                 keys: CurveKeys | None = None) -> None:
        self.broker = broker
        self.timeout = timeout
        self.keys = keys  # CURVE: a service with authentication on accepts only allowed keys
        self._context = context or zmq.Context.instance()
        self._sock = self._connect()

    def _connect(self) -> zmq.Socket[bytes]:
        sock: zmq.Socket[bytes] = self._context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVTIMEO, int(self.timeout * 1000))
        if self.keys is not None:
            self.keys.apply(sock)
        sock.connect(self.broker)
        return sock

    def request_raw(self, service: str, body: bytes, *, timeout: float | None = None) -> bytes:
        """Send one body frame, return the reply's body frame."""
        reply = self._exchange(service, body, timeout)
        return reply if type(reply) is bytes else bytes(reply)

    def _exchange(self, service: str, body: bytes, timeout: float | None) -> Body:
        """`request_raw`, a large reply left in place for `request` to decode."""
        name = service.encode()
        sock = self._sock
        if timeout is not None:
            sock.setsockopt(zmq.RCVTIMEO, int(timeout * 1000))
        try:
            send_frame(sock, CLIENT, MORE)
            send_frame(sock, REQUEST, MORE)
            send_frame(sock, name, MORE)
            if len(body) < ZERO_COPY:
                send_frame(sock, body, 0)
            else:
                send_frame(sock, body, 0, False)
            frames = _recv_reply(sock, 0)  # blocks up to RCVTIMEO
        except zmq.Again:
            self._reconnect()  # a late reply must never answer the next request
            raise Timeout(f"no reply from service {service!r} within {timeout or self.timeout}s") from None
        finally:
            if timeout is not None and not sock.closed:
                sock.setsockopt(zmq.RCVTIMEO, int(self.timeout * 1000))
        if len(frames) == 4 and frames[0] == CLIENT and frames[1] == C_FINAL and frames[2] == name:
            return frames[3]  # a well-formed FINAL: `_reply_body` says what is wrong with any other reply
        try:
            return _reply_body(frames, name)
        except CodecError:
            self._reconnect()  # whatever follows a malformed reply on this socket is suspect too
            raise

    def _reconnect(self) -> None:
        self._sock.close(linger=0)
        self._sock = self._connect()

    def request(self, service: str, op: str, args: dict[str, Any] | None = None, *,
                timeout: float | None = None, rid: str | None = None) -> Any:
        return codec.decode_reply(self._exchange(service, codec.encode_request(op, args, rid=rid), timeout))

    def mmi_service(self, service: str, *, timeout: float | None = None) -> bool:
        """RFC 8: does the broker have `service`?"""
        return self.request_raw(MMI_SERVICE.decode(), service.encode(), timeout=timeout) == b"200"

    def close(self) -> None:
        self._sock.close(linger=0)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Connection:
    """One DEALER socket of an `AsyncClient`, read from the event loop like the broker's own socket."""

    def __init__(self, context: zmq.Context[zmq.Socket[bytes]], broker: str, keys: CurveKeys | None) -> None:
        self.sock: zmq.Socket[bytes] = context.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        if keys is not None:
            keys.apply(self.sock)
        self.sock.connect(broker)
        self.waiter: asyncio.Future[list[Body]] | None = None
        self.deadline = 0.0  # loop time by which the request in progress times out
        self.asked: tuple[str, float] = ("", 0.0)  # its service and timeout, for the Timeout's message
        self.reader = SocketReader(self.sock, self._on_message, receive=_recv_reply, rearm=False)

    def _on_message(self, frames: list[Body]) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(frames)
        else:  # cannot happen: a socket whose request timed out is closed, never reused
            log.warning("unexpected_reply_dropped", frames=len(frames))

    def close(self) -> None:
        self.reader.close()
        self.sock.close(linger=0)


class AsyncClient:
    """An asyncio MDP/0.2 client; concurrent requests each take a socket from a pool.

    MDP replies carry no correlation id, so a socket has at most one request outstanding; a socket
    whose request timed out is closed rather than reused. Sockets are plain ZeroMQ sockets whose file
    descriptors the event loop watches (as the broker does), which costs far less than ``zmq.asyncio``.
    Deadlines share one timer, armed for the earliest of them, rather than one timer per request.

    A socket's reader delivers one reply per wake-up without checking for more; the check, which ZeroMQ
    needs to signal the next reply, is made after the next request is sent, while that request is on its
    way (`SocketReader` with ``rearm=False``).
    """

    def __init__(self, broker: str, *, timeout: float = 5.0,
                 context: zmq.asyncio.Context | zmq.Context[Any] | None = None, keys: CurveKeys | None = None) -> None:
        self.broker = broker
        self.timeout = timeout
        self.keys = keys
        self._owner = context if context is not None else zmq.asyncio.Context.instance()  # keeps it alive
        self._context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.shadow(self._owner.underlying)
        self._idle: list[_Connection] = []
        self._busy: set[_Connection] = set()
        self._timer: asyncio.TimerHandle | None = None  # the shared deadline timer, at `_timer_at`
        self._timer_at = 0.0
        self._timer_loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    async def request_raw(self, service: str, frames: list[bytes], *, timeout: float | None = None) -> list[bytes]:
        """Send the body frames, return the reply's body frames."""
        return _as_bytes(await self._exchange(service, frames, timeout))

    async def _exchange(self, service: str, frames: list[bytes], timeout: float | None) -> list[Body]:
        """`request_raw`, a large reply frame left in place for `request` to decode."""
        if self._closed:
            raise Unavailable("client closed")
        conn = self._idle.pop() if self._idle else _Connection(self._context, self.broker, self.keys)
        name = service.encode()
        try:
            send_frames(conn.sock, [CLIENT, REQUEST, name, *frames])
            # the rest while the request is on its way: its reply is read on a later turn of the loop
            loop = asyncio.get_running_loop()
            waiter = conn.waiter = loop.create_future()
            seconds = timeout or self.timeout
            conn.deadline = loop.time() + seconds
            conn.asked = (service, seconds)
            self._busy.add(conn)
            if self._timer is None or conn.deadline < self._timer_at or self._timer_loop is not loop:
                self._arm(loop, conn.deadline)
            conn.reader.kick()  # re-arms the socket's descriptor (see the class)
            body = _reply_frames(await waiter, name)
        except BaseException:  # a timeout, a malformed reply, cancelled: the socket is not used again
            conn.close()
            raise
        finally:
            conn.waiter = None
            self._busy.discard(conn)
        if self._closed:
            conn.close()
        else:
            self._idle.append(conn)
        return body

    def _arm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = loop.call_at(when, self._expire)
        self._timer_at = when
        self._timer_loop = loop

    def _expire(self) -> None:
        """The shared timer: fail every request past its deadline, re-arm for the earliest of the rest."""
        self._timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        earliest: float | None = None
        for conn in self._busy:
            waiter = conn.waiter
            if waiter is None or waiter.done():
                continue
            if conn.deadline <= now:
                service, seconds = conn.asked
                waiter.set_exception(Timeout(f"no reply from service {service!r} within {seconds}s"))
            elif earliest is None or conn.deadline < earliest:
                earliest = conn.deadline
        if earliest is not None:
            self._arm(loop, earliest)

    async def request(self, service: str, op: str, args: dict[str, Any] | None = None, *,
                      timeout: float | None = None, rid: str | None = None) -> Any:
        body = await self._exchange(service, [codec.encode_request(op, args, rid=rid)], timeout)
        if not body:
            raise CodecError("reply without body")
        return codec.decode_reply(body[0])

    async def mmi_service(self, service: str) -> bool:
        return (await self.request_raw(MMI_SERVICE.decode(), [service.encode()])) == [b"200"]

    def close(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for conn in self._idle:
            conn.close()
        self._idle.clear()
