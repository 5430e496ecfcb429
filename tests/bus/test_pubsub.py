"""Pub/sub on real sockets: the XSUB/XPUB proxies (on the loop and on a thread), publishers, topic-dispatching
subscribers, bad input, slow peers."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np
import pytest
import zmq
import zmq.asyncio

from ml_processing.bus import codec, topics
from ml_processing.bus.errors import BadRequest, CodecError
from ml_processing.bus.proxy import Proxy, ProxyThread
from ml_processing.bus.pubsub import DRAIN_MAX, Outbox, Publisher, Subscriber

from .helpers import wait_until

_SYNC_IDS = itertools.count()


@dataclass(eq=False)  # handlers are told apart by identity, as `unsubscribe` must
class Collector:
    """A real handler that records what it was given."""

    messages: list[tuple[str, Any]] = field(default_factory=list)

    def __call__(self, topic: str, body: Any) -> None:
        self.messages.append((topic, body))

    def topics(self, prefix: str = "") -> list[str]:
        return [t for t, _ in self.messages if t.startswith(prefix)]

    def bodies(self, prefix: str = "") -> list[Any]:
        return [b for t, b in self.messages if t.startswith(prefix)]


@dataclass(eq=False)
class BatchCollector:
    """A real batch handler: records each call's messages."""

    calls: list[list[tuple[str, Any]]] = field(default_factory=list)

    def __call__(self, messages: Any) -> None:
        self.calls.append(list(messages))

    @property
    def messages(self) -> list[tuple[str, Any]]:
        return [m for call in self.calls for m in call]


@dataclass
class Bus:
    """A running proxy plus the publishers and subscribers a test made on it (all closed afterwards)."""

    ctx: zmq.asyncio.Context
    proxy: Proxy | ProxyThread
    closers: list[Callable[[], None]] = field(default_factory=list)

    @property
    def pub_in(self) -> str:
        return str(self.proxy.bound_inputs[0])

    def sub_out(self, index: int = 0) -> str:
        return str(self.proxy.bound_outputs[index])

    def publisher(self, *, hwm: int = 10_000) -> Publisher:
        pub = Publisher(self.ctx, self.pub_in, hwm=hwm)
        self.closers.append(pub.close)
        return pub

    def subscriber(self, *, output: int = 0, hwm: int = 10_000, start: bool = True) -> Subscriber:
        sub = Subscriber(self.ctx, self.sub_out(output), hwm=hwm)
        self.closers.append(sub.close)
        if start:
            sub.start()
        return sub

    def raw_socket(self, kind: int, endpoint: str, **options: int) -> zmq.Socket[bytes]:
        sock: zmq.Socket[bytes] = zmq.Context.shadow(self.ctx.underlying).socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        for name, value in options.items():
            sock.setsockopt(getattr(zmq, name), value)
        sock.connect(endpoint)
        self.closers.append(lambda: sock.close(linger=0))
        return sock


def endpoints(transport: str) -> tuple[list[str], list[str]]:
    if transport == "tcp":
        return ["tcp://127.0.0.1:*"], ["tcp://127.0.0.1:*"]
    name = uuid.uuid4().hex[:12]
    return [f"inproc://in-{name}"], [f"inproc://out-{name}"]


@contextmanager
def running_proxy(ctx: zmq.asyncio.Context, inputs: list[str], outputs: list[str],
                  *, hwm: int = 10_000, runs: str = "loop") -> Iterator[Bus]:
    proxy = Proxy(ctx, inputs, outputs, hwm=hwm) if runs == "loop" else ProxyThread(ctx, inputs, outputs, hwm=hwm)
    proxy.start()
    bus = Bus(ctx, proxy)
    try:
        yield bus
    finally:
        for close in reversed(bus.closers):
            close()
        proxy.stop()


@pytest.fixture(params=[("loop", "tcp"), ("loop", "inproc"), ("thread", "tcp"), ("thread", "inproc")],
                ids="-".join)
