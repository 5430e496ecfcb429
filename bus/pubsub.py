"""Pub/sub verbs: decoding and dispatching messages to handlers by topic prefix, a publisher and a subscriber.

Feeds publish ``[topic, msgpack body]`` to the proxy's XSUB side (``tcp://127.0.0.1:5556`` by default);
subscribers connect to its XPUB side (``tcp://127.0.0.1:5557``); the proxies are in `proxy`. High-water
marks bound every queue: a slow subscriber loses messages (dropped by ZeroMQ, never blocking anyone) instead
of stalling the kernel.

Work is done per socket drain, not per message: each wake-up reads every message the socket holds (at most
`DRAIN_MAX`, then the loop serves others before the rest), hands each handler the messages of that drain
its prefix matches in one call (`subscribe_batch`; a per-message handler is called for each of them in
turn), and sends what they published in one burst when the drain ends.

`Publisher` and `Subscriber` are the verbs of a process that talks to a proxy elsewhere
(``ml-processing worker``, a client), or to its own proxy on a thread (`proxy.ProxyThread`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
import zmq

from . import codec, topics
from .errors import BadRequest, CodecError, MlpError
from .mdp.frames import CurveKeys, recv_frames, send_frames

#: Messages read from a socket per wake-up at most; the rest wait for the next loop turn, so a flooding
#: feed cannot starve requests, timers or the other sockets.
DRAIN_MAX = 256
#: At a stop, how long ZeroMQ may go on sending what a closed publisher or proxy output still holds: the
#: context's end waits for it (at most this long, when a peer is gone), so what was published before the
#: stop reaches the subscribers still connected.
STOP_LINGER_MS = 1000

_POLLIN = int(zmq.POLLIN)
_EVENTS = int(zmq.EVENTS)

log = structlog.get_logger(__name__)

#: ``handler(topic, body)``: one message.
Handler = Callable[[str, Any], None]
#: ``handler(messages)``: the ``(topic, body)`` messages of one drain that its prefix matches, in order.
BatchHandler = Callable[[Sequence[tuple[str, Any]]], None]


@dataclass
class SubscriberStats:
    """Inbound counters of a proxy or a subscriber; every message the bus drops counts under one reason.

    ``received`` counts the messages read from the socket (a proxy also counts those it only forwards).
    Drops, by reason (`drops` names them as ``/metrics`` labels):

    * ``dropped_queue_full``: the proxy's queue of local deliveries (messages published in this process,
      handed to local handlers on the next loop turn) held ``max_pending`` messages already;
    * ``dropped_malformed``: not two frames ``[topic, body]``, or a body that is not msgpack (or carries an
      extension type the codec refuses); a malformed subscription frame on the proxy's XPUB side too;
    * ``dropped_bad_topic``: a topic that is not UTF-8 or does not parse (`topics.parse`: unknown kind,
      bad symbol or timeframe, too many parts), for a message some local handler's prefix matches.

    ZeroMQ itself drops at the *sending* socket's high-water mark and tells no one: those losses show in
    the sender's process, never here (a feed that must lose nothing sets ``SNDHWM`` 0 and paces itself).

    >>> stats = SubscriberStats(received=5, dropped_malformed=1, dropped_bad_topic=2)
    >>> stats.malformed, stats.dropped, stats.drops()
    (3, 3, {'queue_full': 0, 'malformed': 1, 'bad_topic': 2})
    """

    received: int = 0
    skipped: int = 0  # left to another process: a topic `accepts` refused (not a drop)
    dropped_queue_full: int = 0
    dropped_malformed: int = 0
    dropped_bad_topic: int = 0
    handler_errors: int = 0

    @property
    def malformed(self) -> int:
        """Messages dropped for their form: malformed frames or bodies, and bad topics."""
        return self.dropped_malformed + self.dropped_bad_topic

    @property
    def dropped(self) -> int:
        """Every message dropped, whatever the reason."""
        return self.dropped_queue_full + self.dropped_malformed + self.dropped_bad_topic

    def drops(self) -> dict[str, int]:
        """Dropped messages by reason: ``queue_full``, ``malformed``, ``bad_topic``."""
        return {"queue_full": self.dropped_queue_full, "malformed": self.dropped_malformed,
                "bad_topic": self.dropped_bad_topic}


class Drain:
    """Reads a (non-asyncio) ZeroMQ socket from the event loop, one drain per wake-up: every message it
    holds, up to `DRAIN_MAX`, goes to `on_batch` in one call, then `after` runs (the publisher's burst).

    ZeroMQ's file descriptor is edge-triggered: it signals only a change of state, so a drain reads until
    ``EAGAIN`` (or schedules itself again when it stopped at `DRAIN_MAX`), and `kick` must be called after
    a send on the same socket made outside a drain.
    """

    def __init__(self, sock: zmq.Socket[bytes], on_batch: Callable[[list[list[bytes]]], None],
                 after: Callable[[], None] | None = None) -> None:
        self._sock = sock
        self._on_batch = on_batch
        self._after = after
        self._scheduled = False
        self._loop = asyncio.get_running_loop()
        self._fd: int = sock.getsockopt(zmq.FD)  # type: ignore[assignment]
        self._loop.add_reader(self._fd, self.drain)
        self.kick()

    def drain(self) -> None:
        self._scheduled = False
        sock = self._sock
        batch: list[list[bytes]] = []
        more = False
        try:
            for _ in range(DRAIN_MAX):
                batch.append(recv_frames(sock))
            more = True
        except zmq.Again:
            pass
        except zmq.ZMQError as exc:  # closed under us during shutdown
            log.debug("socket_drain_stopped", error=str(exc))
        try:
            if batch:
                self._on_batch(batch)
        finally:
            if self._after is not None:
                self._after()
            if more:  # the rest on the next loop turn: others are served in between
                self._scheduled = True
                self._loop.call_soon(self.drain)

    def kick(self) -> None:
        if self._scheduled or self._sock.closed:
            return
        events: int = self._sock.getsockopt(_EVENTS)  # type: ignore[assignment]
        if int(events) & _POLLIN:  # as an int: the flag type's own `&` is Python code
            self._scheduled = True
            self._loop.call_soon(self.drain)

    def close(self) -> None:
        self._loop.remove_reader(self._fd)


class Dispatch:
    """Prefix subscriptions and the delivery of decoded messages to handlers, a drain's worth at a time."""

    def __init__(self) -> None:
        # prefix -> [(the handler as subscribed, what delivers a batch to it)]
        self._handlers: dict[str, list[tuple[object, BatchHandler]]] = {}
        self._prefixes: tuple[str, ...] = ()  # the keys of `_handlers`, for one `str.startswith` call
        self._raw_prefixes: tuple[bytes, ...] = ()  # the same, encoded: raw topics are matched undecoded
        self.stats = SubscriberStats()
        #: The process's own filter of inbound topics (raw bytes): one it refuses is another process's to
        #: handle and is left alone before it is decoded (`stats.skipped`). None: every topic is this one's.
        self.accepts: Callable[[bytes], bool] | None = None

    def _first(self, prefix: str) -> None:
        """The first handler for `prefix` arrived (a SUB socket subscribes here)."""

    def _last(self, prefix: str) -> None:
        """The last handler for `prefix` left."""

    def subscribe(self, prefix: str, handler: Handler) -> None:
        """Call ``handler(topic, body)`` for each message whose topic starts with `prefix`; one that raises
        is counted (``stats.handler_errors``) and logged, and the next message is handed over as usual."""
        self._add(prefix, handler, self._per_message(handler))

    def subscribe_batch(self, prefix: str, handler: BatchHandler) -> None:
        """Call ``handler(messages)`` once per drain with every ``(topic, body)`` whose topic starts with
        `prefix`, in arrival order. The handler isolates its messages' failures itself; if it raises, that
        is counted once (``stats.handler_errors``) and logged, and its later drains are handed over as usual."""
        self._add(prefix, handler, self._guarded(handler))

    def _add(self, prefix: str, handler: object, deliver: BatchHandler) -> None:
        handlers = self._handlers.setdefault(prefix, [])
        self._index()
        if not handlers:
            self._first(prefix)
        handlers.append((handler, deliver))

    def unsubscribe(self, prefix: str, handler: Handler | BatchHandler) -> None:
        """Remove one subscription of `handler` (compared by ``==``, so a bound method matches) to `prefix`."""
        handlers = self._handlers.get(prefix)
        index = next((i for i, (h, _) in enumerate(handlers or ()) if h == handler), None)
        if handlers is None or index is None:
            return
        del handlers[index]
        if not handlers:
            del self._handlers[prefix]
            self._index()
            self._last(prefix)

    def _index(self) -> None:
        self._prefixes = tuple(self._handlers)
        self._raw_prefixes = tuple(prefix.encode() for prefix in self._handlers)

    @property
    def prefixes(self) -> list[str]:
        return list(self._handlers)

    def _per_message(self, handler: Handler) -> BatchHandler:
        stats = self.stats

        def deliver(messages: Sequence[tuple[str, Any]]) -> None:
            for topic, body in messages:
                try:
                    handler(topic, body)
                except MlpError as exc:
                    stats.handler_errors += 1
                    log.warning("topic_handler_rejected", topic=topic, error=exc.message)
                except Exception as exc:
                    stats.handler_errors += 1
                    log.error("topic_handler_failed", topic=topic, exc_info=exc)

        return deliver

    def _guarded(self, handler: BatchHandler) -> BatchHandler:
        stats = self.stats

        def deliver(messages: Sequence[tuple[str, Any]]) -> None:
            try:
                handler(messages)
            except MlpError as exc:
                stats.handler_errors += 1
                log.warning("topic_handler_rejected", topic=messages[0][0], messages=len(messages),
                            error=exc.message)
            except Exception as exc:
                stats.handler_errors += 1
                log.error("topic_handler_failed", topic=messages[0][0], messages=len(messages), exc_info=exc)

        return deliver

    def _decode(self, frames: list[bytes]) -> tuple[str, Any] | None:
        """``(topic, body)`` of a ``[topic, body]`` message; None (counted by reason) when it is dropped."""
        if len(frames) != 2:
            self.stats.dropped_malformed += 1
            log.warning("malformed_frame_dropped", error="pub/sub message must be [topic, body]",
                        frames=len(frames))
            return None
        try:
            topic = frames[0].decode()
            topics.parse(topic)
        except (UnicodeDecodeError, BadRequest) as exc:
            self.stats.dropped_bad_topic += 1
            log.warning("bad_topic_dropped", topic=frames[0][:80], error=str(exc))
            return None
        try:
            return topic, codec.unpack_message(frames[1])
        except CodecError as exc:
            self.stats.dropped_malformed += 1
            log.warning("malformed_frame_dropped", topic=topic, error=exc.message, frames=2)
            return None

    def _decode_all(self, batch: list[list[bytes]]) -> list[tuple[str, Any]]:
        """The messages of a drain that some local handler wants, decoded (in order; drops counted). A
        message with the wrong number of frames is judged too: its topic cannot be trusted."""
        prefixes = self._raw_prefixes
        decode = self._decode
        accepts = self.accepts
        out = []
        for frames in batch:
            if len(frames) != 2 or frames[0].startswith(prefixes):
                if accepts is not None and len(frames) == 2 and not accepts(frames[0]):
                    self.stats.skipped += 1
                    continue
                decoded = decode(frames)
                if decoded is not None:
                    out.append(decoded)
        return out

    def _deliver(self, messages: Sequence[tuple[str, Any]]) -> None:
        """Hand each handler, in one call, the messages its prefix matches (in order)."""
        for prefix, handlers in list(self._handlers.items()):
            matched = tuple(m for m in messages if m[0].startswith(prefix))
            if matched:
                for _, deliver in list(handlers):
                    deliver(matched)


class Outbox:
    """A socket's outbound messages, sent back to back: at the end of the current loop turn, when `FLUSH_AT`
    wait, or (while `holding`, within a socket drain) when the drain ends and its owner calls `flush`.
    ZeroMQ then wakes the thread that moves them on (its I/O thread, or a proxy thread) once per burst
    instead of once per message, which on a machine where a wake-up costs tens of microseconds is most of
    a message's cost. `send` gets each burst, in order."""

    FLUSH_AT = 256

    def __init__(self, send: Callable[[list[list[bytes]]], None]) -> None:
        self.messages: list[list[bytes]] = []
        self.holding = False  # within a drain: its end flushes, no loop turn is scheduled for it
        self._send = send
        self._scheduled = False

    def add(self, frames: list[bytes]) -> None:
        messages = self.messages
        messages.append(frames)
        if len(messages) >= self.FLUSH_AT:
            self.flush()
        elif not self._scheduled and not self.holding:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_turn)

    def _flush_turn(self) -> None:
        self._scheduled = False
        self.flush()

    def flush(self) -> None:
        """Send every waiting message now, in order."""
        out, self.messages = self.messages, []
        if out:
            self._send(out)


