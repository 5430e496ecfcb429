"""The MDP/0.2 broker: one ROUTER socket for clients and workers, and services in its own process.

The broker serves *local services*: objects in the broker's own process that take a decoded request and
return its result. A request for a local service is answered by calling it directly, with no extra socket
hop; every other service is served by remote workers (`ServiceTable`), over which the broker spreads
requests (least recently used first). A request for a service that has neither gets an ``unavailable``
error at once, never a hang.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import time
from collections.abc import Awaitable
from typing import Any

import structlog
import zmq

from .. import codec
from ..errors import CodecError, Forbidden, InternalError, MlpError, Timeout, Unavailable
from .clock import ClockLike, monotonic_of
from .frames import (
    CLIENT,
    DIALECTS,
    EMPTY,
    MMI_SERVICE,
    RFC,
    WORKER,
    Dialect,
    SocketReader,
    curve_server,
    recv_routed,
    recv_routed_user,
    service_name,
)
from .gate import Gate
from .sending import LOCAL_ADDR
from .services import ServiceTable
from .serving import LARGE_FRAME, LocalService, is_plain, serve_decoded, serve_request
from .spreading import Spreader

log = structlog.get_logger(__name__)


class Broker(ServiceTable):
    """An asyncio MDP/0.2 broker on one ROUTER socket, bound to any number of endpoints.

    Heartbeats, worker expiry and request deadlines read `clock` (anything with ``monotonic()``, or a
    callable returning seconds; real time by default), so a test can move time instead of sleeping.
    """

    def __init__(self, context: zmq.Context[Any], endpoints: list[str], *, heartbeat_interval: float = 2.5,
                 liveness: int = 3, request_timeout: float = 10.0, max_queue: int = 10_000,
                 hwm: int = 100_000, max_message_bytes: int = -1, clock: ClockLike | None = None,
                 gate: Gate | None = None, curve: tuple[str, str] | None = None) -> None:
        super().__init__(heartbeat_interval=heartbeat_interval, liveness=liveness,
                         request_timeout=request_timeout, max_queue=max_queue, monotonic=monotonic_of(clock))
        # plain sockets: the broker polls their file descriptors itself
        self._context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.shadow(context.underlying)
        self.endpoints = list(endpoints)
        self._hwm = hwm
        self._max_message = max_message_bytes
        self._local: dict[bytes, LocalService] = {}
        self._ids = itertools.count(1)
        self._closing = False
        self._timer: asyncio.Task[None] | None = None
        self.bound: list[str] = []
        self._gate = gate  # asked before any service sees a request, and before a worker is accepted
        self._curve = curve  # (public, secret) Z85: the socket is a CURVE server (ZAP domain "broker")
        self.spreader: Spreader | None = None  # set with several processes: stateless ops may go to workers
        #: Service-name prefixes only this process may call (`request`); a socket client gets `forbidden`.
        self.private: tuple[bytes, ...] = ()

    # -- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> list[str]:
        """Bind every endpoint and start serving; returns the bound endpoints (``*`` ports resolved)."""
        sock = self._context.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 0)
        sock.setsockopt(zmq.SNDHWM, self._hwm)
        sock.setsockopt(zmq.RCVHWM, self._hwm)
        sock.setsockopt(zmq.MAXMSGSIZE, self._max_message)  # a larger frame disconnects its sender
        if self._curve is not None:
            curve_server(sock, *self._curve, b"broker")
        try:
            for endpoint in self.endpoints:
                sock.bind(endpoint)
                self.bound.append(sock.getsockopt_string(zmq.LAST_ENDPOINT))
        except BaseException:
            sock.close(linger=0)
            raise
        self._sock = sock
        if self._gate is not None and self._curve is not None:  # only ZAP gives connections a User-Id
            self._reader = SocketReader(sock, self._on_message_from, receive=recv_routed_user, with_user=True,
                                        on_drained=self._flush)
        else:
            self._reader = SocketReader(sock, self._on_message, receive=recv_routed, on_drained=self._flush)
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
            self._disconnect_workers()
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
            out[service_name(name)] = {"local": True, "workers": 0, "idle": 0, "queued": 0}
        for name, svc in self._services.items():
            entry = out.setdefault(service_name(name), {"local": False})
            entry.update(workers=len(svc.workers), idle=len(svc.idle), queued=len(svc.queue),
                         requests=svc.requests)
        return out

    async def request(self, service: str, op: str, args: dict[str, Any] | None = None, *,
                      rid: str | None = None, timeout: float | None = None, principal: Any = None) -> Any:
        """Make a request from inside the broker's process: direct call when local, else via a worker.

        `principal` is who asks from outside (the REST edge passes the bearer token's principal); None is
        the process itself (an actor asking another service)."""
        name = service.encode()
        if self._closing:
            raise Unavailable("service is shutting down")
        who: str | None = None
        if principal is not None and self._gate is not None:
            who = self._gate.admit(principal, service, op)
        local = self._local.get(name)
        spreader = self.spreader
        if local is not None and spreader is not None and name in spreader.services:
            svc = self._services.get(name)
            if svc is not None and svc.idle and spreader.wants_worker(name, op):
                spreader.offloaded += 1
                local = None
        if local is not None:
            self.stats.local_requests += 1
            measured = spreader if spreader is not None and name in spreader.services else None
            try:
                started = time.perf_counter()
                result = local(codec.Request(op, args if args is not None else {}, rid, 0, who,
                                             "internal" if principal is None else "rest"))
                if not is_plain(result) and inspect.isawaitable(result):
                    self._begin()
                    if measured is not None:
                        measured.began(name)
                    try:
                        async with asyncio.timeout(timeout or self.request_timeout):
                            result = await result
                    except TimeoutError:
                        self.stats.timeouts += 1
                        raise Timeout(f"service {service!r} did not answer op {op!r} in time") from None
                    finally:
                        self._end()
                        if measured is not None:
                            measured.ended(name)
                elif measured is not None:
                    measured.served(name, op, time.perf_counter() - started)
            except MlpError:
                raise
            except Exception as exc:  # as on the socket path: a LocalService bug becomes `internal`
                log.error("service_handler_failed", service=service, op=op, rid=rid, exc_info=exc)
                raise InternalError(f"{type(exc).__name__}: {exc}") from None
            return result
        body = codec.encode_request(op, args, rid=rid)
        addr = LOCAL_ADDR + next(self._ids).to_bytes(8, "little")
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._waiters[addr] = fut
        self._begin()
        try:
            self._route(name, addr, RFC, [body], self._monotonic() + (timeout or self.request_timeout))
            if not fut.done():
                self._reader_kick()
            reply = await fut
        finally:
            self._waiters.pop(addr, None)
            self._end()
        return codec.decode_reply(reply)

    # -- the socket side ---------------------------------------------------------------------------

    def _on_message_from(self, frames: list[bytes], user: str | None) -> None:
        """`_on_message` with the sender's ZAP User-Id (the broker has a gate)."""
        self._user = user
        try:
            self._on_message(frames)
        finally:
            self._user = None

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
        if self._outbox is None:  # the first message of a drain is answered at once, the rest in one pass
            self._outbox = []

    def _on_client(self, client: bytes, delimited: bool, rest: list[bytes]) -> None:
        dialect = DIALECTS.get((delimited, rest[0] if rest else b""))
        if dialect is None or len(rest) < 2:
            raise CodecError("client message must be REQUEST, service, body")
        service = rest[1]
        body = rest[2:]
        self.stats.requests += 1
        if self._closing:
            self._reply_error(client, dialect, service, Unavailable("service is shutting down"))
            return
        if service.startswith(b"mmi."):
            self._on_mmi(client, dialect, service, body)
            return
        if self.private and service.startswith(self.private):
            self.stats.refused += 1
            self._reply_error(client, dialect, service, Forbidden(f"service {service_name(service)!r} is internal"))
            return
        watched = self._watched_op(service, body) if self.spreader is not None else None
        local = service in self._local and (watched is None or not self._offload(service, watched))
        if self._gate is not None:
            self._on_gated(client, dialect, service, body, local, watched)
        elif local:
            self._call_local(client, dialect, service, body, None, watched)
        else:
            self._route(service, client, dialect, body, self._monotonic() + self.request_timeout)

    def _on_gated(self, client: bytes, dialect: Dialect, service: bytes, body: list[bytes], local: bool,
                  watched: str | None) -> None:
        """A request the gate must admit first. For a service of this process the body is decoded once,
        for the gate and the service alike; a large one, or one for a worker, only has its op read."""
        try:
            if len(body) != 1:
                raise CodecError(f"request must carry exactly one body frame, got {len(body)}")
            decoded: Any = None
            if local and len(body[0]) < LARGE_FRAME:
                decoded = codec.unpackb(body[0])
                op = decoded.get("op") if type(decoded) is dict else None
                if type(op) is not str:
                    codec.check_request(decoded)  # raises the CodecError that says what is wrong
                    raise CodecError("request field 'op' must be a non-empty string")
            else:
                op = codec.peek_op(body[0])
            who = self._gate.admit(self._user, service_name(service), op) if self._gate is not None else None
            request = codec.check_request(decoded, who, "zmq") if decoded is not None else None
        except CodecError as exc:
            self.stats.malformed += 1
            self._reply_error(client, dialect, service, exc)
            return
        except MlpError as exc:
            self.stats.refused += 1
            self._reply_error(client, dialect, service, exc)
            return
        if request is not None and watched is None:
            self.stats.local_requests += 1
            self._answer(client, dialect, service, serve_decoded(self._local[service], request))
        elif local:
            self._call_local(client, dialect, service, body, who, watched)
        else:
            self._route(service, client, dialect, body, self._monotonic() + self.request_timeout)

    def _on_mmi(self, client: bytes, dialect: Dialect, service: bytes, body: list[bytes]) -> None:
        if service == MMI_SERVICE:
            code = b"200" if body and self.has_service(body[0]) else b"404"
        else:
            code = b"501"
        self._send_client(client, dialect, service, [code])

    def _watched_op(self, service: bytes, body: list[bytes]) -> str | None:
        """The op of a request for a service the spreader watches (read once per request), else None."""
        assert self.spreader is not None
        if service not in self.spreader.services or len(body) != 1:
            return None
        svc = self._services.get(service)
        if svc is None or not svc.workers:  # no other process serves it: nothing to spread, nothing to read
            return None
        try:
            return codec.peek_op(body[0])
        except CodecError:
            return None  # answered locally, as a malformed request

    def _offload(self, service: bytes, op: str) -> bool:
        """Whether a request for a service of this process goes to an idle worker of another process
        instead (stateless ops only, while this process is busy with the service: see `Spreader`)."""
        assert self.spreader is not None
        svc = self._services.get(service)
        if svc is None or not svc.idle or not self.spreader.wants_worker(service, op):
            return False
        self.spreader.offloaded += 1
        return True

    def _call_local(self, client: bytes, dialect: Dialect, service: bytes, body: list[bytes],
                    who: str | None = None, watched: str | None = None) -> None:
        self.stats.local_requests += 1
        if watched is not None:
            assert self.spreader is not None
            self._call_local_measured(self.spreader, client, dialect, service, body, who, watched)
            return
        reply = serve_request(self._local[service], body, self._count_malformed, who)
        if isinstance(reply, bytes):  # `_answer` written out: this is every request's path
            self._send_client(client, dialect, service, [reply])
        else:
            self._spawn(self._finish_local(client, dialect, service, reply))

    def _answer(self, client: bytes, dialect: Dialect, service: bytes, reply: bytes | Awaitable[bytes]) -> None:
        if isinstance(reply, bytes):
            self._send_client(client, dialect, service, [reply])
        else:
            self._spawn(self._finish_local(client, dialect, service, reply))

    def _call_local_measured(self, spreader: Spreader, client: bytes, dialect: Dialect, service: bytes,
                             body: list[bytes], who: str | None, op: str) -> None:
        """`_call_local` telling the spreader what the request of `op` cost this process."""
        started = time.perf_counter()
        reply = serve_request(self._local[service], body, self._count_malformed, who)
        if isinstance(reply, bytes):
            self._send_client(client, dialect, service, [reply])
            spreader.served(service, op, time.perf_counter() - started)
        else:
            spreader.began(service)
            self._spawn(self._finish_local(client, dialect, service, reply, spreader))

    async def _finish_local(self, client: bytes, dialect: Dialect, service: bytes,
                            pending: Awaitable[bytes], spreader: Spreader | None = None) -> None:
        try:
            async with asyncio.timeout(self.request_timeout):
                reply = await pending
        except TimeoutError:
            self.stats.timeouts += 1
            reply = codec.encode_error(Timeout(f"service {service_name(service)!r} did not answer in time"))
        except asyncio.CancelledError:  # the drain deadline passed: answer rather than leave the client waiting
            self._send_client(client, dialect, service, [codec.encode_error(
                Unavailable(f"service {service_name(service)!r} shut down before answering"))])
            raise
        finally:
            if spreader is not None:
                spreader.ended(service)
        self._send_client(client, dialect, service, [reply])

    # -- timers ------------------------------------------------------------------------------------

    async def _housekeeping(self) -> None:
        """Expire silent workers and late requests, heartbeat the workers; ticks in real time, reads the clock."""
        period = min(self.heartbeat_interval, 0.25)
        last_beat = 0.0
        while True:
            await asyncio.sleep(period)
            now = self._monotonic()
            try:
                self._expire(now)
                if now - last_beat >= self.heartbeat_interval:
                    last_beat = now
                    self._heartbeat_workers()
                self._reader_kick()
            except Exception as exc:  # the timer must survive anything
                log.error("broker_housekeeping_failed", exc_info=exc)
