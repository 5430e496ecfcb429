"""Majordomo Protocol MDP/0.2 (ZeroMQ RFC 18) with the MMI extension (RFC 8): broker, worker, clients.

Frames (docs/PROTOCOL.md has the byte-level description):

* client -> broker: ``["MDPC02", 0x01 REQUEST, service, body]``; broker -> client:
  ``["MDPC02", 0x03 FINAL | 0x02 PARTIAL, service, body]``.
* worker <-> broker: ``["MDPW02", command, ...]`` with READY 0x01 (+service), REQUEST 0x02
  (+client address, "", body), PARTIAL 0x03 / FINAL 0x04 (+client address, "", body), HEARTBEAT 0x05,
  DISCONNECT 0x06.
* The broker also accepts the Guide's variant (see `_Dialect`) and answers in the dialect it was spoken to.

The broker also serves *local services*: objects in the broker's own process that take a decoded request
and return its result. A request for a local service is answered by calling it directly, with no extra
socket hop; every other service is served by remote workers, over which the broker spreads requests
(least recently used first). A request for a service that has neither gets an ``unavailable`` error at
once, never a hang.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog
import zmq
import zmq.asyncio

from . import codec
from .errors import CodecError, InternalError, MlpError, Timeout, Unavailable

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


@dataclass(frozen=True, slots=True)
class _Dialect:
    """How a client spoke, so the reply speaks the same way.

    RFC 18 has no empty delimiter frame and numbers client commands REQUEST 1, PARTIAL 2, FINAL 3. A
    widespread variant (the Guide's examples, the ``majortomo`` package) keeps MDP/0.1's empty delimiter
    and numbers them like worker commands: REQUEST 2, PARTIAL 3, FINAL 4. The broker accepts both.
    """

    delimited: bool
    partial: bytes
    final: bytes


_DIALECTS = {
    (False, REQUEST): _Dialect(False, C_PARTIAL, C_FINAL),
    (True, REQUEST): _Dialect(True, C_PARTIAL, C_FINAL),
    (False, W_REQUEST): _Dialect(False, PARTIAL, FINAL),
    (True, W_REQUEST): _Dialect(True, PARTIAL, FINAL),
}
_RFC = _DIALECTS[(False, REQUEST)]

MMI_SERVICE = b"mmi.service"
_LOCAL_ADDR = b"\xff\x00mlp-local-"  # prefix of in-process requesters' addresses (kept in Broker._waiters)

_NOBLOCK = int(zmq.NOBLOCK)
_MORE = int(zmq.SNDMORE)
_MORE_NOBLOCK = int(zmq.SNDMORE | zmq.NOBLOCK)


def recv_frames(sock: zmq.Socket[bytes]) -> list[bytes]:
    """Receive one multipart message without blocking (raises ``zmq.Again`` when none is queued).

    A frame loop with plain integer flags: about a third cheaper than ``recv_multipart`` here.
    """
    frame = sock.recv(_NOBLOCK, copy=False)
    frames = [frame.bytes]
    while frame.more:
        frame = sock.recv(_NOBLOCK, copy=False)
        frames.append(frame.bytes)
    return frames


def send_frames(sock: zmq.Socket[bytes], frames: list[bytes]) -> None:
    """Send one multipart message without blocking (the counterpart of `recv_frames`)."""
    last = frames[-1]
    send = sock.send
    for frame in frames[:-1]:
        send(frame, _MORE_NOBLOCK)
    send(last, _NOBLOCK)


def _name(service: bytes) -> str:
    """A service name for messages and reports; names are ASCII by protocol, but never trust a peer."""
    return service.decode(errors="replace")


class LocalService(Protocol):
    """What the broker calls for a service living in its own process."""

    def __call__(self, request: codec.Request) -> Any:
        """Return the result (or an awaitable of it); raise `MlpError` for an error reply."""


@dataclass
class _Worker:
    identity: bytes
    service: bytes
    expiry: float
    delimited: bool  # the worker prefixes an empty frame (MDP/0.1 habit); answer it the same way
    current: bytes | None = None  # client address of the request in progress
    stale: bool = False  # the request in progress timed out; drop its reply


@dataclass
class _Pending:
    client: bytes
    dialect: _Dialect
    body: list[bytes]
    deadline: float


@dataclass
class _Service:
    name: bytes
    workers: dict[bytes, _Worker] = field(default_factory=dict)
    idle: deque[_Worker] = field(default_factory=deque)
    queue: deque[_Pending] = field(default_factory=deque)
    requests: int = 0


_PLAIN_TYPES = frozenset({dict, list, str, int, float, bool, type(None), bytes, tuple})


def _plain(result: Any) -> bool:
    """True for the result types of synchronous handlers (skips the slower awaitable check)."""
    return type(result) in _PLAIN_TYPES


def serve_request(handler: LocalService, body: list[bytes],
                  on_malformed: Callable[[], None] | None = None) -> bytes | Awaitable[bytes]:
    """Decode a request body, call `handler`, encode its reply; every failure becomes an error reply.

    Returns the reply frame at once when the handler answered synchronously, else an awaitable of it. A
    body that is not a valid request is answered ``bad_request`` and reported to `on_malformed`.
    """
    try:
        if len(body) != 1:
            raise CodecError(f"request must carry exactly one body frame, got {len(body)}")
        request = codec.decode_request(body[0])
    except CodecError as exc:
        if on_malformed is not None:
            on_malformed()
        log.warning("malformed_request", error=exc.message)
        return codec.encode_error(exc)
    try:
        result = handler(request)
    except MlpError as exc:
        return codec.encode_error(exc)
    except Exception as exc:  # a LocalService should never leak one; answer, log, keep serving
        log.error("service_handler_failed", op=request.op, rid=request.rid, exc_info=exc)
        return codec.encode_error(InternalError(f"{type(exc).__name__}: {exc}"))
    if not _plain(result) and inspect.isawaitable(result):
        return _reply_when_done(result, request)
    return _encode_result(result, request)


async def _reply_when_done(pending: Awaitable[Any], request: codec.Request) -> bytes:
    try:
        result = await pending
    except MlpError as exc:
        return codec.encode_error(exc)
    except Exception as exc:
        log.error("service_handler_failed", op=request.op, rid=request.rid, exc_info=exc)
        return codec.encode_error(InternalError(f"{type(exc).__name__}: {exc}"))
    return _encode_result(result, request)


def _encode_result(result: Any, request: codec.Request) -> bytes:
    try:
        return codec.encode_reply(result)
    except CodecError as exc:  # the handler's fault, not the client's
        log.error("result_not_encodable", op=request.op, rid=request.rid, error=exc.message)
        return codec.encode_error(InternalError(f"op {request.op!r} returned a result that cannot be encoded: "
                                                f"{exc.message}"))


class SocketReader:
    """Delivers every message of a (non-asyncio) ZeroMQ socket to a callback, from the event loop.

    ZeroMQ's file descriptor is edge-triggered: it signals only a change of state, so the reader drains
    until ``EAGAIN`` and `kick` must be called after a send made outside the callback.
    """

    def __init__(self, sock: zmq.Socket[bytes], on_message: Callable[[list[bytes]], None],
                 *, batch: int = 256) -> None:
        self._sock = sock
        self._on_message = on_message
        self._batch = batch
        self._scheduled = False
        self._loop = asyncio.get_running_loop()
        self._fd: int = sock.getsockopt(zmq.FD)  # type: ignore[assignment]
        self._loop.add_reader(self._fd, self._drain)
        self.kick()

    def _drain(self) -> None:
        self._scheduled = False
        sock = self._sock
        for _ in range(self._batch):
            try:
                frames = recv_frames(sock)
            except zmq.Again:
                return
            except zmq.ZMQError as exc:  # closed under us during shutdown
                log.debug("socket_reader_stopped", error=str(exc))
                return
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


@dataclass
class BrokerStats:
    requests: int = 0
    local_requests: int = 0
    errors: int = 0
    malformed: int = 0
    timeouts: int = 0
    workers_expired: int = 0


class Broker:
    """An asyncio MDP/0.2 broker on one ROUTER socket, bound to any number of endpoints."""

    def __init__(self, context: zmq.Context[Any], endpoints: list[str], *, heartbeat_interval: float = 2.5,
                 liveness: int = 3, request_timeout: float = 10.0, max_queue: int = 10_000,
                 hwm: int = 100_000, max_message_bytes: int = -1) -> None:
        # plain sockets: the broker polls their file descriptors itself
        self._context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.shadow(context.underlying)
        self.endpoints = list(endpoints)
        self.heartbeat_interval = heartbeat_interval
        self.liveness = liveness
        self.request_timeout = request_timeout
        self.max_queue = max_queue
        self._hwm = hwm
        self._max_message = max_message_bytes
        self._local: dict[bytes, LocalService] = {}
        self._services: dict[bytes, _Service] = {}
        self._workers: dict[bytes, _Worker] = {}
        self._waiters: dict[bytes, asyncio.Future[bytes]] = {}
        self._held: dict[bytes, _Pending] = {}  # worker identity -> the request it is serving
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._closing = False
        self._sock: zmq.Socket[bytes] | None = None
        self._reader: SocketReader | None = None
        self._timer: asyncio.Task[None] | None = None
        self.bound: list[str] = []
        self.stats = BrokerStats()

    # -- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> list[str]:
        """Bind every endpoint and start serving; returns the bound endpoints (``*`` ports resolved)."""
        sock = self._context.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 0)
        sock.setsockopt(zmq.SNDHWM, self._hwm)
        sock.setsockopt(zmq.RCVHWM, self._hwm)
        sock.setsockopt(zmq.MAXMSGSIZE, self._max_message)  # a larger frame disconnects its sender
        try:
            for endpoint in self.endpoints:
                sock.bind(endpoint)
                self.bound.append(sock.getsockopt_string(zmq.LAST_ENDPOINT))
        except BaseException:
            sock.close(linger=0)
            raise
        self._sock = sock
        self._reader = SocketReader(sock, self._on_message)
        self._timer = asyncio.create_task(self._housekeeping(), name="mdp-broker-housekeeping")
        log.info("broker_started", endpoints=self.bound)
        return self.bound

    def stop_accepting(self) -> None:
        """From now on every new request is answered ``unavailable`` (shutting down)."""
        self._closing = True

    async def drain(self, timeout: float) -> bool:
        """Wait until no request is in flight; False if the deadline passed first."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except TimeoutError:
            return False

    async def close(self) -> None:
        self._closing = True
        if self._timer is not None:
            self._timer.cancel()
        for task in list(self._tasks):
            task.cancel()
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._sock is not None:
            for worker in list(self._workers.values()):
                self._send_worker(worker.identity, DISCONNECT)
            self._sock.close(linger=0)
            self._sock = None
        for fut in self._waiters.values():
            if not fut.done():
                fut.set_exception(Unavailable("broker stopped"))
        log.info("broker_stopped")

    # -- local services and in-process requests ----------------------------------------------------

    def attach(self, service: str, handler: LocalService) -> None:
        """Serve `service` in this process by calling `handler` (no socket hop)."""
        self._local[service.encode()] = handler

    def detach(self, service: str) -> None:
        self._local.pop(service.encode(), None)

    def has_service(self, service: str | bytes) -> bool:
        name = service.encode() if isinstance(service, str) else service
        if name in self._local:
            return True
        svc = self._services.get(name)
        return bool(svc and svc.workers)

    def services(self) -> dict[str, dict[str, Any]]:
        """Every service the broker knows: local or remote, worker counts, queue depth, requests."""
        out: dict[str, dict[str, Any]] = {}
        for name in self._local:
            out[_name(name)] = {"local": True, "workers": 0, "idle": 0, "queued": 0}
        for name, svc in self._services.items():
            entry = out.setdefault(_name(name), {"local": False})
            entry.update(workers=len(svc.workers), idle=len(svc.idle), queued=len(svc.queue),
                         requests=svc.requests)
        return out

    async def request(self, service: str, op: str, args: dict[str, Any] | None = None, *,
                      rid: str | None = None, timeout: float | None = None) -> Any:
        """Make a request from inside the broker's process: direct call when local, else via a worker."""
        name = service.encode()
        if self._closing:
            raise Unavailable("service is shutting down")
        local = self._local.get(name)
        if local is not None:
            self.stats.local_requests += 1
            try:
                result = local(codec.Request(op, args if args is not None else {}, rid))
                if not _plain(result) and inspect.isawaitable(result):
                    self._begin()
                    try:
                        async with asyncio.timeout(timeout or self.request_timeout):
                            result = await result
                    except TimeoutError:
                        self.stats.timeouts += 1
                        raise Timeout(f"service {service!r} did not answer op {op!r} in time") from None
                    finally:
                        self._end()
            except MlpError:
                raise
            except Exception as exc:  # as on the socket path: a LocalService bug becomes `internal`
                log.error("service_handler_failed", service=service, op=op, rid=rid, exc_info=exc)
                raise InternalError(f"{type(exc).__name__}: {exc}") from None
            return result
        body = codec.encode_request(op, args, rid=rid)
        addr = _LOCAL_ADDR + next(self._ids).to_bytes(8, "little")
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._waiters[addr] = fut
        self._begin()
        try:
            self._route(name, addr, _RFC, [body], time.monotonic() + (timeout or self.request_timeout))
            if not fut.done():
                self._reader_kick()
            reply = await fut
        finally:
            self._waiters.pop(addr, None)
            self._end()
        return codec.decode_reply(reply)

    # -- the socket side ---------------------------------------------------------------------------

    def _on_message(self, frames: list[bytes]) -> None:
        try:
            if len(frames) < 3:
                raise CodecError(f"MDP message too short ({len(frames)} frames)")
            sender = frames[0]
            if frames[1] == EMPTY:
                delimited, header, rest = True, frames[2], frames[3:]
            else:
                delimited, header, rest = False, frames[1], frames[2:]
            if header == CLIENT:
                self._on_client(sender, delimited, rest)
            elif header == WORKER:
                self._on_worker(sender, delimited, rest)
            else:
                raise CodecError(f"unknown protocol header {header[:16]!r}")
        except CodecError as exc:
            self.stats.malformed += 1
            log.warning("malformed_frame_dropped", error=exc.message, frames=len(frames))
        except Exception as exc:  # a peer must never take the broker down
            self.stats.malformed += 1
            log.error("message_handling_failed", frames=len(frames), exc_info=exc)

    def _on_client(self, client: bytes, delimited: bool, rest: list[bytes]) -> None:
        dialect = _DIALECTS.get((delimited, rest[0] if rest else b""))
        if dialect is None or len(rest) < 2:
            raise CodecError("client message must be REQUEST, service, body")
        service = rest[1]
        body = rest[2:]
        self.stats.requests += 1
        if self._closing:
            self._reply_error(client, dialect, service, Unavailable("service is shutting down"))
        elif service.startswith(b"mmi."):
            self._on_mmi(client, dialect, service, body)
        elif service in self._local:
            self._call_local(client, dialect, service, body)
        else:
            self._route(service, client, dialect, body, time.monotonic() + self.request_timeout)

    def _on_mmi(self, client: bytes, dialect: _Dialect, service: bytes, body: list[bytes]) -> None:
        if service == MMI_SERVICE:
            code = b"200" if body and self.has_service(body[0]) else b"404"
        else:
            code = b"501"
        self._send_client(client, dialect, service, [code])

    def _call_local(self, client: bytes, dialect: _Dialect, service: bytes, body: list[bytes]) -> None:
        self.stats.local_requests += 1
        reply = serve_request(self._local[service], body, self._count_malformed)
        if isinstance(reply, bytes):
            self._send_client(client, dialect, service, [reply])
        else:
            self._spawn(self._finish_local(client, dialect, service, reply))

    async def _finish_local(self, client: bytes, dialect: _Dialect, service: bytes,
                            pending: Awaitable[bytes]) -> None:
        try:
            async with asyncio.timeout(self.request_timeout):
                reply = await pending
        except TimeoutError:
            self.stats.timeouts += 1
            reply = codec.encode_error(Timeout(f"service {_name(service)!r} did not answer in time"))
        except asyncio.CancelledError:  # the drain deadline passed: answer rather than leave the client waiting
            self._send_client(client, dialect, service, [codec.encode_error(
                Unavailable(f"service {_name(service)!r} shut down before answering"))])
            raise
        self._send_client(client, dialect, service, [reply])

    def _route(self, service: bytes, client: bytes, dialect: _Dialect, body: list[bytes],
               deadline: float) -> None:
        svc = self._services.get(service)
        if svc is None or not svc.workers:
            self._reply_error(client, dialect, service,
                              Unavailable(f"no live worker for service {_name(service)!r}"))
            return
        if len(svc.queue) >= self.max_queue:
            self._reply_error(client, dialect, service, Unavailable(f"service {_name(service)!r} queue full"))
            return
        svc.requests += 1
        svc.queue.append(_Pending(client, dialect, body, deadline))
        if client not in self._waiters:
            self._begin()
        self._dispatch(svc)

    def _dispatch(self, svc: _Service) -> None:
        while svc.idle and svc.queue:
            worker = svc.idle.popleft()
            if worker.identity not in self._workers:
                continue
            pending = svc.queue.popleft()
            worker.current, worker.stale = pending.client, False
            self._held[worker.identity] = pending
            self._send_worker(worker.identity, W_REQUEST, [pending.client, EMPTY, *pending.body])

    def _on_worker(self, identity: bytes, delimited: bool, rest: list[bytes]) -> None:
        if not rest:
            raise CodecError("worker message without command")
        command = rest[0]
        worker = self._workers.get(identity)
        if command == READY:
            if worker is not None or len(rest) < 2:
                if worker is None:
                    self._send_worker(identity, DISCONNECT, delimited=delimited)
                self._drop_worker(identity, notify=worker is not None, reason="unexpected READY")
                return
            self._add_worker(identity, rest[1], delimited)
            return
        if worker is None:
            # Not READY and unknown: RFC 18 says disconnect it (in the framing it used).
            self._send_worker(identity, DISCONNECT, delimited=delimited)
            return
        worker.expiry = time.monotonic() + self.heartbeat_interval * self.liveness
        if command in (FINAL, PARTIAL):
            if len(rest) < 3 or rest[2] != EMPTY:
                raise CodecError("worker reply must carry client address, empty frame and body")
            client, body = rest[1], rest[3:]
            self._on_reply(worker, client, body, final=command == FINAL)
        elif command == HEARTBEAT:
            pass
        elif command == DISCONNECT:
            self._drop_worker(identity, notify=False, reason="worker disconnected")
        else:
            raise CodecError(f"unknown worker command {command!r}")

    def _on_reply(self, worker: _Worker, client: bytes, body: list[bytes], *, final: bool) -> None:
        pending = self._held.get(worker.identity)
        if pending is None or client != worker.current:
            # Not the request this worker holds: a confused peer. Ignore it; above all, never mark the
            # worker idle for it, which would hand it a second request while it serves one.
            raise CodecError(f"worker {worker.identity.hex()} replied to a request it does not hold")
        if worker.stale:
            log.info("late_worker_reply_dropped", worker=worker.identity.hex(), service=_name(worker.service))
        else:
            fut = self._waiters.get(client)
            if fut is not None:
                if final and not fut.done():
                    fut.set_result(body[0] if body else codec.encode_error(InternalError("empty reply")))
            else:
                self._send_client(client, pending.dialect, worker.service, body, final=final)
                if final:
                    self._end()
        if final:
            del self._held[worker.identity]
            worker.current, worker.stale = None, False
            svc = self._services[worker.service]
            svc.idle.append(worker)
            self._dispatch(svc)

    def _add_worker(self, identity: bytes, service: bytes, delimited: bool) -> None:
        svc = self._services.get(service)
        if svc is None:
            svc = self._services[service] = _Service(service)
        worker = _Worker(identity, service, time.monotonic() + self.heartbeat_interval * self.liveness,
                         delimited)
        self._workers[identity] = worker
        svc.workers[identity] = worker
        svc.idle.append(worker)
        log.info("worker_ready", service=_name(service), worker=identity.hex(),
                 workers=len(svc.workers))
        self._dispatch(svc)

    def _drop_worker(self, identity: bytes, *, notify: bool, reason: str) -> None:
        if notify:
            self._send_worker(identity, DISCONNECT)
        worker = self._workers.pop(identity, None)
        if worker is None:
            return
        svc = self._services[worker.service]
        svc.workers.pop(identity, None)
        try:
            svc.idle.remove(worker)
        except ValueError:
            pass
        pending = self._held.pop(identity, None)
        if pending is not None and not worker.stale:
            self._fail_pending(pending, worker.service, Unavailable(
                f"worker of service {_name(worker.service)!r} died during the request"))
        log.warning("worker_removed", service=_name(worker.service), worker=identity.hex(),
                    reason=reason, workers=len(svc.workers))
        if not svc.workers:
            while svc.queue:
                self._fail_pending(svc.queue.popleft(), svc.name, Unavailable(
                    f"no live worker for service {_name(svc.name)!r}"))

    # -- timers ------------------------------------------------------------------------------------

    async def _housekeeping(self) -> None:
        period = min(self.heartbeat_interval, 0.25)
        last_beat = 0.0
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            try:
                self._expire(now)
                if now - last_beat >= self.heartbeat_interval:
                    last_beat = now
                    for worker in list(self._workers.values()):
                        self._send_worker(worker.identity, HEARTBEAT)
                self._reader_kick()
            except Exception as exc:  # the timer must survive anything
                log.error("broker_housekeeping_failed", exc_info=exc)

    def _expire(self, now: float) -> None:
        for worker in [w for w in self._workers.values() if w.expiry < now]:
            self.stats.workers_expired += 1
            self._drop_worker(worker.identity, notify=False, reason="heartbeat expired")
        for identity, pending in list(self._held.items()):
            held_by = self._workers.get(identity)
            if held_by is not None and held_by.stale and pending.deadline + self.request_timeout < now:
                # Heartbeats keep it alive but it never answers: free the capacity it holds hostage.
                self._drop_worker(identity, notify=True, reason="no reply long after its request timed out")
                continue
            if pending.deadline < now and held_by is not None and not held_by.stale:
                held_by.stale = True
                self.stats.timeouts += 1
                self._fail_pending(pending, held_by.service, Timeout(
                    f"service {_name(held_by.service)!r} did not answer in time"))
        for svc in self._services.values():
            while svc.queue and svc.queue[0].deadline < now:
                self.stats.timeouts += 1
                self._fail_pending(svc.queue.popleft(), svc.name, Timeout(
                    f"no worker of service {_name(svc.name)!r} became free in time"))

    # -- sending -----------------------------------------------------------------------------------

    def _fail_pending(self, pending: _Pending, service: bytes, error: MlpError) -> None:
        fut = self._waiters.get(pending.client)
        if fut is not None:
            if not fut.done():
                fut.set_result(codec.encode_error(error))
            return
        self._reply_error(pending.client, pending.dialect, service, error)
        self._end()

    def _reply_error(self, client: bytes, dialect: _Dialect, service: bytes, error: MlpError) -> None:
        self.stats.errors += 1
        fut = self._waiters.get(client)
        if fut is not None:
            if not fut.done():
                fut.set_result(codec.encode_error(error))
            return
        self._send_client(client, dialect, service, [codec.encode_error(error)])

    def _send_client(self, client: bytes, dialect: _Dialect, service: bytes, body: list[bytes],
                     *, final: bool = True) -> None:
        if self._sock is None:
            return
        command = dialect.final if final else dialect.partial
        frames = [client, EMPTY, CLIENT, command, service, *body] if dialect.delimited else \
            [client, CLIENT, command, service, *body]
        try:
            send_frames(self._sock, frames)
        except zmq.ZMQError as exc:
            log.warning("reply_not_sent", error=str(exc))

    def _send_worker(self, identity: bytes, command: bytes, body: list[bytes] | None = None, *,
                     delimited: bool | None = None) -> None:
        if self._sock is None:
            return
        if delimited is None:
            worker = self._workers.get(identity)
            delimited = worker is not None and worker.delimited
        head = [identity, EMPTY, WORKER] if delimited else [identity, WORKER]
        try:
            send_frames(self._sock, [*head, command, *(body or ())])
        except zmq.ZMQError as exc:
            log.warning("worker_message_not_sent", error=str(exc))

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



# -- worker --------------------------------------------------------------------------------------------


class Worker:
    """An asyncio MDP/0.2 worker serving one service for a (usually remote) broker.

    The broker gives a worker one request at a time; heartbeats keep flowing while a request runs. When
    the broker falls silent for ``liveness`` heartbeat intervals, or says DISCONNECT, the worker
    reconnects with a fresh socket and says READY again. `stop` lets the request in progress finish (up
    to ``drain_timeout``) and reply before the worker says DISCONNECT.
    """

    def __init__(self, context: zmq.asyncio.Context, broker: str, service: str, handler: LocalService, *,
                 heartbeat_interval: float = 2.5, liveness: int = 3, reconnect_delay: float = 0.1,
                 drain_timeout: float = 10.0) -> None:
        self._context = context
        self.broker = broker
        self.service = service
        self._handler = handler
        self.heartbeat_interval = heartbeat_interval
        self.liveness = liveness
        self.reconnect_delay = reconnect_delay
        self.drain_timeout = drain_timeout
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
        await sock.send_multipart([WORKER, READY, service])
        heard = False
        last_recv = last_send = time.monotonic()
        poll_ms = int(min(self.heartbeat_interval, 0.1) * 1000)  # also how soon `stop` is noticed
        while not self._stopped:
            if await sock.poll(poll_ms, zmq.POLLIN):  # type: ignore[call-arg]
                frames = await sock.recv_multipart()
                heard = True
                last_recv = time.monotonic()
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
            now = time.monotonic()
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
            await sock.send_multipart([WORKER, FINAL, client, EMPTY, reply])


# -- clients ---------------------------------------------------------------------------------------------


def _reply_frames(frames: list[bytes], service: bytes) -> list[bytes]:
    """The body frames of a FINAL reply to a request for `service`."""
    if len(frames) < 3 or frames[0] != CLIENT or frames[1] != C_FINAL:
        raise CodecError(f"malformed MDP reply ({len(frames)} frames)")
    if frames[2] != service:
        raise CodecError(f"reply for service {frames[2]!r}, expected {service!r}")
    return frames[3:]


def _reply_body(frames: list[bytes], service: bytes) -> bytes:
    body = _reply_frames(frames, service)
    if len(body) != 1:
        raise CodecError(f"reply must carry one body frame, got {len(body)}")
    return body[0]


class Client:
    """A blocking MDP/0.2 client for scripts and benchmarks: one request at a time.

    >>> # with Client("tcp://127.0.0.1:5555") as c: c.request("kernel", "ping")
    """

    def __init__(self, broker: str, *, timeout: float = 5.0, context: zmq.Context[Any] | None = None) -> None:
        self.broker = broker
        self.timeout = timeout
        self._context = context or zmq.Context.instance()
        self._sock = self._connect()

    def _connect(self) -> zmq.Socket[bytes]:
        sock: zmq.Socket[bytes] = self._context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVTIMEO, int(self.timeout * 1000))
        sock.connect(self.broker)
        return sock

    def request_raw(self, service: str, body: bytes, *, timeout: float | None = None) -> bytes:
        """Send one body frame, return the reply's body frame."""
        name = service.encode()
        sock = self._sock
        if timeout is not None:
            sock.setsockopt(zmq.RCVTIMEO, int(timeout * 1000))
        try:
            sock.send(CLIENT, _MORE)
            sock.send(REQUEST, _MORE)
            sock.send(name, _MORE)
            sock.send(body, 0)
            frame = sock.recv(0, copy=False)  # blocks up to RCVTIMEO
            frames = [frame.bytes]
            while frame.more:
                frame = sock.recv(0, copy=False)
                frames.append(frame.bytes)
        except zmq.Again:
            sock.close(linger=0)  # a late reply must never answer the next request
            self._sock = self._connect()
            raise Timeout(f"no reply from service {service!r} within {timeout or self.timeout}s") from None
        finally:
            if timeout is not None and not sock.closed:
                sock.setsockopt(zmq.RCVTIMEO, int(self.timeout * 1000))
        return _reply_body(frames, name)

    def request(self, service: str, op: str, args: dict[str, Any] | None = None, *,
                timeout: float | None = None, rid: str | None = None) -> Any:
        return codec.decode_reply(self.request_raw(service, codec.encode_request(op, args, rid=rid),
                                                   timeout=timeout))

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

    def __init__(self, context: zmq.Context[zmq.Socket[bytes]], broker: str) -> None:
        self.sock: zmq.Socket[bytes] = context.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(broker)
        self.waiter: asyncio.Future[list[bytes]] | None = None
        self.reader = SocketReader(self.sock, self._on_message)

    def _on_message(self, frames: list[bytes]) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(frames)
        else:  # cannot happen: a socket whose request timed out is closed, never reused
            log.warning("unexpected_reply_dropped", frames=len(frames))

    def close(self) -> None:
        self.reader.close()
        self.sock.close(linger=0)


