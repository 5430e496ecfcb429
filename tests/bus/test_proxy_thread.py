"""ZeroMQ's own proxy on a thread (`ProxyThread`): its process reaches it over inproc, others over tcp; what
anyone sends, well-formed or not, is forwarded as sent and never stops it; stop ends the thread and frees
the endpoints. (The publish/subscribe behaviour shared with the loop proxy is tested in test_pubsub.py,
against both.)"""

from __future__ import annotations

import time

import pytest
import zmq
import zmq.asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ml_processing.bus import codec, topics
from ml_processing.bus.proxy import ProxyThread
from ml_processing.bus.pubsub import Publisher, Subscriber

from .helpers import wait_until
from .test_pubsub import Collector, handshake


async def test_its_process_publishes_and_subscribes_over_inproc_and_others_over_tcp(
        zctx: zmq.asyncio.Context) -> None:
    proxy = ProxyThread(zctx, ["tcp://127.0.0.1:*"], ["tcp://127.0.0.1:*"])
    proxy.start()
    local_pub, local_sub = Publisher(zctx, proxy.local_in), Subscriber(zctx, proxy.local_out)
    far_pub, far_sub = Publisher(zctx, proxy.bound_inputs[0]), Subscriber(zctx, proxy.bound_outputs[0])
    try:
        assert [e.split(":")[0] for e in (*proxy.bound_inputs, *proxy.bound_outputs)] == ["tcp", "tcp"]
        local_sub.start()
        far_sub.start()
        near, far = Collector(), Collector()
        local_sub.subscribe(topics.prefix(topics.BAR), near)
        far_sub.subscribe(topics.prefix(topics.INDICATOR), far)
        await handshake(far_pub.publish, local_sub)
        await handshake(local_pub.publish, far_sub)

        far_pub.publish(topics.bar("AAPL", "1m"), {"close": 1.5})      # a feed elsewhere -> this process
        local_pub.publish(topics.indicator("AAPL", "1m"), {"sma": 2.5})  # this process -> a subscriber elsewhere
        local_pub.publish(topics.tick("AAPL"), {"price": 3.0})           # nobody subscribed: not even sent
        await wait_until(lambda: near.messages and far.messages, what="both directions")

        assert near.messages == [("bar.AAPL.1m", {"close": 1.5})]
        assert far.messages == [("indicator.AAPL.1m", {"sma": 2.5})]
        stats = proxy.stats()
        assert stats["in"] >= 2 * 3 and stats["out"] >= 2 * 2  # frames: topic and body of each message
        assert stats["in"] == stats["out"]  # subscriptions reach the publishers: the tick never left its own
    finally:
        for sock in (local_pub, local_sub, far_pub, far_sub):
            sock.close()
        proxy.stop()


def test_stop_ends_the_thread_and_frees_its_endpoints() -> None:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        proxy = ProxyThread(ctx, ["tcp://127.0.0.1:*"], ["tcp://127.0.0.1:*"])
        proxy.start()
        thread = proxy._thread
        assert thread is not None and thread.is_alive() and proxy.stats()["in"] == 0
        proxy.stop()
        assert not thread.is_alive() and proxy.stats() == {}
        proxy.stop()  # twice: nothing more to do
        again = ProxyThread(ctx, proxy.bound_inputs, proxy.bound_outputs)  # the same ports, free again
        deadline = time.monotonic() + 5
        while True:  # ZeroMQ unbinds a closed socket's ports in its own threads, moments later
            try:
                again.start()
                break
            except zmq.ZMQError as exc:
                assert exc.errno == zmq.EADDRINUSE and time.monotonic() < deadline, exc
                time.sleep(0.02)
        assert again.bound_inputs == proxy.bound_inputs and again.bound_outputs == proxy.bound_outputs
        again.stop()
    finally:
        ctx.destroy(linger=0)


frames = st.lists(st.binary(max_size=48), min_size=1, max_size=4)


@pytest.fixture(scope="module")
def sockets() -> object:
    """One thread proxy for every generated example, a raw PUB on its input and a raw SUB (all topics) on
    its output."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    proxy = ProxyThread(ctx, ["tcp://127.0.0.1:*"], ["tcp://127.0.0.1:*"])
    proxy.start()
    pub, sub = ctx.socket(zmq.PUB), ctx.socket(zmq.SUB)
    for sock in (pub, sub):
        sock.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(proxy.bound_outputs[0])
    pub.connect(proxy.bound_inputs[0])
    probe = [b"kernel.probe", codec.packb({})]
    deadline = time.monotonic() + 10
    while not sub.poll(10):  # bounded: the subscription reached the publisher once a probe comes back
        assert time.monotonic() < deadline, "the subscription never reached the publisher"
        pub.send_multipart(probe)
    while sub.poll(50):
        sub.recv_multipart()
    yield proxy, pub, sub
    proxy.stop()
    ctx.destroy(linger=0)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(frames, max_size=20))
def test_whatever_is_published_is_forwarded_as_sent_and_never_stops_it(
        sockets: tuple[ProxyThread, zmq.Socket[bytes], zmq.Socket[bytes]], messages: list[list[bytes]]) -> None:
    proxy, pub, sub = sockets
    end = [b"kernel.end", codec.packb({"n": len(messages)})]
    for message in [*messages, end]:
        pub.send_multipart(message)
    got = []
    while got[-1:] != [end]:  # bounded: each message comes within 5 s, or the test fails
        assert sub.poll(5000), f"nothing more after {len(got)} messages"
        got.append(sub.recv_multipart())
    assert got == [*messages, end]  # malformed or not, each in order and whole
    assert proxy._thread is not None and proxy._thread.is_alive()
