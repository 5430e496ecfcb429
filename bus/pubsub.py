"""Pub/sub: an XSUB/XPUB proxy, a publisher and a topic-dispatching subscriber.

Feeds publish ``[topic, msgpack body]`` to the proxy's XSUB side (``tcp://127.0.0.1:5556`` by default);
subscribers connect to its XPUB side (``tcp://127.0.0.1:5557``). The proxy runs ``zmq.proxy_steerable``
in its own thread, so forwarding never touches the event loop. High-water marks bound every queue: a slow
subscriber loses messages (counted by ZeroMQ, never blocking anyone) instead of stalling the kernel.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
import zmq

from . import codec
from .errors import CodecError, MlpError
from .mdp import SocketReader

log = structlog.get_logger(__name__)

Handler = Callable[[str, Any], None]


class Proxy:
    """The XSUB/XPUB forwarder, in a thread of its own."""

    def __init__(self, context: zmq.Context[Any], inputs: list[str], outputs: list[str], *,
                 hwm: int = 10_000) -> None:
        self._context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.shadow(context.underlying)
        self.inputs = list(inputs)
        self.outputs = list(outputs)
        self.hwm = hwm
        self.bound_inputs: list[str] = []
        self.bound_outputs: list[str] = []
        self._control = f"inproc://mlp-proxy-control-{id(self):x}"
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="mlp-pubsub-proxy", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise self._error
        log.info("pubsub_proxy_started", inputs=self.bound_inputs, outputs=self.bound_outputs)

    def _run(self) -> None:
        ctx = self._context
        xsub = ctx.socket(zmq.XSUB)
        xpub = ctx.socket(zmq.XPUB)
        control = ctx.socket(zmq.PAIR)
        try:
            for sock in (xsub, xpub):
                sock.setsockopt(zmq.LINGER, 0)
                sock.setsockopt(zmq.SNDHWM, self.hwm)
                sock.setsockopt(zmq.RCVHWM, self.hwm)
            for endpoint in self.inputs:
                xsub.bind(endpoint)
                self.bound_inputs.append(xsub.getsockopt_string(zmq.LAST_ENDPOINT))
            for endpoint in self.outputs:
                xpub.bind(endpoint)
                self.bound_outputs.append(xpub.getsockopt_string(zmq.LAST_ENDPOINT))
            control.bind(self._control)
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            for sock in (xsub, xpub, control):
                sock.close(linger=0)
            return
        self._ready.set()
        try:
            zmq.proxy_steerable(xsub, xpub, None, control)
        except zmq.ContextTerminated:
            pass
        finally:
            for sock in (xsub, xpub, control):
                sock.close(linger=0)

    def stop(self) -> None:
        if self._thread is None:
            return
        ctl = self._context.socket(zmq.PAIR)
        ctl.setsockopt(zmq.LINGER, 0)
        ctl.connect(self._control)
        ctl.send(b"TERMINATE")
        self._thread.join(5)
        ctl.close(linger=0)
        self._thread = None
        log.info("pubsub_proxy_stopped")


class Publisher:
    """Publishes ``[topic, body]``; never blocks (messages past the high-water mark are dropped)."""

    def __init__(self, context: zmq.Context[Any], endpoint: str, *, hwm: int = 10_000) -> None:
        self._sock: zmq.Socket[bytes] = zmq.Context.shadow(context.underlying).socket(zmq.PUB)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.SNDHWM, hwm)
        self._sock.connect(endpoint)
        self.published = 0

    def publish(self, topic: str, body: Any) -> None:
        self.publish_raw(topic.encode(), codec.packb(body))

    def publish_raw(self, topic: bytes, payload: bytes) -> None:
        try:
            self._sock.send_multipart([topic, payload], zmq.NOBLOCK)
            self.published += 1
        except zmq.Again:
            log.warning("publish_dropped", topic=topic.decode(errors="replace"))

    def close(self) -> None:
        self._sock.close(linger=0)


@dataclass
class SubscriberStats:
    received: int = 0
    malformed: int = 0
    handler_errors: int = 0


class Subscriber:
    """One SUB socket; each message is decoded once and handed to every handler whose prefix matches."""

    def __init__(self, context: zmq.Context[Any], endpoint: str, *, hwm: int = 10_000) -> None:
        self._sock: zmq.Socket[bytes] = zmq.Context.shadow(context.underlying).socket(zmq.SUB)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.RCVHWM, hwm)
        self._sock.connect(endpoint)
        self._handlers: dict[str, list[Handler]] = {}
        self._reader: SocketReader | None = None
        self.stats = SubscriberStats()

    def start(self) -> None:
        """Start delivering (needs the running event loop)."""
        self._reader = SocketReader(self._sock, self._on_message)

    def subscribe(self, prefix: str, handler: Handler) -> None:
        handlers = self._handlers.setdefault(prefix, [])
        if not handlers:
            self._sock.setsockopt(zmq.SUBSCRIBE, prefix.encode())
        handlers.append(handler)

    def unsubscribe(self, prefix: str, handler: Handler) -> None:
        handlers = self._handlers.get(prefix)
        index = next((i for i, h in enumerate(handlers or ()) if h is handler), None)
        if handlers is None or index is None:
            return
        del handlers[index]
        if not handlers:
            del self._handlers[prefix]
            self._sock.setsockopt(zmq.UNSUBSCRIBE, prefix.encode())

    @property
    def prefixes(self) -> list[str]:
        return list(self._handlers)

    def _on_message(self, frames: list[bytes]) -> None:
        self.stats.received += 1
        try:
            if len(frames) != 2:
                raise CodecError(f"pub/sub message must be [topic, body], got {len(frames)} frames")
            topic = frames[0].decode()
            body = codec.unpackb(frames[1])
        except (CodecError, UnicodeDecodeError) as exc:
            self.stats.malformed += 1
            log.warning("malformed_frame_dropped", error=str(exc), frames=len(frames))
            return
        for prefix, handlers in list(self._handlers.items()):
            if topic.startswith(prefix):
                for handler in list(handlers):
                    try:
                        handler(topic, body)
                    except MlpError as exc:
                        self.stats.handler_errors += 1
                        log.warning("topic_handler_rejected", topic=topic, error=exc.message)
                    except Exception as exc:
                        self.stats.handler_errors += 1
                        log.error("topic_handler_failed", topic=topic, exc_info=exc)

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
        self._sock.close(linger=0)
