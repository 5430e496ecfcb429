"""Pub/sub: the proxy (XSUB in, XPUB out) that also serves its own process, a publisher and a subscriber.

Feeds publish ``[topic, msgpack body]`` to the proxy's XSUB side (``tcp://127.0.0.1:5556`` by default);
subscribers connect to its XPUB side (``tcp://127.0.0.1:5557``). The proxy runs on the event loop, like the
MDP broker: every inbound message is forwarded to the XPUB side (when some external subscriber wants it) and
handed, decoded once, to the local handlers whose prefix matches; a local `Proxy.publish` goes out of the
XPUB side and to local handlers. So an actor in the service's own process is reached without a socket or thread hop (a proxy thread costs two
thread wake-ups per message each way). High-water marks bound every queue: a slow subscriber loses messages
(dropped by ZeroMQ, never blocking anyone) instead of stalling the kernel.

Work is done per socket drain, not per message: each wake-up reads every message the socket holds (at most
`DRAIN_MAX`, then the loop serves others before the rest), hands each handler the messages of that drain
its prefix matches in one call (`subscribe_batch`; a per-message handler is called for each of them in
turn), and sends what they published in one burst when the drain ends.

`Publisher` and `Subscriber` are the same verbs for a process that talks to a proxy elsewhere
(``ml-processing worker``, or a client).
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
from .mdp.frames import MORE_NOBLOCK, NOBLOCK, CurveKeys, curve_server, recv_frames, send_frames

#: ZAP domains of the proxy's two sides: publishing needs the compute role, subscribing the read role.
PUB_IN_DOMAIN = b"pub_in"
PUB_OUT_DOMAIN = b"pub_out"

#: Messages read from a socket per wake-up at most; the rest wait for the next loop turn, so a flooding
#: feed cannot starve requests, timers or the other sockets.
DRAIN_MAX = 256

#: pyzmq's compiled send, under the Python wrapper that only adds routing ids and groups (unused here): a
#: burst of updates costs one C call per frame.
_send_frame: Callable[..., Any] = zmq.backend.Socket.send
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


class _Drain:
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


class _Dispatch:
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
            return topic, codec.unpackb(frames[1])
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


class Proxy(_Dispatch):
    """The XSUB/XPUB forwarder, on the event loop, serving local handlers and publishers directly.

    Messages published in this process reach local handlers on the next loop turn, together (one
    `_deliver` for all that one turn published); at most `max_pending` (``hwm`` by default) wait for it,
    and one more is dropped for local handlers and counted (``stats.dropped_queue_full``), so a publisher
    flooding one loop turn cannot grow memory without bound.
    """

    FLUSH_AT = 256  # outbound messages held at most before they are sent, within one drain or loop turn

    def __init__(self, context: zmq.Context[Any], inputs: list[str], outputs: list[str], *,
                 hwm: int = 10_000, max_pending: int | None = None, curve: tuple[str, str] | None = None) -> None:
        super().__init__()
        self._curve = curve  # (public, secret) Z85: both sides are CURVE servers (ZAP domains pub_in, pub_out)
        self._context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.shadow(context.underlying)
        self.inputs = list(inputs)
        self.outputs = list(outputs)
        self.hwm = hwm
        self.max_pending = hwm if max_pending is None else max_pending
        self._local: list[tuple[str, Any]] = []  # local publishes waiting for the next loop turn
        self.bound_inputs: list[str] = []
        self.bound_outputs: list[str] = []
        self.published = 0
        self.forwarded = 0
        self._xsub: zmq.Socket[bytes] | None = None
        self._xpub: zmq.Socket[bytes] | None = None
        self._inbound: _Drain | None = None
        self._subscriptions: _Drain | None = None
        # prefixes external subscribers asked for, as the XPUB side reports them (first subscription and
        # last unsubscription of each): a message nobody outside wants is not sent at all
        self._external: dict[bytes, None] = {}
        self._external_prefixes: tuple[bytes, ...] = ()
        # Outbound messages wait for the end of the current drain or loop turn (or `FLUSH_AT` of them) and
        # are then sent back to back: ZeroMQ wakes its I/O thread once per burst instead of once per
        # message, which on a machine where a wake-up costs tens of microseconds is most of a message's cost.
        self._outbox: list[list[bytes]] = []
        self._flush_scheduled = False
        self._draining = False  # within a drain: its end flushes, no loop turn is scheduled for it

    def start(self) -> None:
        """Bind both sides and start forwarding (needs the running event loop)."""
        xsub = self._context.socket(zmq.XSUB)
        xpub = self._context.socket(zmq.XPUB)
        try:
            for sock in (xsub, xpub):
                sock.setsockopt(zmq.LINGER, 0)
                sock.setsockopt(zmq.SNDHWM, self.hwm)
                sock.setsockopt(zmq.RCVHWM, self.hwm)
            if self._curve is not None:
                curve_server(xsub, *self._curve, PUB_IN_DOMAIN)
                curve_server(xpub, *self._curve, PUB_OUT_DOMAIN)
            for endpoint in self.inputs:
                xsub.bind(endpoint)
                self.bound_inputs.append(xsub.getsockopt_string(zmq.LAST_ENDPOINT))
            for endpoint in self.outputs:
                xpub.bind(endpoint)
                self.bound_outputs.append(xpub.getsockopt_string(zmq.LAST_ENDPOINT))
        except BaseException:
            xsub.close(linger=0)
            xpub.close(linger=0)
            raise
        xsub.send(b"\x01")  # subscribe upstream to everything: local handlers and the XPUB side filter
        self._xsub, self._xpub = xsub, xpub
        self._inbound = _Drain(xsub, self._on_inbound, self._drained)
        self._subscriptions = _Drain(xpub, self._on_subscriptions)
        log.info("pubsub_proxy_started", inputs=self.bound_inputs, outputs=self.bound_outputs)

    def _on_inbound(self, batch: list[list[bytes]]) -> None:
        """One drain of the XSUB side: forward what external subscribers want, deliver what local
        handlers want (decoded once), and send the lot when the drain ends."""
        self._draining = True
        self.stats.received += len(batch)
        external = self._external_prefixes
        if external:
            outbox = self._outbox
            forwarded = 0
            for frames in batch:
                if frames[0].startswith(external):
                    outbox.append(frames)
                    forwarded += 1
            self.forwarded += forwarded
        messages = self._decode_all(batch)
        if messages:
            self._deliver(messages)

    def _drained(self) -> None:
        self._draining = False
        if self._outbox:
            self.flush()

    def _on_subscriptions(self, batch: list[list[bytes]]) -> None:
        """External subscribers' (first) subscriptions or (last) unsubscriptions of prefixes.

        The XPUB socket filters by them itself; keeping them here saves the send of every message that
        no one outside wants. A subscription is in effect from the drain that reads it: like any ZeroMQ
        subscription, it is not retroactive."""
        for frames in batch:
            message = frames[0] if len(frames) == 1 else b""
            if not message or message[0] not in (0, 1):
                self.stats.dropped_malformed += 1
                log.warning("malformed_subscription_dropped", frames=len(frames))
                continue
            prefix = bytes(message[1:])
            if message[0] == 1:
                self._external[prefix] = None
            else:
                self._external.pop(prefix, None)
        self._external_prefixes = tuple(self._external)

    def publish(self, topic: str, body: Any) -> None:
        """Publish from this process: out of the XPUB side, and to local handlers on the next loop turn."""
        payload = body if type(body) is codec.Packed else codec.packb(body)
        raw_topic = topic.encode()
        if raw_topic.startswith(self._external_prefixes):
            outbox = self._outbox
            outbox.append([raw_topic, payload])
            if len(outbox) >= self.FLUSH_AT or not self._draining:
                self._flush_soon()
        self.published += 1
        if topic.startswith(self._prefixes):  # a decoded copy: handlers never share the publisher's object
            local = self._local
            if len(local) >= self.max_pending:
                if self.stats.dropped_queue_full % 1000 == 0:  # the first of each thousand, not a flood
                    log.warning("local_queue_full", topic=topic, pending=len(local),
                                dropped=self.stats.dropped_queue_full + 1)
                self.stats.dropped_queue_full += 1
                return
            if not local:
                asyncio.get_running_loop().call_soon(self._deliver_local)
            local.append((topic, codec.unpackb(payload)))

    def _deliver_local(self) -> None:
        messages, self._local = self._local, []
        self._deliver(messages)

    def _flush_soon(self) -> None:
        """`FLUSH_AT` messages wait: send them now; otherwise, outside a drain (whose end flushes), at the end
        of this loop turn."""
        if len(self._outbox) >= self.FLUSH_AT:
            self.flush()
        elif not self._flush_scheduled and not self._draining:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_turn)

    def _flush_turn(self) -> None:
        self._flush_scheduled = False
        self.flush()

    def flush(self) -> None:
        """Send every waiting outbound message now (in order)."""
        out, self._outbox = self._outbox, []
        if self._xpub is not None and out:
            xpub, send = self._xpub, _send_frame
            for frames in out:
                for frame in frames[:-1]:
                    send(xpub, frame, MORE_NOBLOCK)
                send(xpub, frames[-1], NOBLOCK)
            if self._subscriptions is not None:
                self._subscriptions.kick()  # a send may take the descriptor's edge from a waiting subscription

    def stop(self) -> None:
        self.flush()  # nothing published before the stop is lost
        for reader in (self._inbound, self._subscriptions):
            if reader is not None:
                reader.close()
        self._inbound = self._subscriptions = None
        for sock in (self._xsub, self._xpub):
            if sock is not None:
                sock.close(linger=0)
        if self._xsub is not None:
            log.info("pubsub_proxy_stopped")
        self._xsub = self._xpub = None

    def close(self) -> None:
        self.stop()


class Publisher:
    """Publishes ``[topic, body]`` to a proxy's input; never blocks (past the high-water mark, drops)."""

    def __init__(self, context: zmq.Context[Any], endpoint: str, *, hwm: int = 10_000,
                 keys: CurveKeys | None = None) -> None:
        self._sock: zmq.Socket[bytes] = zmq.Context.shadow(context.underlying).socket(zmq.PUB)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.SNDHWM, hwm)
        if keys is not None:
            keys.apply(self._sock)
        self._sock.connect(endpoint)
        self.published = 0

    def publish(self, topic: str, body: Any) -> None:
        send_frames(self._sock, [topic.encode(), codec.packb(body)])
        self.published += 1

    def close(self) -> None:
        self._sock.close(linger=0)


class Subscriber(_Dispatch):
    """One SUB socket on a proxy's output; each message is decoded once, and each drain's messages are
    handed to the matching handlers together."""

    def __init__(self, context: zmq.Context[Any], endpoint: str, *, hwm: int = 10_000,
                 keys: CurveKeys | None = None) -> None:
        super().__init__()
        self._sock: zmq.Socket[bytes] = zmq.Context.shadow(context.underlying).socket(zmq.SUB)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.RCVHWM, hwm)
        if keys is not None:
            keys.apply(self._sock)
        self._sock.connect(endpoint)
        self._reader: _Drain | None = None

    def start(self) -> None:
        """Start delivering (needs the running event loop)."""
        self._reader = _Drain(self._sock, self._on_batch)

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
