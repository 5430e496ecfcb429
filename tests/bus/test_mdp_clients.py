"""The MDP clients against peers written with plain pyzmq: malformed replies, timeouts, pipelined requests.

A "broker" here is a bare ROUTER socket driven by the test, so each case controls exactly what the client
receives (a reply cut short, one for another service, none at all).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest
import zmq
import zmq.asyncio

from ml_processing.bus import codec, mdp
from ml_processing.bus.errors import CodecError, Timeout

from .conftest import StartBroker
from .helpers import echo, recv, rfc_request


class FakeBroker:
    """A ROUTER on its own thread that answers each request with the next scripted messages (frames after the
    client's routing id); an empty entry sends nothing."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], script: list[list[list[bytes]]]) -> None:
        self.sock = ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.endpoint = f"tcp://127.0.0.1:{self.port}"
        self.script = list(script)
        self.requests: list[list[bytes]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="fake-broker", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        while not self._stop.is_set():
            if not poller.poll(20):
                continue
            frames = self.sock.recv_multipart()
            self.requests.append(frames[1:])
            for message in self.script.pop(0) if self.script else []:
                self.sock.send_multipart([frames[0], *message])

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5.0)
        self.sock.close(linger=0)


@pytest.fixture
def sync_ctx() -> Iterator[zmq.Context[zmq.Socket[bytes]]]:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        yield ctx
    finally:
        ctx.destroy(linger=0)


def ok(result: object) -> bytes:
    return codec.encode_reply(result)


def test_blocking_client_drops_its_socket_after_a_malformed_reply(sync_ctx: zmq.Context[zmq.Socket[bytes]]) -> None:
    fake = FakeBroker(sync_ctx, [
        [[b"MDPC02", b"\x03"], [b"MDPC02", b"\x03", b"svc", ok("stale")]],  # cut short, then a stray reply
        [[b"MDPC02", b"\x03", b"svc", ok("right")]],
    ])
    try:
        with mdp.Client(fake.endpoint, timeout=3.0, context=sync_ctx) as client:
            with pytest.raises(CodecError, match="malformed MDP reply"):
                client.request("svc", "first")
            assert client.request("svc", "second") == "right"  # never the stray reply left on the old socket
        assert [codec.decode_request(r[3]).op for r in fake.requests] == ["first", "second"]
    finally:
        fake.close()


def test_blocking_client_refuses_replies_with_extra_or_missing_body_frames(
        sync_ctx: zmq.Context[zmq.Socket[bytes]]) -> None:
    fake = FakeBroker(sync_ctx, [
        [[b"MDPC02", b"\x03", b"svc", ok(1), ok(2)]],
        [[b"MDPC02", b"\x03", b"svc"]],
        [[b"MDPC02", b"\x03", b"other", ok(3)]],
        [[b"MDPC02", b"\x02", b"svc", ok(4)]],  # PARTIAL: this client takes FINAL replies only
        [[b"MDPC02", b"\x03", b"svc", ok(5)]],
    ])
    try:
        with mdp.Client(fake.endpoint, timeout=3.0, context=sync_ctx) as client:
            with pytest.raises(CodecError, match="2 body frames, expected one"):
                client.request("svc", "a")
            with pytest.raises(CodecError, match="0 body frames, expected one"):
                client.request("svc", "b")
            with pytest.raises(CodecError, match="for service b'other', expected b'svc'"):
                client.request("svc", "c")
            with pytest.raises(CodecError, match="malformed MDP reply"):
                client.request("svc", "d")
            assert client.request("svc", "e") == 5
    finally:
        fake.close()


def test_blocking_client_times_out_then_serves_the_next_request(sync_ctx: zmq.Context[zmq.Socket[bytes]]) -> None:
    fake = FakeBroker(sync_ctx, [[], [[b"MDPC02", b"\x03", b"svc", ok("fine")]]])
    try:
        with mdp.Client(fake.endpoint, timeout=3.0, context=sync_ctx) as client:
            started = time.monotonic()
            with pytest.raises(Timeout):
                client.request("svc", "silent", timeout=0.2)
            assert 0.15 < time.monotonic() - started < 2.0
            assert client.request("svc", "next") == "fine"
    finally:
        fake.close()


async def test_async_client_times_out_each_request_at_its_own_deadline() -> None:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    fake = FakeBroker(ctx, [[], [], [[b"MDPC02", b"\x03", b"svc", ok("after")]]])
    client = mdp.AsyncClient(fake.endpoint, timeout=3.0, context=ctx)
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()

        async def timed(timeout: float) -> float:
            with pytest.raises(Timeout, match=f"within {timeout}s"):
                await client.request("svc", "silent", timeout=timeout)
            return loop.time() - started

        long, short = await asyncio.gather(timed(0.8), timed(0.2))
        assert 0.15 < short < 0.6 < long < 2.5  # the later deadline did not hold back the earlier one
        assert await client.request("svc", "next") == "after"
    finally:
        client.close()
        fake.close()
        ctx.destroy(linger=0)


async def test_async_client_drops_a_socket_that_got_a_malformed_reply() -> None:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    fake = FakeBroker(ctx, [
        [[b"MDPC02"], [b"MDPC02", b"\x03", b"svc", ok("stale")]],  # cut short, then a stray reply
        [[b"MDPC02", b"\x03", b"svc", ok("good")]],
    ])
    client = mdp.AsyncClient(fake.endpoint, timeout=3.0, context=ctx)
    try:
        with pytest.raises(CodecError, match="malformed MDP reply"):
            await client.request("svc", "first")
        assert await client.request("svc", "second") == "good"  # never the stray reply left on the old socket
    finally:
        client.close()
        fake.close()
        ctx.destroy(linger=0)


async def test_requests_pipelined_on_one_socket_are_all_answered_in_order(zctx: zmq.asyncio.Context,
                                                                           start_broker: StartBroker) -> None:
    """Many requests read in one drain: the broker holds the later replies and sends them together, in order."""
    broker = await start_broker()
    broker.attach("echo", echo)
    sock = zctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(broker.bound[0])
    try:
        for i in range(200):
            await sock.send_multipart(rfc_request(b"echo", codec.encode_request("n", {"i": i})))
        got = [codec.decode_reply((await recv(sock))[3])["args"]["i"] for _ in range(200)]
        assert got == list(range(200))
        assert broker.stats.requests == 200
    finally:
        sock.close(linger=0)
