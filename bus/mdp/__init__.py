"""Majordomo Protocol MDP/0.2 (ZeroMQ RFC 18) with the MMI extension (RFC 8): broker, worker, clients.

One package, one module per part: `frames` (commands, dialects, non-blocking socket helpers shared with
pub/sub), `serving` (one request answered by a local service), `broker` with `services` and `sending` (the
broker: local services, the table of remote services and workers, the socket side), `worker`, `client`.
Import from here: ``from ml_processing.bus.mdp import Client, AsyncClient, Broker, Worker``.

Heartbeats, worker expiry and request deadlines read an injectable clock (`clock.monotonic_of`); the
byte-level protocol is in docs/PROTOCOL.md section 1.

>>> CLIENT, WORKER, MMI_SERVICE
(b'MDPC02', b'MDPW02', b'mmi.service')
"""

from __future__ import annotations

from .broker import Broker
from .client import AsyncClient, Client
from .clock import ClockLike, HasMonotonic, monotonic_of
from .frames import (
    C_FINAL,
    C_PARTIAL,
    CLIENT,
    DISCONNECT,
    EMPTY,
    FINAL,
    HEARTBEAT,
    MMI_SERVICE,
    PARTIAL,
    READY,
    REQUEST,
    W_REQUEST,
    WORKER,
    CurveKeys,
    SocketReader,
    curve_server,
    recv_frames,
    send_frames,
)
from .gate import Gate
from .sending import BrokerStats
from .serving import LocalService, serve_request
from .worker import Worker

__all__ = [
    "CLIENT",
    "C_FINAL",
    "C_PARTIAL",
    "DISCONNECT",
    "EMPTY",
    "FINAL",
    "HEARTBEAT",
    "MMI_SERVICE",
    "PARTIAL",
    "READY",
    "REQUEST",
    "WORKER",
    "W_REQUEST",
    "AsyncClient",
    "Broker",
    "BrokerStats",
    "Client",
    "ClockLike",
    "CurveKeys",
    "Gate",
    "HasMonotonic",
    "LocalService",
    "SocketReader",
    "Worker",
    "curve_server",
    "monotonic_of",
    "recv_frames",
    "send_frames",
    "serve_request",
]
