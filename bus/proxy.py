"""The pub/sub proxy (XSUB in, XPUB out), in two forms.

`Proxy` runs on the event loop, like the MDP broker: every inbound message is forwarded to the XPUB side
(when some external subscriber wants it) and handed, decoded once, to the local handlers whose prefix
matches; a local `Proxy.publish` goes out of the XPUB side and to local handlers. An actor of the service's
own process is reached with no socket or thread hop (a proxy thread costs two thread wake-ups per message
each way): the lowest latency when that process handles everything.

`ProxyThread` is ZeroMQ's own proxy (``zmq_proxy_steerable``) on a thread of its own, outside the GIL; the
process's actors reach it over inproc with a `Publisher` and a `Subscriber`, like any worker's. When other
processes handle part of the live series (``[kernel] processes`` > 1, worker hosts), every message they
publish or receive passes the proxy: forwarded in C it costs the serve process's event loop nothing, where
the loop proxy would spend its Python on each (``[bus] proxy``, docs/SCALING.md).
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import structlog
import zmq

from . import codec
from .mdp.frames import MORE_NOBLOCK, NOBLOCK, curve_server
from .pubsub import STOP_LINGER_MS, Dispatch, Drain, Outbox

#: ZAP domains of the proxy's two sides: publishing needs the compute role, subscribing the read role.
PUB_IN_DOMAIN = b"pub_in"
PUB_OUT_DOMAIN = b"pub_out"

#: pyzmq's compiled send, under the Python wrapper that only adds routing ids and groups (unused here): a
#: burst of updates costs one C call per frame.
_send_frame: Callable[..., Any] = zmq.backend.Socket.send

log = structlog.get_logger(__name__)


def _bind_sides(context: zmq.Context[Any], inputs: list[str], outputs: list[str], hwm: int,
                curve: tuple[str, str] | None) -> tuple[zmq.Socket[bytes], zmq.Socket[bytes], list[str], list[str]]:
    """The XSUB and XPUB sockets bound to `inputs` and `outputs`: (xsub, xpub, bound inputs, bound outputs)."""
    xsub: zmq.Socket[bytes] = context.socket(zmq.XSUB)
    xpub: zmq.Socket[bytes] = context.socket(zmq.XPUB)
    bound_inputs: list[str] = []
    bound_outputs: list[str] = []
    try:
        for sock in (xsub, xpub):
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.SNDHWM, hwm)
            sock.setsockopt(zmq.RCVHWM, hwm)
        if curve is not None:
            curve_server(xsub, *curve, PUB_IN_DOMAIN)
            curve_server(xpub, *curve, PUB_OUT_DOMAIN)
        for endpoint in inputs:
            xsub.bind(endpoint)
            bound_inputs.append(xsub.getsockopt_string(zmq.LAST_ENDPOINT))
        for endpoint in outputs:
            xpub.bind(endpoint)
            bound_outputs.append(xpub.getsockopt_string(zmq.LAST_ENDPOINT))
    except BaseException:
        xsub.close(linger=0)
        xpub.close(linger=0)
        raise
    return xsub, xpub, bound_inputs, bound_outputs


class Proxy(Dispatch):
    """The XSUB/XPUB forwarder, on the event loop, serving local handlers and publishers directly.

    Messages published in this process reach local handlers on the next loop turn, together (one
    `_deliver` for all that one turn published); at most `max_pending` (``hwm`` by default) wait for it,
    and one more is dropped for local handlers and counted (``stats.dropped_queue_full``), so a publisher
    flooding one loop turn cannot grow memory without bound.
    """


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
        self._inbound: Drain | None = None
        self._subscriptions: Drain | None = None
        # prefixes external subscribers asked for, as the XPUB side reports them (first subscription and
        # last unsubscription of each): a message nobody outside wants is not sent at all
        self._external: dict[bytes, None] = {}
        self._external_prefixes: tuple[bytes, ...] = ()
        # outbound messages, sent back to back at the end of a drain or loop turn
        self._outbox = Outbox(self._send)

    def start(self) -> None:
        """Bind both sides and start forwarding (needs the running event loop)."""
        xsub, xpub, self.bound_inputs, self.bound_outputs = _bind_sides(
            self._context, self.inputs, self.outputs, self.hwm, self._curve)
        xsub.send(b"\x01")  # subscribe upstream to everything: local handlers and the XPUB side filter
        self._xsub, self._xpub = xsub, xpub
        self._inbound = Drain(xsub, self._on_inbound, self._drained)
        self._subscriptions = Drain(xpub, self._on_subscriptions)
        log.info("pubsub_proxy_started", inputs=self.bound_inputs, outputs=self.bound_outputs)

    def _on_inbound(self, batch: list[list[bytes]]) -> None:
        """One drain of the XSUB side: forward what external subscribers want, deliver what local
        handlers want (decoded once), and send the lot when the drain ends."""
        self._outbox.holding = True
        self.stats.received += len(batch)
        external = self._external_prefixes
        if external:
            outbox = self._outbox.messages  # at most `DRAIN_MAX` of them: the drain's end sends them
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
        self._outbox.holding = False
        self._outbox.flush()

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

    @property
    def running(self) -> bool:
        return self._xsub is not None

    def publish(self, topic: str, body: Any) -> None:
        """Publish from this process: out of the XPUB side, and to local handlers on the next loop turn."""
        payload = body if type(body) is codec.Packed else codec.packb(body)
        raw_topic = topic.encode()
        if raw_topic.startswith(self._external_prefixes):
            self._outbox.add([raw_topic, payload])
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

    def flush(self) -> None:
        """Send every waiting outbound message now (in order)."""
        self._outbox.flush()

    def _send(self, burst: list[list[bytes]]) -> None:
        if self._xpub is None:
            return
        xpub, send = self._xpub, _send_frame
        for frames in burst:
            for frame in frames[:-1]:
                send(xpub, frame, MORE_NOBLOCK)
            send(xpub, frames[-1], NOBLOCK)
        if self._subscriptions is not None:
            self._subscriptions.kick()  # a send may take the descriptor's edge from a waiting subscription

    def stop(self) -> None:
        self.flush()  # nothing published before the stop is lost: ZeroMQ sends it within STOP_LINGER_MS
        for reader in (self._inbound, self._subscriptions):
            if reader is not None:
                reader.close()
        self._inbound = self._subscriptions = None
        if self._xpub is not None:
            self._xpub.close(linger=STOP_LINGER_MS)
        if self._xsub is not None:
            self._xsub.close(linger=0)
            log.info("pubsub_proxy_stopped")
        self._xsub = self._xpub = None

    def close(self) -> None:
        self.stop()


class ProxyThread:
    """ZeroMQ's proxy between an XSUB and an XPUB side, on a thread of its own (it runs in C, outside the GIL).

    Besides `inputs` and `outputs`, each side binds an inproc endpoint, `local_in` and `local_out`, where this
    process's `Publisher` and `Subscriber` connect (inproc peers skip CURVE: they are this process). `stats`
    reads the proxy's own counters; `stop` ends the thread through its control socket.
    """

    def __init__(self, context: zmq.Context[Any], inputs: list[str], outputs: list[str], *,
                 hwm: int = 10_000, curve: tuple[str, str] | None = None) -> None:
        self._context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.shadow(context.underlying)
        name = uuid.uuid4().hex[:12]
        self.local_in = f"inproc://pubsub-in-{name}"
        self.local_out = f"inproc://pubsub-out-{name}"
        self._control_endpoint = f"inproc://pubsub-control-{name}"
        self.inputs = list(inputs)
        self.outputs = list(outputs)
        self.hwm = hwm
        self._curve = curve
        self.bound_inputs: list[str] = []
        self.bound_outputs: list[str] = []
        self._control: zmq.Socket[bytes] | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._last_stats = {"in": 0, "in_bytes": 0, "out": 0, "out_bytes": 0}

    @property
    def running(self) -> bool:
        """Whether the proxy thread runs (it ends only at `stop`, or on an error it logged)."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Bind both sides and start the proxy thread."""
        xsub, xpub, bound_inputs, bound_outputs = _bind_sides(
            self._context, [*self.inputs, self.local_in], [*self.outputs, self.local_out], self.hwm, self._curve)
        self.bound_inputs, self.bound_outputs = bound_inputs[:-1], bound_outputs[:-1]
        control: zmq.Socket[bytes] = self._context.socket(zmq.PAIR)
        control.setsockopt(zmq.LINGER, 0)
        control.bind(self._control_endpoint)
        theirs: zmq.Socket[bytes] = self._context.socket(zmq.PAIR)
        theirs.setsockopt(zmq.LINGER, 0)
        theirs.connect(self._control_endpoint)
        self._control = control
        # The sockets are handed to the thread here and never touched by this one again.
        self._thread = threading.Thread(target=self._run, args=(xsub, xpub, theirs), name="mlp-pubsub-proxy",
                                        daemon=True)
        self._thread.start()
        log.info("pubsub_proxy_started", inputs=self.bound_inputs, outputs=self.bound_outputs, thread=True)

    def _run(self, xsub: zmq.Socket[bytes], xpub: zmq.Socket[bytes], control: zmq.Socket[bytes]) -> None:
        try:
            zmq.proxy_steerable(xsub, xpub, None, control)
            if not self._stopping:
                log.error("pubsub_proxy_failed", error="the proxy ended without a stop")
        except zmq.ZMQError as exc:
            if exc.errno == zmq.ETERM:  # the context ended first: the process is going down
                log.info("pubsub_proxy_ended_with_its_context")
            else:
                log.error("pubsub_proxy_failed", error=str(exc))
        finally:
            xsub.close(linger=0)
            control.close(linger=0)
            xpub.close(linger=STOP_LINGER_MS)  # what it forwarded still reaches the subscribers

    def stats(self) -> dict[str, int]:
        """The proxy's counters (frames, as ZeroMQ counts them): ``in`` read from publishers, ``out`` sent to
        subscribers; empty once stopped. The thread answers between two forwards, in microseconds; if it
        has not within 10 ms (a long burst), the last answer is given again rather than hold the caller's
        event loop."""
        control = self._control
        if control is None or not self.running:
            return {}
        while control.poll(0):  # a reply that came after an earlier call gave up
            self._last_stats = self._parse_stats(control.recv_multipart())
        try:
            control.send(b"STATISTICS", zmq.NOBLOCK)  # a PAIR whose peer is gone would block
        except zmq.Again:
            return dict(self._last_stats)
        if control.poll(10):
            self._last_stats = self._parse_stats(control.recv_multipart())
        return dict(self._last_stats)

    @staticmethod
    def _parse_stats(frames: list[bytes]) -> dict[str, int]:
        counts = [int.from_bytes(frame, "little") for frame in frames]
        # frontend: messages in, bytes in, messages out, bytes out; then the backend's four
        return {"in": counts[0], "in_bytes": counts[1], "out": counts[6], "out_bytes": counts[7]}

    def stop(self) -> None:
        """End the thread once it has forwarded what waits for it (`_settle`), then close the control socket."""
        if self._control is None:
            return
        self._settle()
        self._stopping = True
        try:
            self._control.send(b"TERMINATE", zmq.NOBLOCK)  # the thread may have ended (its socket gone)
        except zmq.ZMQError as exc:
            log.debug("pubsub_proxy_terminate_failed", error=str(exc))
        if self._thread is not None:
            self._thread.join(timeout=2)
            if self._thread.is_alive():
                log.error("pubsub_proxy_not_stopped")
        self._control.close(linger=0)
        self._control = None
        log.info("pubsub_proxy_stopped")

    def _settle(self, bound_s: float = 0.5, quiet_s: float = 0.005) -> None:
        """Wait until the proxy has read nothing new for `quiet_s` (at most `bound_s` in all): the messages
        this process's publishers sent before their close are still in the inproc pipe, and a TERMINATE
        would end the thread before it forwards them. Publishers that never stop end the wait at the bound."""
        deadline = time.monotonic() + bound_s
        last = self.stats().get("in")
        while last is not None and time.monotonic() < deadline:
            time.sleep(quiet_s)
            now = self.stats().get("in")
            if now == last:
                return
            last = now

    def close(self) -> None:
        self.stop()