async def bus(request: pytest.FixtureRequest, zctx: zmq.asyncio.Context) -> AsyncIterator[Bus]:
    runs, transport = request.param
    with running_proxy(zctx, *endpoints(transport), runs=runs) as running:
        yield running


async def handshake(send: Callable[[str, Any], None], sub: Subscriber,
                    ready: Callable[[], bool] = lambda: True) -> int:
    """Beat the slow joiner: publish a probe on a fresh topic until `sub` has it (and `ready()` holds).

    Subscriptions travel in order, so once the probe arrives every earlier subscribe/unsubscribe of `sub`
    has reached the publisher. Bounded: at most 500 probes, 10 ms apart.
    """
    topic = topics.kernel(f"sync{next(_SYNC_IDS)}")
    seen = Collector()
    sub.subscribe(topic, seen)
    try:
        for attempt in range(1, 501):
            send(topic, {"probe": attempt})
            try:
                await wait_until(lambda: seen.messages and ready(), timeout=0.01, interval=0.005)
                return attempt
            except AssertionError:
                continue
        raise AssertionError("subscription never reached the publisher")
    finally:
        sub.unsubscribe(topic, seen)


async def flush(pub: Publisher, sub: Subscriber) -> None:
    """Publish a marker after everything else and wait for it: whatever was sent before has arrived."""
    marker = topics.kernel(f"flush{next(_SYNC_IDS)}")
    seen = Collector()
    sub.subscribe(marker, seen)
    try:
        await handshake(pub.publish, sub)  # the marker's subscription is in place
        pub.publish(marker, {"end": True})
        await wait_until(lambda: seen.messages, what="flush marker")
    finally:
        sub.unsubscribe(marker, seen)


# -- dispatch --------------------------------------------------------------------------------------------------


async def test_topic_prefix_dispatch(bus: Bus) -> None:
    pub = bus.publisher()
    sub = bus.subscriber()
    aapl, ticks, all_bars = Collector(), Collector(), Collector()
    sub.subscribe(topics.prefix(topics.BAR, "AAPL"), aapl)
    sub.subscribe(topics.prefix(topics.TICK), ticks)
    sub.subscribe(topics.prefix(topics.BAR), all_bars)
    await handshake(pub.publish, sub)

    pub.publish(topics.bar("AAPL", "1m"), {"close": 1.0})
    pub.publish(topics.bar("AAPLX", "1m"), {"close": 2.0})
    pub.publish(topics.tick("MSFT"), {"price": 3.0})
    pub.publish(topics.indicator("AAPL", "1m"), {"rsi": 50.0})
    pub.publish(topics.bar("AAPL", "1d"), {"close": np.array([1.5, 2.5])})
    pub.publish("barAAPL", {"no": "dot"})
    await flush(pub, sub)

    assert aapl.topics() == ["bar.AAPL.1m", "bar.AAPL.1d"]
    assert ticks.messages == [("tick.MSFT", {"price": 3.0})]
    assert all_bars.topics() == ["bar.AAPL.1m", "bar.AAPLX.1m", "bar.AAPL.1d"]
    assert aapl.bodies()[1]["close"].tolist() == [1.5, 2.5]
    assert sub.stats.malformed == 0 and sub.stats.handler_errors == 0


async def test_subscribe_before_start_and_two_handlers_on_one_prefix(bus: Bus) -> None:
    pub = bus.publisher()
    sub = bus.subscriber(start=False)
    first, second = Collector(), Collector()
    sub.subscribe(topics.prefix(topics.SIGNAL), first)
    sub.subscribe(topics.prefix(topics.SIGNAL), second)
    sub.start()
    await handshake(pub.publish, sub)

    pub.publish(topics.signal("ES"), {"side": "buy"})
    await flush(pub, sub)

    assert first.messages == second.messages == [("signal.ES", {"side": "buy"})]
    assert sub.prefixes.count("signal.") == 1


