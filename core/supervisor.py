"""Supervision: one `ActorCell` per actor, restarting it one-for-one under a restart-intensity limit.

Lifecycle states::

    starting -> running -> stopping -> stopped
                   |  ^
             crash v  | start ok
               restarting --(more than max_restarts crashes within restart_window_s)--> failed

A crash is an unexpected exception from what the actor runs on its own: ``on_start`` or a spawned task.
The crashed instance is stopped (its subscriptions and tasks removed), and after a backoff (doubling from
``backoff_initial_s`` up to ``backoff_max_s``) a fresh instance is started. While it is down, requests
get ``unavailable``; a ``failed`` actor stays down, is shown unhealthy in ``/health``, and every other
actor keeps serving.

Nothing a client sends crashes an actor: a request is checked against its op's declaration before the
handler runs, and an unexpected exception while handling one request (or one pub/sub message) answers
that request with ``internal`` and an error id (logged with the traceback) and is counted.
"""

from __future__ import annotations

import asyncio
import enum
import inspect
import os
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from time import perf_counter
from typing import Any

from ml_processing.bus import codec
from ml_processing.bus.proxy import Proxy
from ml_processing.bus.pubsub import BatchHandler, Handler, Subscriber

from .actor import Actor, ActorContext, Batched, Messages
from .clock import REAL, Clock
from .config import KernelConfig
from .errors import InternalError, MlpError, NotFound, Unavailable
from .log import REQUEST, get_logger
from .ops import OpSpec
from .opstats import OpStats
from .security.audit import AuditLog

log = get_logger(__name__)


class State(enum.StrEnum):
    """An actor's lifecycle state (a `str`, so it reads as itself in JSON and logs)."""

    STARTING = "starting"
    RUNNING = "running"
    RESTARTING = "restarting"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"


STARTING, RUNNING, RESTARTING, STOPPING, STOPPED, FAILED = State

#: Every allowed transition; anything else is a bug of ours and raises.
TRANSITIONS: dict[State, frozenset[State]] = {
    STOPPED: frozenset({STARTING}),
    STARTING: frozenset({RUNNING, RESTARTING, FAILED, STOPPING}),
    RUNNING: frozenset({RESTARTING, FAILED, STOPPING}),
    RESTARTING: frozenset({STARTING, STOPPING}),
    STOPPING: frozenset({STOPPED}),
    FAILED: frozenset({STOPPING, STOPPED}),
}

_set_request = REQUEST.set
_reset_request = REQUEST.reset
#: Results of synchronous handlers that need no check for an awaitable (the check costs more than the rest).
_PLAIN = frozenset({dict, list, str, int, float, bool, type(None), bytes, tuple})


