"""MDP/0.2 frames and socket helpers: commands, the two client dialects, non-blocking multipart I/O.

Frames (docs/PROTOCOL.md section 1 has the byte-level description):

* client -> broker: ``["MDPC02", 0x01 REQUEST, service, body]``; broker -> client:
  ``["MDPC02", 0x03 FINAL | 0x02 PARTIAL, service, body]``.
* worker <-> broker: ``["MDPW02", command, ...]`` with READY 0x01 (+service), REQUEST 0x02
  (+client address, "", body), PARTIAL 0x03 / FINAL 0x04 (+client address, "", body), HEARTBEAT 0x05,
  DISCONNECT 0x06.
* The broker also accepts the Guide's variant (see `Dialect`) and answers in the dialect it was spoken to.

`SocketReader` is shared with pub/sub: it hands every message of a plain ZeroMQ socket to a callback from
the event loop, which costs far less than ``zmq.asyncio``.

>>> DIALECTS[(True, W_REQUEST)].final == FINAL
True
>>> service_name(b"models")
'models'
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
import zmq

log = structlog.get_logger(__name__)

CLIENT = b"MDPC02"
WORKER = b"MDPW02"
EMPTY = b""
# MDP/Client commands (RFC 18)
REQUEST = b"\x01"
C_PARTIAL = b"\x02"
C_FINAL = b"\x03"
# MDP/Worker commands (RFC 18)
READY = b"\x01"
W_REQUEST = b"\x02"
PARTIAL = b"\x03"
FINAL = b"\x04"
HEARTBEAT = b"\x05"
DISCONNECT = b"\x06"

MMI_SERVICE = b"mmi.service"

NOBLOCK = int(zmq.NOBLOCK)
MORE = int(zmq.SNDMORE)
MORE_NOBLOCK = int(zmq.SNDMORE | zmq.NOBLOCK)


@dataclass(frozen=True, slots=True)
class CurveKeys:
    """A CURVE client's keys, Z85: the service's public key, and the client's own pair.

    ``ml-processing keys`` prints the service's public key and makes client pairs (docs/SECURITY.md).
    """

    server: str
    public: str
    secret: str

    def apply(self, sock: zmq.Socket[Any]) -> None:
        """Make `sock` a CURVE client of the service (before it connects)."""
        sock.setsockopt(zmq.CURVE_SERVERKEY, self.server.encode())
        sock.setsockopt(zmq.CURVE_PUBLICKEY, self.public.encode())
        sock.setsockopt(zmq.CURVE_SECRETKEY, self.secret.encode())


def curve_server(sock: zmq.Socket[Any], public: str, secret: str, domain: bytes) -> None:
    """Make `sock` a CURVE server whose connections the ZAP handler checks under `domain` (before it binds)."""
    sock.setsockopt(zmq.CURVE_SERVER, 1)
    sock.setsockopt(zmq.CURVE_PUBLICKEY, public.encode())
    sock.setsockopt(zmq.CURVE_SECRETKEY, secret.encode())
    sock.setsockopt(zmq.ZAP_DOMAIN, domain)


@dataclass(frozen=True, slots=True)
class Dialect:
    """How a client spoke, so the reply speaks the same way.

    RFC 18 has no empty delimiter frame and numbers client commands REQUEST 1, PARTIAL 2, FINAL 3. A
    widespread variant (the Guide's examples, the ``majortomo`` package) keeps MDP/0.1's empty delimiter
    and numbers them like worker commands: REQUEST 2, PARTIAL 3, FINAL 4. The broker accepts both.
    """

    delimited: bool
    partial: bytes
    final: bytes


#: ``(delimited, request command) -> Dialect``: every way a client may ask.
DIALECTS = {
    (False, REQUEST): Dialect(False, C_PARTIAL, C_FINAL),
    (True, REQUEST): Dialect(True, C_PARTIAL, C_FINAL),
    (False, W_REQUEST): Dialect(False, PARTIAL, FINAL),
    (True, W_REQUEST): Dialect(True, PARTIAL, FINAL),
}
#: The dialect of RFC 18 itself (in-process requesters speak it).
RFC = DIALECTS[(False, REQUEST)]


#: pyzmq's compiled socket methods, called on `zmq.Socket` instances without the Python layer above them:
#: ``zmq.Socket.send`` is Python code that only adds routing ids and groups, and every attribute lookup on a
#: `zmq.Socket` passes its ``__getattr__`` hook. About 1,300 fewer instructions per frame (callgrind).
send_frame: Callable[..., Any] = zmq.backend.Socket.send
recv_frame: Callable[..., Any] = zmq.backend.Socket.recv
#: ``zmq_poll`` with a zero timeout: ZeroMQ reads the socket's ``ZMQ_EVENTS`` for it. Reading that option
#: through ``Socket.get`` costs more than twice as much (it looks the option up in an enum, in Python).
_poll: Callable[..., Any] = zmq.backend.zmq_poll
_POLLIN = int(zmq.POLLIN)


def recv_frames(sock: zmq.Socket[bytes], flags: int = NOBLOCK) -> list[bytes]:
    """Receive one multipart message, without blocking by default (``zmq.Again`` when none is queued).

    A frame loop with plain integer flags: about a third cheaper than ``recv_multipart`` here. With
    ``flags=0`` it waits for the first frame (up to the socket's ``RCVTIMEO``); the rest of a multipart
    message is always there once its first frame is.
    """
    frame = recv_frame(sock, flags, False)
    frames = [frame.bytes]
    while frame.more:
        frame = recv_frame(sock, NOBLOCK, False)
        frames.append(frame.bytes)
    return frames


def recv_routed(sock: zmq.Socket[bytes]) -> list[bytes]:
    """`recv_frames` for a ROUTER socket: its first frame, the sender's routing id, always has more behind
    it, so it is received as bytes without the frame object that tells (a frame object costs about as
    much again as the receive)."""
    frames = [recv_frame(sock, NOBLOCK)]
    frame = recv_frame(sock, NOBLOCK, False)
    frames.append(frame.bytes)
    while frame.more:
        frame = recv_frame(sock, NOBLOCK, False)
        frames.append(frame.bytes)
    return frames


def recv_routed_user(sock: zmq.Socket[bytes]) -> tuple[list[bytes], str | None]:
    """`recv_routed`, plus the ``User-Id`` the ZAP handler gave the sender's connection (None without one).

    Only for a socket whose connections ZAP authenticates (a CURVE server): elsewhere the property is
    missing and reading it costs a raised and caught `zmq.ZMQError` per message.
    """
    frames = [recv_frame(sock, NOBLOCK)]
    frame = recv_frame(sock, NOBLOCK, False)
    frames.append(frame.bytes)
    while frame.more:
        frame = recv_frame(sock, NOBLOCK, False)
        frames.append(frame.bytes)
    try:
        user = frame.get("User-Id")
    except zmq.ZMQError:
        return frames, None
    return frames, user if isinstance(user, str) and user else None


#: A last frame (a message's body) of at least this many bytes is sent without copying: ZeroMQ reads it from
#: the bytes object itself, which pyzmq keeps alive until the message has left. A received body this large is
#: read in place (`recv_body`). pyzmq's own threshold for the same choice.
ZERO_COPY = 65536


def send_frames(sock: zmq.Socket[bytes], frames: list[bytes]) -> None:
    """Send one multipart message without blocking (the counterpart of `recv_frames`); a body of `ZERO_COPY`
    bytes or more is not copied."""
    last = frames[-1]
    send = send_frame
    for frame in frames[:-1]:
        send(sock, frame, MORE_NOBLOCK)
    if len(last) < ZERO_COPY:
        send(sock, last, NOBLOCK)
    else:
        send(sock, last, NOBLOCK, False)


def recv_body(frame: zmq.Frame) -> bytes | memoryview:
    """A received frame's content: as bytes, or, from `ZERO_COPY` bytes up, as a read-only view of the frame
    itself, which a 12 MB reply would otherwise be copied out of into fresh memory."""
    return frame.bytes if len(frame) < ZERO_COPY else frame.buffer


def has_message(sock: zmq.Socket[bytes]) -> bool:
    """Whether a message waits on `sock` (``ZMQ_EVENTS``, read by a zero-timeout ``zmq_poll``); like a receive
    that finds none, it re-arms the socket's file descriptor for the next one, at about a sixth of the cost of
    the `zmq.Again` raised then (callgrind: about 3,500 instructions against 25,000)."""
    return bool(_poll([(sock, _POLLIN)], 0))


def service_name(service: bytes) -> str:
    """A service name for messages and reports; names are ASCII by protocol, but never trust a peer."""
    return service.decode(errors="replace")


class SocketReader:
    """Delivers every message of a (non-asyncio) ZeroMQ socket to a callback, from the event loop.

    ZeroMQ's file descriptor is edge-triggered: it signals only a change of state, so a drain reads until
    the socket has no message left (`has_message` after each message, which costs far less than the
    ``EAGAIN`` a receive raises when none is left), and `kick` must be called after a send made outside the callback that
    may have consumed the signal of a message already queued. `on_drained` runs at the end of every drain
    (the broker sends the replies of a drain there, in one pass). A drain reads `batch` messages at most,
    then lets the loop serve others before it goes on.

    With ``rearm=False`` a wake-up reads one message and stops there: the owner expects one message per
    request it sends and calls `kick` after each send, so the check for more (which re-arms the file
    descriptor) overlaps the wait for the next reply instead of delaying the delivery of this one.
    """

    def __init__(self, sock: zmq.Socket[bytes], on_message: Callable[..., None],
                 *, batch: int = 256, receive: Callable[[zmq.Socket[bytes]], Any] = recv_frames,
                 with_user: bool = False, on_drained: Callable[[], None] | None = None,
                 rearm: bool = True) -> None:
        self._sock = sock
        self._on_message = on_message
        self._receive = receive  # one message of `sock`, without blocking; zmq.Again when none waits
        self._on_drained = on_drained
        self._batch = batch if rearm else 1
        self._rearm = rearm
        self._with_user = with_user  # receive gives (frames, user): on_message(frames, user)
        self._scheduled = False
        self._loop = asyncio.get_running_loop()
        self._fd: int = sock.getsockopt(zmq.FD)  # type: ignore[assignment]
        self._loop.add_reader(self._fd, self._drain)
        self.kick()

    def _drain(self) -> None:
        self._scheduled = False
        sock = self._sock
        on_message = self._on_message
        receive = self._receive
        with_user = self._with_user
        try:
            for _ in range(self._batch):
                if with_user:
                    on_message(*receive(sock))
                else:
                    on_message(receive(sock))
                if not (self._rearm and has_message(sock)):
                    return
            self.kick()
        except zmq.Again:
            return
        except zmq.ZMQError as exc:  # closed under us during shutdown
            log.debug("socket_reader_stopped", error=str(exc))
            return
        finally:
            if self._on_drained is not None:
                self._on_drained()

    def kick(self) -> None:
        if self._scheduled or self._sock.closed:
            return
        if has_message(self._sock):
            self._scheduled = True
            self._loop.call_soon(self._drain)

    def close(self) -> None:
        self._loop.remove_reader(self._fd)