async def test_unsubscribe(bus: Bus) -> None:
    pub = bus.publisher()
    sub = bus.subscriber()
    kept, dropped = Collector(), Collector()
    prefix = topics.prefix(topics.BAR, "AAPL")
    sub.subscribe(prefix, kept)
    sub.subscribe(prefix, dropped)
    await handshake(pub.publish, sub)
    pub.publish(topics.bar("AAPL", "1m"), {"n": 1})
    await flush(pub, sub)

    sub.unsubscribe(prefix, dropped)
    sub.unsubscribe(prefix, lambda t, b: None)  # never subscribed: ignored
    pub.publish(topics.bar("AAPL", "1m"), {"n": 2})
    await flush(pub, sub)

    sub.unsubscribe(prefix, kept)
    others, marker = Collector(), Collector()
    sub.subscribe(topics.prefix(topics.KERNEL), others)
    sub.subscribe(topics.prefix(topics.TICK), marker)
    await handshake(pub.publish, sub)  # the socket-level unsubscribe has reached the publisher too
    received_before, others_before = sub.stats.received, len(others.messages)
    pub.publish(topics.bar("AAPL", "1m"), {"n": 3})
    pub.publish(topics.tick("END"), {})
    await wait_until(lambda: marker.messages, what="end marker")

    assert kept.bodies() == [{"n": 1}, {"n": 2}]
    assert dropped.bodies() == [{"n": 1}]
    assert prefix not in sub.prefixes
    # bar.AAPL no longer reaches the socket at all: everything received since went to a handler
    assert sub.stats.received - received_before == len(others.messages) - others_before + len(marker.messages)
    assert sub.stats.malformed == 0


async def test_slow_joiner_is_handled_by_retrying(bus: Bus) -> None:
    sub = bus.subscriber()
    got = Collector()
    sub.subscribe(topics.prefix(topics.LABEL), got)
    pub = bus.publisher()  # connects after the subscription: the first messages may be lost

    attempts = 0
    for attempts in range(1, 501):  # bounded: 500 tries, 10 ms apart at most
        pub.publish(topics.label("AAPL"), {"attempt": attempts})
        try:
            await wait_until(lambda: got.messages, timeout=0.01, interval=0.005)
            break
        except AssertionError:
            continue

    assert got.messages, "never received"
    assert got.topics() == ["label.AAPL"] * len(got.messages)
    assert got.bodies()[0]["attempt"] <= attempts


# -- a socket drain at a time ------------------------------------------------------------------------------------


@contextmanager
def inproc_proxy(zctx: zmq.asyncio.Context) -> Iterator[tuple[Bus, zmq.Socket[bytes]]]:
    """A proxy on inproc endpoints and a plain PUB on its input: what a test sends without awaiting is queued
    whole before the proxy's next drain (inproc has no I/O thread in between)."""
    with running_proxy(zctx, *endpoints("inproc")) as running:
        yield running, running.raw_socket(zmq.PUB, running.pub_in)


def sender(raw: zmq.Socket[bytes]) -> Callable[[str, Any], None]:
    return lambda topic, body: raw.send_multipart([topic.encode(), codec.packb(body)])


async def test_a_batch_handler_gets_each_drain_in_one_call_in_order(zctx: zmq.asyncio.Context) -> None:
    with inproc_proxy(zctx) as (running, raw):
        proxy, batches, each = running.proxy, BatchCollector(), Collector()
        proxy.subscribe_batch(topics.prefix(topics.BAR), batches)
        proxy.subscribe(topics.prefix(topics.BAR), each)
        await handshake(sender(raw), proxy)
        for i in range(50):  # no await in between: all of them wait for one drain
            raw.send_multipart([topics.bar(f"S{i % 7}", "1m").encode(), codec.packb({"i": i})])
        await wait_until(lambda: len(batches.messages) == 50, what="the 50 bars")

        assert [len(call) for call in batches.calls] == [50]
        assert [body["i"] for _, body in batches.messages] == list(range(50))
        assert batches.messages == each.messages  # a per-message handler sees the same, one at a time
        assert proxy.stats.handler_errors == 0


