"""A feed and a subscriber on a running kernel's pub/sub proxy, as an external process would connect them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import zmq
import zmq.asyncio

from ml_processing.core.kernel import Kernel


@asynccontextmanager
async def pubsub(kernel: Kernel, *prefixes: bytes,
                 settle: float = 0.3) -> AsyncIterator[tuple[zmq.asyncio.Socket, zmq.asyncio.Socket]]:
    """(PUB to the proxy's input, SUB on its output subscribed to `prefixes`), closed afterwards. `settle`
    seconds let the subscriptions reach the proxy before anything is published (tests that must not lose a
    first message use a probe instead)."""
    ctx = zmq.asyncio.Context()
    pub, sub = ctx.socket(zmq.PUB), ctx.socket(zmq.SUB)
    try:
        pub.connect(kernel.endpoints["pub_in"][0])
        sub.connect(kernel.endpoints["pub_out"][0])
        for prefix in prefixes:
            sub.setsockopt(zmq.SUBSCRIBE, prefix)
        await asyncio.sleep(settle)
        yield pub, sub
    finally:
        pub.close(0)
        sub.close(0)
        ctx.term()
