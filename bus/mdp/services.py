"""The broker's table of remote services: workers by service, the requests queued for them, expiry.

Each service keeps its live workers, the idle ones (least recently used first) and a bounded queue of
requests; a worker gets one request at a time. A worker silent for ``liveness`` heartbeat intervals is
dropped and the request it held fails ``unavailable``; a request past its deadline fails ``timeout``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from .. import codec
from ..errors import CodecError, InternalError, Timeout, Unavailable
from .frames import (
    DISCONNECT,
    EMPTY,
    FINAL,
    HEARTBEAT,
    PARTIAL,
    READY,
    W_REQUEST,
    WORKER,
    Dialect,
    service_name,
)
from .gate import Gate
from .sending import BrokerSocket, Pending

log = structlog.get_logger(__name__)


@dataclass
class _Worker:
    identity: bytes
    service: bytes
    expiry: float
    delimited: bool  # the worker prefixes an empty frame (MDP/0.1 habit); answer it the same way
    current: bytes | None = None  # client address of the request in progress
    stale: bool = False  # the request in progress timed out; drop its reply


@dataclass
class _Service:
    name: bytes
    workers: dict[bytes, _Worker] = field(default_factory=dict)
    idle: deque[_Worker] = field(default_factory=deque)
    queue: deque[Pending] = field(default_factory=deque)
    requests: int = 0


class ServiceTable(BrokerSocket):
    """Remote services and their workers: routing, the worker side of the protocol, expiry."""

    def __init__(self, *, heartbeat_interval: float, liveness: int, request_timeout: float, max_queue: int,
                 monotonic: Callable[[], float]) -> None:
        super().__init__()
        self.heartbeat_interval = heartbeat_interval
        self.liveness = liveness
        self.request_timeout = request_timeout
        self.max_queue = max_queue
        self._monotonic = monotonic
        self._services: dict[bytes, _Service] = {}
        self._workers: dict[bytes, _Worker] = {}
        self._held: dict[bytes, Pending] = {}  # worker identity -> the request it is serving
        self._gate: Gate | None = None  # the broker's (asked before a worker is accepted)
        self._user: str | None = None  # the ZAP User-Id of the message being handled (set by the broker)

    def _may_serve(self, service: bytes) -> bool:
        """Whether the sender of the READY being handled may serve `service` (always, without a gate)."""
        return self._gate is None or bool(self._gate.may_serve(self._user, service_name(service)))

    # -- routing -----------------------------------------------------------------------------------

    def _route(self, service: bytes, client: bytes, dialect: Dialect, body: list[bytes],
               deadline: float) -> None:
        svc = self._services.get(service)
        if svc is None or not svc.workers:
            self._reply_error(client, dialect, service,
                              Unavailable(f"no live worker for service {service_name(service)!r}"))
            return
        if len(svc.queue) >= self.max_queue:
            self._reply_error(client, dialect, service,
                              Unavailable(f"service {service_name(service)!r} queue full"))
            return
        svc.requests += 1
        svc.queue.append(Pending(client, dialect, body, deadline))
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

    # -- the worker side ---------------------------------------------------------------------------

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
            if not self._may_serve(rest[1]):
                self.stats.refused_ready += 1
                log.warning("worker_ready_refused", service=service_name(rest[1]), user=self._user)
                self._send_worker(identity, DISCONNECT, delimited=delimited)
                return
            self._add_worker(identity, rest[1], delimited)
            return
        if worker is None:
            # Not READY and unknown: RFC 18 says disconnect it (in the framing it used).
            self._send_worker(identity, DISCONNECT, delimited=delimited)
            return
        worker.expiry = self._monotonic() + self.heartbeat_interval * self.liveness
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
            log.info("late_worker_reply_dropped", worker=worker.identity.hex(),
                     service=service_name(worker.service))
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
        worker = _Worker(identity, service, self._monotonic() + self.heartbeat_interval * self.liveness,
                         delimited)
        self._workers[identity] = worker
        svc.workers[identity] = worker
        svc.idle.append(worker)
        log.info("worker_ready", service=service_name(service), worker=identity.hex(),
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
                f"worker of service {service_name(worker.service)!r} died during the request"))
        log.warning("worker_removed", service=service_name(worker.service), worker=identity.hex(),
                    reason=reason, workers=len(svc.workers))
        if not svc.workers:
            while svc.queue:
                self._fail_pending(svc.queue.popleft(), svc.name, Unavailable(
                    f"no live worker for service {service_name(svc.name)!r}"))

    def drop_workers(self, prefix: bytes, *, reason: str) -> int:
        """Drop every worker whose identity starts with `prefix` (a process known to be gone): the requests
        they held fail ``unavailable`` now rather than at heartbeat expiry. Returns how many were dropped."""
        gone = [identity for identity in self._workers if identity.startswith(prefix)]
        for identity in gone:
            self._drop_worker(identity, notify=False, reason=reason)
        return len(gone)

    def _send_worker(self, identity: bytes, command: bytes, body: list[bytes] | None = None, *,
                     delimited: bool | None = None) -> None:
        if delimited is None:
            worker = self._workers.get(identity)
            delimited = worker is not None and worker.delimited
        head = [identity, EMPTY, WORKER] if delimited else [identity, WORKER]
        self._emit([*head, command, *(body or ())])

    # -- time --------------------------------------------------------------------------------------

    def _heartbeat_workers(self) -> None:
        for worker in list(self._workers.values()):
            self._send_worker(worker.identity, HEARTBEAT)

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
                    f"service {service_name(held_by.service)!r} did not answer in time"))
        for svc in self._services.values():
            while svc.queue and svc.queue[0].deadline < now:
                self.stats.timeouts += 1
                self._fail_pending(svc.queue.popleft(), svc.name, Timeout(
                    f"no worker of service {service_name(svc.name)!r} became free in time"))

    def _disconnect_workers(self) -> None:
        for worker in list(self._workers.values()):
            self._send_worker(worker.identity, DISCONNECT)