async def test_a_drain_reads_at_most_drain_max_and_the_rest_follows(zctx: zmq.asyncio.Context) -> None:
    with inproc_proxy(zctx) as (running, raw):
        proxy, batches = running.proxy, BatchCollector()
        proxy.subscribe_batch(topics.prefix(topics.TICK), batches)
        await handshake(sender(raw), proxy)
        count = DRAIN_MAX + 10
        for i in range(count):
            raw.send_multipart([topics.tick("ES").encode(), codec.packb({"i": i})])
        await wait_until(lambda: len(batches.messages) == count, what="every tick")

        assert [len(call) for call in batches.calls] == [DRAIN_MAX, 10]
        assert [body["i"] for _, body in batches.messages] == list(range(count))


async def test_what_a_drain_publishes_is_sent_in_one_burst_when_it_ends(zctx: zmq.asyncio.Context) -> None:
    """Updates published while a drain is handled wait for its end (no loop turn is scheduled for them) and
    then leave together, in order."""
    with inproc_proxy(zctx) as (running, raw):
        proxy, outside, seen = running.proxy, running.subscriber(), Collector()
        waiting: list[int] = []

        def on_bars(messages: Any) -> None:
            for topic, body in messages:
                proxy.publish(topics.indicator(topics.parse(topic).symbol or "", "1m"), {"i": body["i"]})
            waiting.append(len(proxy._outbox.messages))
            assert not proxy._outbox._scheduled

        proxy.subscribe_batch(topics.prefix(topics.BAR), on_bars)
        outside.subscribe(topics.prefix(topics.INDICATOR), seen)
        await handshake(sender(raw), proxy)
        await handshake(proxy.publish, outside)
        for i in range(40):
            raw.send_multipart([topics.bar("ES", "1m").encode(), codec.packb({"i": i})])
        await wait_until(lambda: len(seen.messages) == 40, timeout=5.0, what="the 40 updates outside")

        assert waiting == [40] and not proxy._outbox.messages
        assert [body["i"] for body in seen.bodies()] == list(range(40))
        assert proxy.stats.handler_errors == 0


async def test_local_publishes_of_one_loop_turn_reach_a_batch_handler_together(zctx: zmq.asyncio.Context) -> None:
    with inproc_proxy(zctx) as (running, _):
        proxy, batches = running.proxy, BatchCollector()
        proxy.subscribe_batch(topics.prefix(topics.SIGNAL), batches)
        for i in range(5):
            proxy.publish(topics.signal("ES"), {"i": i})
        await wait_until(lambda: batches.messages, what="the local signals")

        assert [[body["i"] for _, body in call] for call in batches.calls] == [[0, 1, 2, 3, 4]]


async def test_a_batch_handler_that_raises_is_counted_once_and_keeps_its_subscription(
        zctx: zmq.asyncio.Context) -> None:
    with inproc_proxy(zctx) as (running, raw):
        proxy, batches = running.proxy, BatchCollector()

        def breaks(messages: Any) -> None:
            if any(body.get("crash") for _, body in messages):
                raise RuntimeError("batch handler crashed on purpose")
            batches(messages)

        proxy.subscribe_batch(topics.prefix(topics.LABEL), breaks)
        await handshake(sender(raw), proxy)
        before = len(batches.messages)
        for body in ({"n": 1}, {"crash": True}, {"n": 2}):
            raw.send_multipart([topics.label("ES").encode(), codec.packb(body)])
        await wait_until(lambda: proxy.stats.handler_errors == 1, what="the failed drain counted")
        raw.send_multipart([topics.label("ES").encode(), codec.packb({"n": 3})])
        await wait_until(lambda: len(batches.messages) > before, what="the next drain")

        assert batches.messages[before:] == [("label.ES", {"n": 3})]
        assert proxy.stats.handler_errors == 1