class ActorCell:
    """Holds one actor's current instance and answers for it on the bus (a broker `LocalService`)."""

    def __init__(self, actor_cls: type[Actor], plugin: str, make_context: Callable[[ActorCell], ActorContext],
                 policy: KernelConfig, subscriber: Subscriber | Proxy,
                 on_state: Callable[[ActorCell], None] | None = None, clock: Clock = REAL,
                 audit: AuditLog | None = None, on_changed: Callable[[str], Awaitable[None]] | None = None) -> None:
        self.actor_cls = actor_cls
        self._subscriber = subscriber
        self.name = actor_cls.name
        self.plugin = plugin
        self.policy = policy
        self._make_context = make_context
        self._on_state = on_state
        self.clock = clock
        self.audit = audit  # every admin op (it changes state) is written there with who asked and how it ended
        self.on_changed = on_changed  # awaited after an admin op succeeds (other processes reload the state)
        self.state = STOPPED
        self.instance: Actor | None = None
        self.restarts = 0
        self.crashes: deque[float] = deque()
        self.last_error: str | None = None
        self.requests = 0
        self.errors = 0  # requests answered with an error (the caller's or ours)
        self.internal_errors = 0  # requests answered ``internal``: a bug of ours, isolated to the request
        self.messages_failed = 0  # pub/sub messages whose handler raised unexpectedly
        self.messages_rejected = 0  # pub/sub messages refused for their content
        self.op_stats: dict[str, OpStats] = {}  # per op: requests, errors, latency (read by /metrics)
        self._subs: list[tuple[str, Callable[..., None], BatchHandler]] = []  # (prefix, handler, guarded)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._restart_task: asyncio.Task[None] | None = None
        self._backoff = policy.backoff_initial_s

    # -- lifecycle -----------------------------------------------------------------------------------

    def _set_state(self, state: State) -> None:
        if state not in TRANSITIONS[self.state]:
            raise RuntimeError(f"actor {self.name!r}: no transition from {self.state} to {state}")
        self.state = state
        log.info("actor_state", actor=self.name, state=state, restarts=self.restarts)
        if self._on_state is not None:
            self._on_state(self)

    async def start(self) -> None:
        self._set_state(STARTING)
        self.instance = self.actor_cls(self._make_context(self))
        try:
            await self.instance.on_start()
        except Exception as exc:
            self.crash(exc, where="on_start")
            return
        self._backoff = self.policy.backoff_initial_s
        self._set_state(RUNNING)

    async def stop(self) -> None:
        if self._restart_task is not None:
            self._restart_task.cancel()
            self._restart_task = None
        if self.state == STOPPED:
            return
        if self.state == FAILED:
            self._set_state(STOPPED)
            return
        self._set_state(STOPPING)
        await self._teardown()
        self._set_state(STOPPED)

    async def _teardown(self) -> None:
        instance, self.instance = self.instance, None
        for prefix, _, guarded in self._subs:
            self._subscriber.unsubscribe(prefix, guarded)
        self._subs.clear()
        tasks = [t for t in self._tasks if not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        if instance is not None:
            try:
                await instance.on_stop()
            except Exception as exc:
                log.error("actor_stop_failed", actor=self.name, exc_info=exc)

    def crash(self, exc: BaseException, *, where: str) -> None:
        """Record a crash and schedule the restart (or give up past the intensity limit)."""
        self.last_error = f"{where}: {type(exc).__name__}: {exc}"
        log.error("actor_crashed", actor=self.name, where=where, exc_info=exc)
        if self.state in (RESTARTING, STOPPING, STOPPED, FAILED):
            return
        now = self.clock.monotonic()
        self.crashes.append(now)
        while self.crashes and self.crashes[0] < now - self.policy.restart_window_s:
            self.crashes.popleft()
        if len(self.crashes) > self.policy.max_restarts:
            self._set_state(FAILED)
            log.error("actor_failed", actor=self.name, crashes=len(self.crashes),
                      window_s=self.policy.restart_window_s)
            self._restart_task = asyncio.ensure_future(self._teardown_failed())
            return
        self._set_state(RESTARTING)
        self._restart_task = asyncio.ensure_future(self._restart())

    async def _teardown_failed(self) -> None:
        await self._teardown()

    async def _restart(self) -> None:
        await self._teardown()
        delay, self._backoff = self._backoff, min(self._backoff * 2, self.policy.backoff_max_s)
        await self.clock.sleep(delay)
        if self.state != RESTARTING:
            return
        self.restarts += 1
        await self.start()

    @property
    def healthy(self) -> bool:
        return self.state in (RUNNING, STARTING, RESTARTING)

    def status(self) -> dict[str, Any]:
        return {"state": self.state, "healthy": self.healthy, "plugin": self.plugin, "restarts": self.restarts,
                "requests": self.requests, "errors": self.errors, "internal_errors": self.internal_errors,
                "messages_failed": self.messages_failed, "messages_rejected": self.messages_rejected,
                "last_error": self.last_error,
                "ops": self.actor_cls.ops()}

    # -- what the actor's context calls ---------------------------------------------------------------

    def subscribe(self, prefix: str, handler: Handler) -> None:
        """Subscribe for the actor; teardown unsubscribes it. Each socket drain's messages come in one call
        (a `Batched` handler gets them together, a per-message handler one after another). A message its
        handler refuses (`MlpError`) or fails on is counted and logged alone, never a crash: one message
        cannot switch the actor off, nor keep the others of its drain from being handled."""
        if isinstance(handler, Batched):
            inner: Callable[..., None] = handler.handler
            guarded = self._guard_batch(handler.handler)
        else:
            inner, guarded = handler, self._guard_each(handler)
        self._subs.append((prefix, inner, guarded))
        self._subscriber.subscribe_batch(prefix, guarded)

    def unsubscribe(self, prefix: str, handler: Callable[..., None]) -> None:
        if isinstance(handler, Batched):
            handler = handler.handler
        for i, (p, inner, guarded) in enumerate(self._subs):
            if p == prefix and inner == handler:  # ==: a bound method is a new object at each access
                del self._subs[i]
                self._subscriber.unsubscribe(prefix, guarded)
                return

    def _live(self) -> bool:
        return self.state is RUNNING or self.state is STARTING

    def _guard_each(self, handler: Handler) -> BatchHandler:
        def guarded(messages: Sequence[tuple[str, Any]]) -> None:
            if not self._live():
                return
            for topic, body in messages:
                try:
                    handler(topic, body)
                except Exception as exc:
                    self._message_failed(topic, exc)

        return guarded

    def _guard_batch(self, handler: Callable[[Messages], None]) -> BatchHandler:
        def guarded(messages: Sequence[tuple[str, Any]]) -> None:
            if not self._live():
                return
            cursor = _Cursor(messages)
            while cursor.left:
                before = cursor.taken
                try:
                    handler(cursor)
                    return
                except Exception as exc:
                    self._message_failed(cursor.failed(before), exc)

        return guarded

    def _message_failed(self, topic: str, exc: Exception) -> None:
        if isinstance(exc, MlpError):  # bad message content: the sender's fault
            self.messages_rejected += 1
            log.warning("topic_message_rejected", actor=self.name, topic=topic, error=exc.message)
        else:  # a bug of ours, isolated to this message
            self.messages_failed += 1
            log.error("topic_message_failed", actor=self.name, topic=topic, error_id=_error_id(), exc_info=exc)

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str = "", *, for_message: bool = False
              ) -> asyncio.Task[Any]:
        """A task of the actor's: its failure crashes the actor, unless it is work done `for_message` (on
        behalf of one request or pub/sub message), which fails alone like the message itself."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)

        def done(t: asyncio.Task[Any]) -> None:
            self._tasks.discard(t)
            error = None if t.cancelled() else t.exception()
            if error is None:
                return
            if for_message:
                self.messages_failed += 1
                log.error("message_task_failed", actor=self.name, task=name or t.get_name(), error_id=_error_id(),
                          exc_info=error)
            else:
                self.crash(error, where=f"task {name or t.get_name()}")

        task.add_done_callback(done)
        return task

    # -- the broker calls this ------------------------------------------------------------------------

    def __call__(self, request: codec.Request) -> Any:
        if self.state is not RUNNING:
            raise Unavailable(f"service {self.name!r} is {self.state}")
        spec = self.actor_cls._ops.get(request.op)
        if spec is None:
            raise NotFound(f"service {self.name!r} has no op {request.op!r} "
                           f"(ops: {', '.join(sorted(self.actor_cls._ops))})", field="op")
        self.requests += 1
        stats = self.op_stats.get(request.op)
        if stats is None:
            stats = self.op_stats[request.op] = OpStats()
        started = perf_counter()
        if spec.role == "admin" and (self.audit is not None or self.on_changed is not None):
            return self._timed(self._audited(spec, request), stats, started)
        args = request.args  # `_large` looks into anything but an empty map (most requests of small ops)
        if spec.args is not None and (request.size or type(args) is not dict or args) and _large(request):
            return self._timed(self._decode_off_loop(spec, request), stats, started)
        token = _set_request((self.name, request.op, request.rid))
        try:
            result = getattr(self.instance, spec.attr)(spec.decode(request.args))
        except Exception as exc:
            stats.observe(perf_counter() - started, failed=True)
            raise self._failed(exc, request) from None
        finally:
            _reset_request(token)
        if type(result) not in _PLAIN and inspect.isawaitable(result):
            return self._timed(self._finish(result, request), stats, started)
        stats.observe(perf_counter() - started, failed=False)
        return result

    @staticmethod
    async def _timed(pending: Awaitable[Any], stats: OpStats, started: float) -> Any:
        """`pending`, with its latency and outcome counted when it completes."""
        try:
            result = await pending
        except BaseException:
            stats.observe(perf_counter() - started, failed=True)
            raise
        stats.observe(perf_counter() - started, failed=False)
        return result

    async def _audited(self, spec: OpSpec, request: codec.Request) -> Any:
        """A state-changing op: handled like any other, then one line in the audit trail; once it succeeded,
        the other processes of the service reload the state (`on_changed`) before the reply leaves."""
        outcome = "ok"
        try:
            if spec.args is not None and _large(request):
                result = await self._decode_off_loop(spec, request)
            else:
                _set_request((self.name, request.op, request.rid))
                try:
                    result = getattr(self.instance, spec.attr)(spec.decode(request.args))
                    if inspect.isawaitable(result):
                        result = await result
                except Exception as exc:
                    raise self._failed(exc, request) from None
            if self.on_changed is not None:
                await self.on_changed(self.name)
            return result
        except MlpError as exc:
            outcome = exc.code
            raise
        finally:
            if self.audit is not None:
                self.audit.write(request.principal or "anonymous", request.transport, self.name, request.op,
                                 _target(request.args), outcome)

    async def sync(self) -> None:
        """Another process changed this service's state: the actor's ``on_sync`` reloads it, or, for an
        actor without one, a restart reads it afresh (requests meanwhile are answered ``unavailable``)."""
        if self.state != RUNNING or self.instance is None:
            return
        on_sync = getattr(self.instance, "on_sync", None)
        if on_sync is not None:
            await on_sync()
            return
        log.info("actor_resync", actor=self.name)
        self._set_state(STOPPING)
        await self._teardown()
        self._set_state(STOPPED)
        await self.start()

    async def _decode_off_loop(self, spec: OpSpec, request: codec.Request) -> Any:
        """A large request's arguments are checked on a thread, so the loop keeps serving meanwhile."""
        _set_request((self.name, request.op, request.rid))
        try:
            args = await asyncio.get_running_loop().run_in_executor(None, spec.decode, request.args)
            if self.state != RUNNING or self.instance is None:
                raise Unavailable(f"service {self.name!r} is {self.state}")
            result = getattr(self.instance, spec.attr)(args)
            return await result if inspect.isawaitable(result) else result
        except Exception as exc:
            raise self._failed(exc, request) from None

    async def _finish(self, pending: Awaitable[Any], request: codec.Request) -> Any:
        _set_request((self.name, request.op, request.rid))
        try:
            return await pending
        except Exception as exc:
            raise self._failed(exc, request) from None

    def _failed(self, exc: Exception, request: codec.Request) -> MlpError:
        """The error to answer with: the caller's own `MlpError`, or `internal` with an error id (logged with
        the traceback). Either way only this request fails: the actor keeps serving."""
        self.errors += 1
        if isinstance(exc, MlpError):
            return exc
        self.internal_errors += 1
        error_id = _error_id()
        log.error("request_failed", actor=self.name, op=request.op, rid=request.rid, error_id=error_id,
                  exc_info=exc)
        return InternalError(f"service {self.name!r} failed on op {request.op!r} ({type(exc).__name__}); "
                             f"error id {error_id}")