def _expire(waiter: asyncio.Future[list[bytes]], message: str) -> None:
    if not waiter.done():
        waiter.set_exception(Timeout(message))


class AsyncClient:
    """An asyncio MDP/0.2 client; concurrent requests each take a socket from a pool.

    MDP replies carry no correlation id, so a socket has at most one request outstanding; a socket
    whose request timed out is closed rather than reused. Sockets are plain ZeroMQ sockets whose file
    descriptors the event loop watches (as the broker does), which costs far less than ``zmq.asyncio``.
    """

    def __init__(self, broker: str, *, timeout: float = 5.0,
                 context: zmq.asyncio.Context | zmq.Context[Any] | None = None) -> None:
        self.broker = broker
        self.timeout = timeout
        self._owner = context if context is not None else zmq.asyncio.Context.instance()  # keeps it alive
        self._context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.shadow(self._owner.underlying)
        self._idle: list[_Connection] = []
        self._closed = False

    async def request_raw(self, service: str, frames: list[bytes], *, timeout: float | None = None) -> list[bytes]:
        if self._closed:
            raise Unavailable("client closed")
        conn = self._idle.pop() if self._idle else _Connection(self._context, self.broker)
        name = service.encode()
        loop = asyncio.get_running_loop()
        waiter = conn.waiter = loop.create_future()
        seconds = timeout or self.timeout
        timer = loop.call_later(seconds, _expire, waiter, f"no reply from service {service!r} within {seconds}s")
        try:
            send_frames(conn.sock, [CLIENT, REQUEST, name, *frames])
            conn.reader.kick()
            reply = await waiter
        except BaseException:
            conn.close()
            raise
        finally:
            timer.cancel()
            conn.waiter = None
        if self._closed:
            conn.close()
        else:
            self._idle.append(conn)
        return _reply_frames(reply, name)

    async def request(self, service: str, op: str, args: dict[str, Any] | None = None, *,
                      timeout: float | None = None, rid: str | None = None) -> Any:
        body = await self.request_raw(service, [codec.encode_request(op, args, rid=rid)], timeout=timeout)
        if not body:
            raise CodecError("reply without body")
        return codec.decode_reply(body[0])

    async def mmi_service(self, service: str) -> bool:
        return (await self.request_raw(MMI_SERVICE.decode(), [service.encode()])) == [b"200"]

    def close(self) -> None:
        self._closed = True
        for conn in self._idle:
            conn.close()
        self._idle.clear()