async def test_a_bound_method_unsubscribes_like_the_function_it_wraps(bus: Bus) -> None:
    """``obj.method`` is a new object at each access: unsubscribing it still ends the subscription."""

    class Owner:
        def __init__(self) -> None:
            self.got: list[Any] = []

        def on_label(self, topic: str, body: Any) -> None:
            self.got.append(body)

    pub, sub, owner, marker = bus.publisher(), bus.subscriber(), Owner(), Collector()
    sub.subscribe(topics.prefix(topics.LABEL), owner.on_label)
    sub.subscribe(topics.prefix(topics.TICK), marker)
    await handshake(pub.publish, sub)
    pub.publish(topics.label("ES"), {"n": 1})
    await flush(pub, sub)
    sub.unsubscribe(topics.prefix(topics.LABEL), owner.on_label)
    pub.publish(topics.label("ES"), {"n": 2})
    pub.publish(topics.tick("END"), {})
    await wait_until(lambda: marker.messages, what="the end marker")

    assert owner.got == [{"n": 1}]
    assert topics.prefix(topics.LABEL) not in sub.prefixes


# -- bad input and failing handlers -----------------------------------------------------------------------------


async def test_malformed_messages_are_counted_and_not_fatal(bus: Bus) -> None:
    raw = bus.raw_socket(zmq.PUB, bus.pub_in)
    sub = bus.subscriber()
    got = Collector()
    sub.subscribe(topics.prefix(topics.BAR), got)

    def send_raw(topic: str, body: Any) -> None:
        raw.send_multipart([topic.encode(), codec.packb(body)])

    await handshake(send_raw, sub)
    body = codec.packb({"close": 1.0})
    raw.send_multipart([b"bar.A.1m"])                                  # 1 frame
    raw.send_multipart([b"bar.A.1m", body, b"extra"])                  # 3 frames
    raw.send_multipart([b"bar.A.1m", b"\xc1 not msgpack"])             # body not msgpack
    raw.send_multipart([b"bar.A.1m", body[:-1]])                       # truncated msgpack
    raw.send_multipart([b"bar.\xff\xfe.1m", body])                     # topic not UTF-8
    raw.send_multipart([b"bar.A.1m", msgpack.packb(msgpack.ExtType(1, b"\x03|O\x00"))])  # refused ext
    raw.send_multipart([b"bar.A B.1m", body])                          # topic does not parse: bad symbol
    raw.send_multipart([b"bar.A.1m.x", body])                          # topic does not parse: four parts
    raw.send_multipart([b"bar.A.1m", body])                            # fine
    await wait_until(lambda: got.messages, what="the good message")

    assert sub.stats.drops() == {"queue_full": 0, "malformed": 5, "bad_topic": 3}
    assert sub.stats.malformed == 8 and sub.stats.dropped == 8
    assert got.messages == [("bar.A.1m", {"close": 1.0})]
    assert sub.stats.handler_errors == 0


async def test_proxy_counts_what_it_drops_for_local_handlers_by_reason(zctx: zmq.asyncio.Context) -> None:
    """The proxy's own handlers see inbound messages without a subscriber socket: the same drops, counted on
    the proxy; a message no local handler wants is only forwarded, never judged."""
    with running_proxy(zctx, *endpoints("tcp")) as running:
        proxy, got = running.proxy, Collector()
        proxy.subscribe(topics.prefix(topics.BAR), got)
        raw = running.raw_socket(zmq.PUB, running.pub_in)
        await handshake(lambda topic, body: raw.send_multipart([topic.encode(), codec.packb(body)]), proxy)
        before = proxy.stats.received
        body = codec.packb({"close": 1.0})
        raw.send_multipart([b"bar.A.1m", body, b"extra"])   # malformed: three frames
        raw.send_multipart([b"bar.A.1m", b"\xc1"])          # malformed: body not msgpack
        raw.send_multipart([b"bar.\xff.1m", body])          # bad topic: not UTF-8
        raw.send_multipart([b"bar.A!.1m", body])            # bad topic: does not parse
        raw.send_multipart([b"tick.A!", body])              # no local handler wants it: not judged
        raw.send_multipart([b"bar.A.1m", body])
        await wait_until(lambda: got.messages, what="the good message")

        assert proxy.stats.drops() == {"queue_full": 0, "malformed": 2, "bad_topic": 2}
        assert proxy.stats.received - before == 6
        assert got.messages == [("bar.A.1m", {"close": 1.0})]


