"""Garbage on every inbound topic never crashes a capability: each message is rejected (logged, counted)
and every actor keeps running with no restart; the next good bar is processed normally."""

from __future__ import annotations

from pathlib import Path

import msgpack

from ml_processing.core.kernel import Kernel
from tests.conftest import make_config
from tests.support.feed import pubsub

GARBAGE = [
    (b"bar.AAPL.1m", msgpack.packb({"ts": "yesterday", "close": 1.0})),
    (b"bar.AAPL.1m", msgpack.packb([1, 2, 3])),
    (b"bar.AAPL.1m", msgpack.packb({"ts": 1, "open": "x", "high": 1, "low": 1, "close": 1, "volume": 1})),
    (b"bar.AAPL", msgpack.packb({"ts": 1})),  # no timeframe
    (b"news.AAPL", msgpack.packb({"text": 42})),
    (b"news.AAPL", msgpack.packb("just text")),
    (b"label.AAPL", msgpack.packb({"label": 1})),  # no ts
    (b"feature.AAPL.1m", msgpack.packb({"pipeline": "default@1", "values": "nope", "ts": 1})),
    (b"indicator.AAPL.1m", msgpack.packb(None)),
    (b"bar.AAPL.1m", b"\xc1 not msgpack"),
]


async def test_garbage_on_every_topic_is_rejected_and_nothing_crashes(tmp_path: Path) -> None:
    kernel = Kernel(make_config(tmp_path, modules=()))
    await kernel.start()
    try:
        async with pubsub(kernel, b"indicator.AAPL.1m") as (pub, sub):
            for topic, body in GARBAGE * 3:
                await pub.send_multipart([topic, body])
            good = {"ts": 60_000, "open": 1.0, "high": 1.1, "low": 0.9, "close": 1.05, "volume": 10.0}
            await pub.send_multipart([b"bar.AAPL.1m", msgpack.packb(good)])
            update = None
            while update is None:  # the garbage published on indicator.AAPL.1m itself comes through first
                assert await sub.poll(3000), "the good bar after the garbage was not processed"
                message = msgpack.unpackb((await sub.recv_multipart())[1])
                update = message if isinstance(message, dict) and message.get("ts") == 60_000 else None
        assert "values" in update
        health = await kernel.request("kernel", "health", {})
        for name, actor in health["actors"].items():
            assert actor["state"] == "running" and actor["restarts"] == 0, (name, actor)
        assert health["bus"]["malformed_frames"] >= 3  # the frames that were not msgpack
        assert kernel.proxy is not None and kernel.proxy.stats.handler_errors == 0  # rejected by the actors
    finally:
        await kernel.stop()