def _connected(context: zmq.Context[Any], kind: int, endpoint: str, hwm: int, keys: CurveKeys | None
               ) -> zmq.Socket[bytes]:
    """A PUB or SUB socket connected to `endpoint`: no linger, `hwm` on its side, CURVE `keys` if any."""
    sock: zmq.Socket[bytes] = zmq.Context.shadow(context.underlying).socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM if kind == zmq.PUB else zmq.RCVHWM, hwm)
    if keys is not None:
        keys.apply(sock)
    sock.connect(endpoint)
    return sock


class Publisher:
    """Publishes ``[topic, body]`` to a proxy's input; never blocks (past the high-water mark, drops).

    With ``burst=True`` (on an event loop: the kernel's own publishers) messages wait in an `Outbox` for the
    end of the current loop turn: a socket drain's updates go as one burst, and the proxy thread or
    ZeroMQ's I/O thread wakes once for them. `flush` sends at once; `close` sends what waits first.
    """

    def __init__(self, context: zmq.Context[Any], endpoint: str, *, hwm: int = 10_000,
                 keys: CurveKeys | None = None, burst: bool = False) -> None:
        self._sock = _connected(context, zmq.PUB, endpoint, hwm, keys)
        self.published = 0
        self._outbox = Outbox(self._send) if burst else None

    def publish(self, topic: str, body: Any) -> None:
        frames = [topic.encode(), codec.packb(body)]
        if self._outbox is None:
            send_frames(self._sock, frames)
        else:
            self._outbox.add(frames)
        self.published += 1

    def _send(self, burst: list[list[bytes]]) -> None:
        if not self._sock.closed:
            for frames in burst:
                send_frames(self._sock, frames)

    def flush(self) -> None:
        """Send every waiting message now, in order."""
        if self._outbox is not None:
            self._outbox.flush()

    def close(self) -> None:
        """Send what waits, then close; ZeroMQ delivers it within `STOP_LINGER_MS`."""
        self.flush()
        self._sock.close(linger=STOP_LINGER_MS)


class Subscriber(Dispatch):
    """One SUB socket on a proxy's output; each message is decoded once, and each drain's messages are
    handed to the matching handlers together."""

    def __init__(self, context: zmq.Context[Any], endpoint: str, *, hwm: int = 10_000,
                 keys: CurveKeys | None = None) -> None:
        super().__init__()
        self._sock = _connected(context, zmq.SUB, endpoint, hwm, keys)
        self._reader: Drain | None = None

    def start(self) -> None:
        """Start delivering (needs the running event loop)."""
        self._reader = Drain(self._sock, self._on_batch)

    def _first(self, prefix: str) -> None:
        self._sock.setsockopt(zmq.SUBSCRIBE, prefix.encode())

    def _last(self, prefix: str) -> None:
        self._sock.setsockopt(zmq.UNSUBSCRIBE, prefix.encode())

    def _on_batch(self, batch: list[list[bytes]]) -> None:
        self.stats.received += len(batch)
        messages = self._decode_all(batch)  # the socket's subscriptions matched already: the prefixes will too
        if messages:
            self._deliver(messages)

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        self._sock.close(linger=0)
