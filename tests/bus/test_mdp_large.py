"""Large bodies over MDP: sent without a copy and read in place from `ZERO_COPY` bytes up, whole and intact
on every path (a local service, a remote worker, both clients), with the raw calls still giving bytes."""

from __future__ import annotations

import asyncio

import numpy as np
import zmq.asyncio

from ml_processing.bus import codec, mdp
from ml_processing.bus.mdp.frames import ZERO_COPY

from .conftest import StartBroker
from .helpers import HEARTBEAT, LIVENESS, echo, running_workers

ROWS = 50_000  # 400 kB a column: above ZERO_COPY, below the broker's off-loop threshold
BIG = 300_000  # 2.4 MB a column: the request is decoded off the loop as well


def columns(rows: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {name: rng.normal(size=rows) for name in ("open", "high", "low", "close")}


def assert_echoed(result: dict[str, object], sent: dict[str, np.ndarray]) -> None:
    args = result["args"]
    assert isinstance(args, dict) and set(args) == set(sent)
    for name, column in sent.items():
        got = args[name]
        assert isinstance(got, np.ndarray) and got.dtype == column.dtype
        np.testing.assert_array_equal(got, column)


async def test_large_bodies_both_ways_through_every_path(zctx: zmq.asyncio.Context,
                                                         start_broker: StartBroker) -> None:
    assert len(codec.encode_request("x", columns(ROWS, 0))) > 2 * ZERO_COPY
    broker = await start_broker()
    broker.attach("echo", echo)
    worker = mdp.Worker(zctx, broker.bound[0], "remote", echo, heartbeat_interval=HEARTBEAT, liveness=LIVENESS)
    client = mdp.AsyncClient(broker.bound[0], timeout=10.0, context=zctx)
    blocking = mdp.Client(broker.bound[0], timeout=10.0)
    try:
        async with running_workers([worker], broker, "remote"):
            for seed, (service, rows) in enumerate([("echo", ROWS), ("remote", ROWS), ("echo", BIG),
                                                    ("remote", BIG)]):
                sent = columns(rows, seed)
                assert_echoed(await client.request(service, "big", sent), sent)
                # the blocking client on a thread: the broker and the worker run on this loop
                assert_echoed(await asyncio.to_thread(blocking.request, service, "big", sent), sent)
            # several at once on the pool's sockets, each reply to its own request
            many = [columns(ROWS, 10 + i) for i in range(4)]
            replies = await asyncio.gather(*(client.request("echo", "big", sent) for sent in many))
            for result, sent in zip(replies, many, strict=True):
                assert_echoed(result, sent)
            # the raw calls hand back bytes, large or not
            body = codec.encode_request("big", columns(ROWS, 20))
            raw = await asyncio.to_thread(blocking.request_raw, "echo", body)
            frames = await client.request_raw("remote", [body])
            assert type(raw) is bytes and len(raw) > ZERO_COPY
            assert [type(frame) for frame in frames] == [bytes] and len(frames[0]) > ZERO_COPY
            assert codec.decode_reply(raw)["args"]["close"].tobytes() == codec.decode_reply(frames[0])["args"][
                "close"].tobytes()
    finally:
        blocking.close()
        client.close()