async def test_local_deliveries_past_max_pending_are_dropped_and_counted(zctx: zmq.asyncio.Context) -> None:
    """At most `max_pending` local publishes wait for the next loop turn; more in the same turn are dropped
    for local handlers (counted), and the limit frees again once they are delivered."""
    proxy = Proxy(zctx, [f"inproc://in-{uuid.uuid4().hex[:12]}"], [f"inproc://out-{uuid.uuid4().hex[:12]}"],
                  max_pending=5)
    proxy.start()
    try:
        got = Collector()
        proxy.subscribe(topics.prefix(topics.INDICATOR), got)
        for i in range(8):  # one loop turn: nothing is delivered in between
            proxy.publish(topics.indicator("AAPL", "1m"), {"i": i})
        dropped_in_burst = proxy.stats.dropped_queue_full
        await wait_until(lambda: len(got.messages) == 5, what="the first five delivered")
        proxy.publish(topics.indicator("AAPL", "1m"), {"i": "later"})
        await wait_until(lambda: len(got.messages) == 6, what="a later publish delivered")
    finally:
        proxy.stop()

    assert dropped_in_burst == 3
    assert [b["i"] for b in got.bodies()] == [0, 1, 2, 3, 4, "later"]
    assert proxy.stats.drops() == {"queue_full": 3, "malformed": 0, "bad_topic": 0}
    assert proxy.published == 9


async def test_handler_errors_are_counted_and_others_still_run(bus: Bus) -> None:
    pub = bus.publisher()
    sub = bus.subscriber()
    got = Collector()

    def crashes(topic: str, body: Any) -> None:
        raise RuntimeError("boom")

    def rejects(topic: str, body: Any) -> None:
        raise BadRequest("bad bar", field="close")

    prefix = topics.prefix(topics.PREDICTION)
    sub.subscribe(prefix, crashes)
    sub.subscribe(prefix, rejects)
    sub.subscribe(prefix, got)
    await handshake(pub.publish, sub)

    for i in range(3):
        pub.publish(topics.prediction("AAPL"), {"i": i})
    await wait_until(lambda: len(got.messages) == 3, what="three predictions")

    assert got.bodies() == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert sub.stats.handler_errors == 6
    assert sub.stats.malformed == 0


async def test_a_burst_publisher_sends_a_loop_turns_messages_together_in_order(bus: Bus) -> None:
    pub = Publisher(bus.ctx, bus.pub_in, burst=True)
    bus.closers.append(pub.close)
    sub = bus.subscriber()
    got = Collector()
    sub.subscribe(topics.prefix(topics.TICK), got)
    await handshake(pub.publish, sub)

    total = 3 * Outbox.FLUSH_AT + 44  # one loop turn: full bursts go at once, the rest at its end
    for i in range(total):
        pub.publish(topics.tick("AAPL"), {"i": i})
    assert pub.published >= total
    await wait_until(lambda: len(got.messages) == total, what="the whole burst")
    assert [b["i"] for b in got.bodies()] == list(range(total))

    pub.publish(topics.tick("AAPL"), {"i": "last"})
    pub.close()  # sends what waits first
    await wait_until(lambda: got.bodies()[-1:] == [{"i": "last"}], what="the message sent at close")


