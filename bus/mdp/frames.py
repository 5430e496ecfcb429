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


def recv_frames(sock: zmq.Socket[bytes]) -> list[bytes]:
    """Receive one multipart message without blocking (raises ``zmq.Again`` when none is queued).

    A frame loop with plain integer flags: about a third cheaper than ``recv_multipart`` here.
    """
    frame = sock.recv(NOBLOCK, copy=False)
    frames = [frame.bytes]
    while frame.more:
        frame = sock.recv(NOBLOCK, copy=False)
        frames.append(frame.bytes)
    return frames


def recv_frames_user(sock: zmq.Socket[bytes]) -> tuple[list[bytes], str | None]:
    """`recv_frames`, plus the ``User-Id`` the ZAP handler gave the sender's connection (None without one)."""
    frame = sock.recv(NOBLOCK, copy=False)
    frames = [frame.bytes]
    while frame.more:
        frame = sock.recv(NOBLOCK, copy=False)
        frames.append(frame.bytes)
    try:
        user = frame.get("User-Id")
    except zmq.ZMQError:
        return frames, None
    return frames, user if isinstance(user, str) and user else None


def send_frames(sock: zmq.Socket[bytes], frames: list[bytes]) -> None:
    """Send one multipart message without blocking (the counterpart of `recv_frames`)."""
    last = frames[-1]
    send = sock.send
    for frame in frames[:-1]:
        send(frame, MORE_NOBLOCK)
    send(last, NOBLOCK)


def service_name(service: bytes) -> str:
    """A service name for messages and reports; names are ASCII by protocol, but never trust a peer."""
    return service.decode(errors="replace")


class SocketReader:
    """Delivers every message of a (non-asyncio) ZeroMQ socket to a callback, from the event loop.

    ZeroMQ's file descriptor is edge-triggered: it signals only a change of state, so the reader drains
    until ``EAGAIN`` and `kick` must be called after a send made outside the callback.
    """

    def __init__(self, sock: zmq.Socket[bytes], on_message: Callable[..., None],
                 *, batch: int = 256, with_user: bool = False) -> None:
        self._sock = sock
        self._on_message = on_message
        self._batch = batch
        self._with_user = with_user  # on_message(frames, user): the ZAP User-Id of each message
        self._scheduled = False
        self._loop = asyncio.get_running_loop()
        self._fd: int = sock.getsockopt(zmq.FD)  # type: ignore[assignment]
        self._loop.add_reader(self._fd, self._drain)
        self.kick()

    def _drain(self) -> None:
        self._scheduled = False
        sock = self._sock
        with_user = self._with_user
        for _ in range(self._batch):
            try:
                if with_user:
                    frames, user = recv_frames_user(sock)
                else:
                    frames = recv_frames(sock)
            except zmq.Again:
                return
            except zmq.ZMQError as exc:  # closed under us during shutdown
                log.debug("socket_reader_stopped", error=str(exc))
                return
            if with_user:
                self._on_message(frames, user)
            else:
                self._on_message(frames)
        self.kick()

    def kick(self) -> None:
        if self._scheduled or self._sock.closed:
            return
        events: int = self._sock.getsockopt(zmq.EVENTS)  # type: ignore[assignment]
        if events & zmq.POLLIN:
            self._scheduled = True
            self._loop.call_soon(self._drain)

    def close(self) -> None:
        self._loop.remove_reader(self._fd)
