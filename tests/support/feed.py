"""A feed and a subscriber on a running kernel's pub/sub proxy, as an external process would connect them."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import msgpack
import zmq
import zmq.asyncio

from ml_processing.core.kernel import Kernel

PROBE_TRIES = 250  # one probe every PROBE_INTERVAL_MS: five seconds at most
PROBE_INTERVAL_MS = 20


@asynccontextmanager
async def pubsub(kernel: Kernel, *prefixes: bytes,
                 settle: float | None = None) -> AsyncIterator[tuple[zmq.asyncio.Socket, zmq.asyncio.Socket]]:
    """(PUB to the proxy's input, SUB on its output subscribed to `prefixes`), closed afterwards. Nothing is
    yielded before a probe went PUB -> proxy -> SUB, so no first message is lost to a subscription still on
    its way (`settle` is accepted for old callers and ignored)."""
    ctx = zmq.asyncio.Context()
    pub, sub = ctx.socket(zmq.PUB), ctx.socket(zmq.SUB)
    try:
        pub.connect(kernel.endpoints["pub_in"][0])
        sub.connect(kernel.endpoints["pub_out"][0])
        for prefix in prefixes:
            sub.setsockopt(zmq.SUBSCRIBE, prefix)
        await connected(pub, sub)
        yield pub, sub
    finally:
        pub.close(0)
        sub.close(0)
        ctx.term()


async def connected(pub: zmq.asyncio.Socket, sub: zmq.asyncio.Socket) -> None:
    """Publish probes on a topic of the sub's own (a kernel event no actor consumes) until one arrives.

    The probe subscription is made last, on the same connection as every earlier one, so its arrival proves
    the earlier ones reached the proxy too. It is dropped afterwards: the SUB socket filters what is left
    in flight, so callers never see a probe. Raises AssertionError when none arrives in time."""
    topic = f"kernel.feedprobe-{secrets.token_hex(4)}".encode()
    sub.setsockopt(zmq.SUBSCRIBE, topic)
    try:
        for sent in range(PROBE_TRIES):
            await pub.send_multipart([topic, msgpack.packb({"probe": sent})])
            while await sub.poll(PROBE_INTERVAL_MS):
                if (await sub.recv_multipart())[0] == topic:
                    return
        raise AssertionError(f"no probe came back through the pub/sub proxy after {PROBE_TRIES} tries")
    finally:
        sub.setsockopt(zmq.UNSUBSCRIBE, topic)