async def test_publishing_an_unencodable_body_raises_codec_error(bus: Bus) -> None:
    pub = bus.publisher()

    with pytest.raises(CodecError):
        pub.publish(topics.tick("AAPL"), {"bad": object()})

    assert pub.published == 0


# -- slow consumers --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("runs", ["loop", "thread"])
async def test_subscriber_that_never_reads_does_not_block_the_publisher(zctx: zmq.asyncio.Context, runs: str) -> None:
    name = uuid.uuid4().hex[:12]
    with running_proxy(zctx, ["tcp://127.0.0.1:*"], ["tcp://127.0.0.1:*", f"inproc://slow-{name}"],
                       hwm=100, runs=runs) as bus:
        pub = bus.publisher(hwm=100)
        slow = bus.raw_socket(zmq.SUB, bus.sub_out(1), RCVHWM=10)
        slow.setsockopt(zmq.SUBSCRIBE, b"")
        fast = bus.subscriber(output=0)
        got = Collector()
        fast.subscribe(topics.prefix(topics.BAR), got)
        # both subscriptions are in place once the fast one got a probe and the slow one has one queued
        await handshake(pub.publish, fast, ready=lambda: bool(slow.poll(0, zmq.POLLIN)))

        total = 50_000
        for i in range(total):  # bounded; the loop would raise or stall here if the PUB blocked
            pub.publish(topics.bar("AAPL", "1m"), {"i": i})
        published_after_burst = pub.published
        await handshake(pub.publish, fast)  # later messages still get through to the fast subscriber
        got.messages.clear()
        pub.publish(topics.bar("AAPL", "1m"), {"i": "after"})
        await wait_until(lambda: got.messages, what="a message published after the burst")

        queued = 0
        for _ in range(total + 1_000):  # what the slow subscriber holds: bounded by the high-water marks
            try:
                slow.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            queued += 1

    assert published_after_burst >= total
    assert got.messages == [("bar.AAPL.1m", {"i": "after"})]
    assert 0 < queued < total


async def test_proxy_serves_its_own_process_without_a_hop(zctx: zmq.asyncio.Context) -> None:
    """Local handlers get inbound messages from the proxy itself; a local publish reaches external
    subscribers and local handlers (as a decoded copy, on the next loop turn)."""
    with running_proxy(zctx, *endpoints("tcp")) as running:
        proxy = running.proxy
        local, outside = Collector(), running.subscriber()
        proxy.subscribe("bar.", local)
        outside_seen = Collector()
        pub = running.publisher()
        await handshake(pub.publish, outside)  # external subscriber connected and subscribed
        outside.subscribe("indicator.", outside_seen)
        await handshake(proxy.publish, outside)
        pub.publish(topics.bar("AAPL", "1m"), {"close": 1.0})
        await wait_until(lambda: local.bodies("bar.AAPL"), timeout=5.0, what="inbound bar delivered locally")
        body = {"values": [1, 2]}
        proxy.publish(topics.indicator("AAPL", "1m"), body)
        proxy.subscribe("indicator.", local)
        proxy.publish(topics.indicator("AAPL", "1m"), body)
        await wait_until(lambda: local.bodies("indicator.") and outside_seen.bodies("indicator."), timeout=5.0,
                         what="a local publish seen locally and outside")
        assert local.bodies("indicator.")[0] == body and local.bodies("indicator.")[0] is not body
        assert proxy.published >= 2 and proxy.forwarded >= 1
        proxy.unsubscribe("bar.", local)
        before = len(local.bodies("bar."))
        await flush(pub, outside)
        assert len(local.bodies("bar.")) == before


