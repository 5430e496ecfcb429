"""What the service publishes up to its stop reaches the subscribers that are connected, on both proxies:
the stop sends what waits in the outboxes, and the sockets close after ZeroMQ has sent it."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path

import msgpack
import pytest
import zmq

from ml_processing.core.kernel import Kernel
from tests.conftest import make_config

COUNT = 5_000  # under the sockets' high-water mark: none is dropped by design


@pytest.mark.parametrize("proxy", ["loop", "thread"])
async def test_messages_published_just_before_the_stop_all_arrive(tmp_path: Path, proxy: str) -> None:
    base = make_config(tmp_path)
    kernel = Kernel(dataclasses.replace(base, bus=dataclasses.replace(base.bus, proxy=proxy)))
    await kernel.start()
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sub = context.socket(zmq.SUB)
    try:
        sub.setsockopt(zmq.RCVHWM, 0)
        sub.connect(kernel.endpoints["pub_out"][0])
        sub.setsockopt(zmq.SUBSCRIBE, b"stoptest.")
        publisher = kernel.publisher
        assert publisher is not None
        for _ in range(200):  # past the slow joiner: a probe comes back (bounded)
            publisher.publish("stoptest.probe", {})
            await asyncio.sleep(0.02)
            if sub.poll(0):
                break
        else:
            raise AssertionError("the subscription never took effect")
        while sub.poll(50):
            sub.recv_multipart()
        for i in range(COUNT):  # one loop turn: every message waits in the publisher's outbox or a socket
            publisher.publish("stoptest.n", {"i": i})
    finally:
        await kernel.stop()
    try:
        got = []
        deadline = time.monotonic() + 10
        while len(got) < COUNT and time.monotonic() < deadline and sub.poll(1000):
            _topic, body = sub.recv_multipart()
            got.append(msgpack.unpackb(body)["i"])
        assert got == list(range(COUNT)), f"{len(got)} of {COUNT} arrived"
    finally:
        sub.close(linger=0)
        context.term()