#: A request is checked off the loop when its frame was this large, or its top-level lists hold this many
#: items (bars, rows, values): a cheap look at the map, never a walk through it.
LARGE_FRAME = 1 << 20
LARGE_ITEMS = 10_000
_SIZED = (list, str, bytes)


_TARGETS = ("model_id", "name", "pipeline", "job_id", "symbol", "model")


def _target(args: Any) -> Any:
    """What a state-changing request names (a model, pipeline, job or symbol), for the audit trail."""
    if type(args) is not dict:
        return None
    found = {key: args[key] for key in _TARGETS if key in args and isinstance(args[key], (str, int))}
    if "version" in args and isinstance(args["version"], (str, int)):
        found["version"] = args["version"]
    return found or None


def _large(request: codec.Request) -> bool:
    if request.size >= LARGE_FRAME:
        return True
    args = request.args
    if type(args) is not dict:
        return False
    items = 0
    for value in args.values():
        if type(value) in _SIZED:
            items += len(value)
    return items >= LARGE_ITEMS


class _Cursor:
    """One drain's messages as a batch handler takes them, remembering how far it got: when handling one
    raises, that message is counted alone and the handler is called again with the rest.

    >>> cursor = _Cursor([("bar.A.1m", 1), ("bar.B.1m", 2), ("bar.C.1m", 3)])
    >>> handler = iter(cursor)  # a handler takes two messages; handling the second raises
    >>> next(handler), next(handler), cursor.left
    (('bar.A.1m', 1), ('bar.B.1m', 2), True)
    >>> cursor.failed(before=0), list(cursor), cursor.left  # the one counted, then the rest
    ('bar.B.1m', [('bar.C.1m', 3)], False)
    """

    __slots__ = ("_messages", "taken")

    def __init__(self, messages: Sequence[tuple[str, Any]]) -> None:
        self._messages = messages
        self.taken = 0  # messages handed out so far

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        messages = self._messages
        while self.taken < len(messages):
            self.taken += 1
            yield messages[self.taken - 1]

    @property
    def left(self) -> bool:
        return self.taken < len(self._messages)

    def failed(self, before: int) -> str:
        """The topic of the message whose handling raised: the last one taken, or (when the handler raised
        before taking any since `before`) the next one, which is then skipped."""
        if self.taken == before:
            self.taken += 1
        return str(self._messages[self.taken - 1][0])


def _error_id() -> str:
    """A short id that ties an ``internal`` answer to its log line."""
    return os.urandom(6).hex()