async def test_local_publishes_arrive_complete_and_in_order_across_batches(zctx: zmq.asyncio.Context) -> None:
    """Outbound messages are sent in batches (`Outbox.FLUSH_AT`, or at the end of the loop turn): a burst
    larger than a batch, published in one turn, reaches an external subscriber whole and in order."""
    with running_proxy(zctx, *endpoints("tcp")) as running:
        proxy, outside, seen = running.proxy, running.subscriber(), Collector()
        outside.subscribe("indicator.", seen)
        await handshake(proxy.publish, outside)
        count = Outbox.FLUSH_AT * 3 + 5
        for i in range(count):
            proxy.publish(topics.indicator("AAPL", "1m"), {"i": i})
        await wait_until(lambda: len(seen.messages) == count, timeout=5.0, what="the whole burst")
        assert [b["i"] for b in seen.bodies()] == list(range(count))


async def test_only_what_an_external_subscriber_wants_is_forwarded(zctx: zmq.asyncio.Context) -> None:
    """The proxy tracks external subscriptions from its XPUB side: an inbound bar nobody outside asked for
    is handed to local handlers but never sent; once someone subscribes it is, and after they leave it
    stops again."""
    with running_proxy(zctx, *endpoints("tcp")) as running:
        proxy, pub, local = running.proxy, running.publisher(), Collector()
        proxy.subscribe("bar.", local)
        probe = running.subscriber()  # subscribes only to handshake topics
        await handshake(pub.publish, probe)
        forwarded_before = proxy.forwarded
        pub.publish(topics.bar("AAPL", "1m"), {"n": 1})
        await wait_until(lambda: local.bodies("bar."), timeout=5.0, what="the bar, locally")
        assert proxy.forwarded == forwarded_before  # nobody outside asked for bars
        outside, seen = running.subscriber(), Collector()
        outside.subscribe("bar.AAPL.", seen)
        await handshake(pub.publish, outside, ready=lambda: b"bar.AAPL." in proxy._external)
        pub.publish(topics.bar("AAPL", "1m"), {"n": 2})
        await wait_until(lambda: seen.bodies(), timeout=5.0, what="the bar, outside")
        assert seen.bodies() == [{"n": 2}] and proxy.forwarded > forwarded_before
        outside.unsubscribe("bar.AAPL.", seen)
        await handshake(pub.publish, outside, ready=lambda: b"bar.AAPL." not in proxy._external)
        after = proxy.forwarded
        pub.publish(topics.bar("AAPL", "1m"), {"n": 3})
        await wait_until(lambda: len(local.bodies("bar.")) == 3, timeout=5.0, what="the third bar, locally")
        assert proxy.forwarded == after


async def test_malformed_subscription_frames_are_counted(zctx: zmq.asyncio.Context) -> None:
    with running_proxy(zctx, *endpoints("tcp")) as running:
        raw = running.raw_socket(zmq.XSUB, running.sub_out())
        raw.send(b"\x07garbage")  # neither subscribe (1) nor unsubscribe (0)
        await wait_until(lambda: running.proxy.stats.malformed == 1, timeout=5.0, what="the bad frame counted")
        assert running.proxy.stats.dropped_malformed == 1
        assert b"garbage" not in running.proxy._external


async def test_flush_sends_what_waits_and_stop_flushes_first(zctx: zmq.asyncio.Context) -> None:
    with running_proxy(zctx, *endpoints("tcp")) as running:
        proxy, outside, seen = running.proxy, running.subscriber(), Collector()
        outside.subscribe("indicator.", seen)
        await handshake(proxy.publish, outside)
        proxy.publish(topics.indicator("AAPL", "1m"), {"n": 1})
        assert len(proxy._outbox.messages) == 1  # waiting for the end of the loop turn
        proxy.flush()
        assert not proxy._outbox.messages
        await wait_until(lambda: seen.bodies("indicator."), timeout=5.0, what="the flushed message")
        proxy.publish(topics.indicator("AAPL", "1m"), {"n": 2})
        proxy.stop()
        assert not proxy._outbox.messages  # handed to ZeroMQ before its socket closed, not dropped by us
