"""Interoperability: the independent `majortomo` package and raw RFC 18 peers against our broker.

majortomo speaks the widespread MDP variant (an empty delimiter frame first, client commands numbered
like worker commands); raw DEALER sockets speak RFC 18 exactly. Both must work, each answered in its own
dialect. majortomo is blocking, so its clients run in worker threads (`asyncio.to_thread`) and its worker
in a daemon thread, while our broker runs on the test's event loop.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import majortomo
import numpy as np
import pytest
import zmq
import zmq.asyncio

from ml_processing.bus import codec, mdp
from ml_processing.bus.errors import Unavailable
from ml_processing.core.kernel import Kernel

from .conftest import StartBroker
from .helpers import (
    HEARTBEAT,
    LIVENESS,
    RawWorker,
    dealer,
    echo,
    nothing_within,
    recv,
    rfc_request,
    wait_until,
)

STOP = "stop"


def sync_context(ctx: zmq.asyncio.Context) -> zmq.Context[Any]:
    """A blocking context over the same ZeroMQ context (its sockets are closed by whoever opens them)."""
    return zmq.Context.shadow(ctx.underlying)


def majortomo_call(ctx: zmq.Context[Any], endpoint: str, service: str, *bodies: bytes,
                   timeout: float = 3.0) -> list[bytes]:
    """One request with majortomo's blocking client; returns every reply frame (partials then final).

    majortomo's client hands back everything after the command frame, so each part starts with the service
    name that RFC 18 puts in every reply (majortomo's own broker leaves it out).
    """
    client = majortomo.Client(endpoint, zmq_context=ctx, zmq_linger=0)
    client.connect()
    try:
        client.send(service.encode(), *bodies)
        return client.recv_all_as_list(timeout=timeout)
    finally:
        client.close()  # type: ignore[no-untyped-call]


class MajortomoWorker:
    """majortomo.Worker serving our msgpack requests in a daemon thread until it is sent op ``stop``."""

    def __init__(self, ctx: zmq.Context[Any], endpoint: str, service: str, *, limit: int = 200) -> None:
        self.endpoint = endpoint
        self.service = service
        self.served: list[str] = []
        self.error: BaseException | None = None
        self._worker = majortomo.Worker(endpoint, service.encode(), heartbeat_interval=HEARTBEAT,
                                        heartbeat_timeout=HEARTBEAT * LIVENESS * 4, zmq_context=ctx,
                                        zmq_linger=500)
        self._limit = limit
        self._thread = threading.Thread(target=self._run, name=f"majortomo-{service}", daemon=True)

    def _run(self) -> None:
        try:
            with self._worker:  # connect (READY) ... close (DISCONNECT)
                for _ in range(self._limit):
                    client, frames = self._worker.wait_for_request()
                    request = codec.decode_request(frames[0])
                    self.served.append(request.op)
                    result = {"op": request.op, "args": request.args, "by": "majortomo"}
                    self._worker.send_reply_final(client, [codec.encode_reply(result)])
                    if request.op == STOP:
                        return
        except BaseException as exc:  # reported by `stop`
            self.error = exc

    def start(self) -> None:
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    async def stop(self, client: mdp.AsyncClient) -> None:
        if self._thread.is_alive():
            await client.request(self.service, STOP, timeout=3.0)
        await asyncio.to_thread(self._thread.join, 5.0)
        assert not self._thread.is_alive(), "majortomo worker thread did not stop"
        if self.error is not None:
            raise self.error


# -- majortomo clients -----------------------------------------------------------------------------------------


async def test_majortomo_client_calls_a_local_service(zctx: zmq.asyncio.Context,
                                                     start_broker: StartBroker) -> None:
    broker = await start_broker()
    broker.attach("echo", echo)

    frames = await asyncio.to_thread(majortomo_call, sync_context(zctx), broker.bound[0], "echo",
                                     codec.encode_request("ping", {"from": "majortomo"}))

    assert frames == [b"echo", codec.encode_reply({"op": "ping", "args": {"from": "majortomo"}})]
    assert broker.stats.local_requests == 1


async def test_majortomo_client_calls_a_remote_service(zctx: zmq.asyncio.Context,
                                                      start_broker: StartBroker) -> None:
    broker = await start_broker()
    worker = mdp.Worker(zctx, broker.bound[0], "remote", echo, heartbeat_interval=HEARTBEAT, liveness=LIVENESS)
    task = asyncio.create_task(worker.run())
    try:
        await wait_until(lambda: broker.has_service("remote"), what="worker registered")
        frames = await asyncio.to_thread(majortomo_call, sync_context(zctx), broker.bound[0], "remote",
                                         codec.encode_request("compute", {"n": 3}))
    finally:
        worker.stop()
        await asyncio.wait_for(task, 5.0)

    assert frames[0] == b"remote" and len(frames) == 2
    assert codec.decode_reply(frames[1]) == {"op": "compute", "args": {"n": 3}}
    assert worker.requests == 1


async def test_majortomo_client_gets_errors_and_mmi(zctx: zmq.asyncio.Context, start_broker: StartBroker) -> None:
    broker = await start_broker()
    broker.attach("echo", echo)
    ctx = sync_context(zctx)
    endpoint = broker.bound[0]

    unknown = await asyncio.to_thread(majortomo_call, ctx, endpoint, "nosuch", codec.encode_request("ping"))
    found = await asyncio.to_thread(majortomo_call, ctx, endpoint, "mmi.service", b"echo")
    missing = await asyncio.to_thread(majortomo_call, ctx, endpoint, "mmi.service", b"nosuch")
    other = await asyncio.to_thread(majortomo_call, ctx, endpoint, "mmi.workers", b"echo")

    assert unknown[0] == b"nosuch"
    with pytest.raises(Unavailable):
        codec.decode_reply(unknown[1])
    assert found == [b"mmi.service", b"200"]
    assert missing == [b"mmi.service", b"404"]
    assert other == [b"mmi.workers", b"501"]


async def test_majortomo_client_receives_partial_replies(zctx: zmq.asyncio.Context,
                                                        start_broker: StartBroker) -> None:
    broker = await start_broker(liveness=50)
    raw = RawWorker(zctx, broker.bound[0], b"stream")
    try:
        await raw.ready()
        await wait_until(lambda: broker.has_service("stream"), what="raw worker registered")
        call = asyncio.create_task(asyncio.to_thread(majortomo_call, sync_context(zctx), broker.bound[0],
                                                     "stream", codec.encode_request("stream")))
        request = await raw.next_request()
        await raw.reply(request[2], b"part-1", command=b"\x03")
        await raw.reply(request[2], b"part-2", command=b"\x03")
        await raw.reply(request[2], b"last", command=b"\x04")
        frames = await asyncio.wait_for(call, 5.0)
    finally:
        raw.close()

    assert frames == [b"stream", b"part-1", b"stream", b"part-2", b"stream", b"last"]


# -- majortomo worker --------------------------------------------------------------------------------------------


async def test_majortomo_worker_serves_our_clients(zctx: zmq.asyncio.Context, start_broker: StartBroker) -> None:
    broker = await start_broker()
    ctx = sync_context(zctx)
    worker = MajortomoWorker(ctx, broker.bound[0], "mt")
    client = mdp.AsyncClient(broker.bound[0], timeout=3.0, context=zctx)
    blocking = mdp.Client(broker.bound[0], timeout=3.0, context=ctx)
    try:
        worker.start()
        await wait_until(lambda: broker.has_service("mt"), what="majortomo worker registered")
        from_async = await client.request("mt", "compute", {"close": np.arange(4.0)}, rid="r-1")
        from_blocking = await asyncio.to_thread(blocking.request, "mt", "ping", {"n": 2})
        many = await asyncio.gather(*(client.request("mt", "n", {"n": i}) for i in range(6)))
        from_broker = await broker.request("mt", "in-process")
        found = await client.mmi_service("mt")
        await worker.stop(client)
        await wait_until(lambda: not broker.has_service("mt"), what="majortomo worker said DISCONNECT")
    finally:
        if worker.alive:  # the test failed half-way: still stop the thread
            await worker.stop(client)
        blocking.close()
        client.close()

    assert from_async["by"] == "majortomo"
    assert from_async["args"]["close"].tolist() == [0.0, 1.0, 2.0, 3.0]
    assert from_blocking == {"op": "ping", "args": {"n": 2}, "by": "majortomo"}
    assert sorted(m["args"]["n"] for m in many) == list(range(6))
    assert from_broker["op"] == "in-process"
    assert found is True
    assert worker.served.count("n") == 6 and worker.served[-1] == STOP


async def test_majortomo_worker_survives_heartbeats(zctx: zmq.asyncio.Context, start_broker: StartBroker) -> None:
    # idle for several heartbeat intervals: our broker's delimited HEARTBEATs must be acceptable to majortomo,
    # and majortomo's must keep it alive at our broker
    broker = await start_broker()
    worker = MajortomoWorker(sync_context(zctx), broker.bound[0], "idle")
    client = mdp.AsyncClient(broker.bound[0], timeout=3.0, context=zctx)
    try:
        worker.start()
        await wait_until(lambda: broker.has_service("idle"), what="majortomo worker registered")
        await asyncio.sleep(HEARTBEAT * LIVENESS * 2)
        result = await client.request("idle", "ping")
    finally:
        await worker.stop(client)
        client.close()

    assert result["by"] == "majortomo"
    assert broker.stats.workers_expired == 0
    assert broker.stats.malformed == 0


# -- raw RFC 18 peers: the exact frames ----------------------------------------------------------------------------


async def test_rfc18_client_frames(zctx: zmq.asyncio.Context, start_broker: StartBroker) -> None:
    broker = await start_broker()
    broker.attach("echo", echo)
    sock = dealer(zctx, broker.bound[0])
    body = codec.encode_request("ping", {"x": 1})
    try:
        await sock.send_multipart([b"MDPC02", b"\x01", b"echo", body])
        ok = await recv(sock)
        await sock.send_multipart([b"MDPC02", b"\x01", b"nosuch", body])
        error = await recv(sock)
    finally:
        sock.close(linger=0)

    assert ok == [b"MDPC02", b"\x03", b"echo", codec.encode_reply({"op": "ping", "args": {"x": 1}})]
    assert error[:3] == [b"MDPC02", b"\x03", b"nosuch"] and len(error) == 4
    assert codec.unpackb(error[3])["error"]["code"] == "unavailable"


async def test_majortomo_dialect_frames(zctx: zmq.asyncio.Context, start_broker: StartBroker) -> None:
    broker = await start_broker()
    broker.attach("echo", echo)
    sock = dealer(zctx, broker.bound[0])
    body = codec.encode_request("ping")
    try:
        await sock.send_multipart([b"", b"MDPC02", b"\x02", b"echo", body])
        reply = await recv(sock)
        await sock.send_multipart([b"", b"MDPC02", b"\x02", b"mmi.service", b"echo"])
        mmi = await recv(sock)
    finally:
        sock.close(linger=0)

    assert reply == [b"", b"MDPC02", b"\x04", b"echo", codec.encode_reply({"op": "ping", "args": {}})]
    assert mmi == [b"", b"MDPC02", b"\x04", b"mmi.service", b"200"]


async def test_req_socket_client_gets_rfc18_reply(zctx: zmq.asyncio.Context, start_broker: StartBroker) -> None:
    # a REQ socket adds the empty delimiter itself; the commands stay RFC 18's
    broker = await start_broker()
    broker.attach("echo", echo)
    sock = zctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(broker.bound[0])
    try:
        await sock.send_multipart([b"MDPC02", b"\x01", b"echo", codec.encode_request("ping")])
        reply = await recv(sock)
    finally:
        sock.close(linger=0)

    assert reply == [b"MDPC02", b"\x03", b"echo", codec.encode_reply({"op": "ping", "args": {}})]


async def test_rfc18_worker_frames(zctx: zmq.asyncio.Context, start_broker: StartBroker) -> None:
    broker = await start_broker(liveness=50)
    raw = RawWorker(zctx, broker.bound[0], b"rfc")
    client = dealer(zctx, broker.bound[0])
    body = codec.encode_request("compute", {"n": 1})
    try:
        await raw.ready()
        await wait_until(lambda: broker.has_service("rfc"), what="raw worker registered")
        heartbeat = await recv(raw.sock)  # nothing else is sent to an idle worker
        await client.send_multipart(rfc_request(b"rfc", body))
        request = await raw.next_request()
        await raw.reply(request[2], b"partial", command=b"\x03")
        await raw.reply(request[2], codec.encode_reply("final"))
        partial = await recv(client)
        final = await recv(client)
        await raw.sock.send_multipart([b"MDPW02", b"\x06"])
        await wait_until(lambda: not broker.has_service("rfc"), what="worker gone after DISCONNECT")
    finally:
        raw.close()
        client.close(linger=0)

    assert heartbeat == [b"MDPW02", b"\x05"]
    assert len(request) == 5
    assert request[:2] == [b"MDPW02", b"\x02"] and request[3:] == [b"", body]
    assert partial == [b"MDPC02", b"\x02", b"rfc", b"partial"]
    assert final == [b"MDPC02", b"\x03", b"rfc", codec.encode_reply("final")]


async def test_rfc18_worker_saying_ready_twice_is_disconnected(zctx: zmq.asyncio.Context,
                                                              start_broker: StartBroker) -> None:
    broker = await start_broker(liveness=50)
    raw = RawWorker(zctx, broker.bound[0], b"twice")
    try:
        await raw.ready()
        await wait_until(lambda: broker.has_service("twice"), what="raw worker registered")
        await raw.ready()
        await wait_until(lambda: not broker.has_service("twice"), what="worker dropped")
        frames: list[bytes] = []
        for _ in range(100):
            frames = await recv(raw.sock)
            if frames != [b"MDPW02", b"\x05"]:
                break
    finally:
        raw.close()

    assert frames == [b"MDPW02", b"\x06"]


async def test_delimited_worker_gets_delimited_frames(zctx: zmq.asyncio.Context,
                                                      start_broker: StartBroker) -> None:
    broker = await start_broker(liveness=50)
    sock = dealer(zctx, broker.bound[0])
    client = dealer(zctx, broker.bound[0])
    body = codec.encode_request("ping")
    try:
        await sock.send_multipart([b"", b"MDPW02", b"\x01", b"old"])
        await wait_until(lambda: broker.has_service("old"), what="delimited worker registered")
        await client.send_multipart(rfc_request(b"old", body))
        frames: list[bytes] = []
        for _ in range(100):
            frames = await recv(sock)
            if frames[:3] != [b"", b"MDPW02", b"\x05"]:
                break
        await sock.send_multipart([b"", b"MDPW02", b"\x04", frames[3], b"", codec.encode_reply("pong")])
        reply = await recv(client)
    finally:
        sock.close(linger=0)
        client.close(linger=0)

    assert frames[:3] == [b"", b"MDPW02", b"\x02"] and frames[4:] == [b"", body]
    assert reply == [b"MDPC02", b"\x03", b"old", codec.encode_reply("pong")]


async def test_rfc18_worker_not_ready_gets_rfc18_disconnect(zctx: zmq.asyncio.Context,
                                                            start_broker: StartBroker) -> None:
    broker = await start_broker()
    sock = dealer(zctx, broker.bound[0])
    try:
        await sock.send_multipart([b"MDPW02", b"\x05"])  # HEARTBEAT before READY
        frames = await recv(sock)
    finally:
        sock.close(linger=0)

    assert frames == [b"MDPW02", b"\x06"]


async def test_rfc18_client_and_worker_end_to_end(zctx: zmq.asyncio.Context, start_broker: StartBroker) -> None:
    broker = await start_broker(liveness=50)
    raw = RawWorker(zctx, broker.bound[0], b"e2e")
    clients = [dealer(zctx, broker.bound[0]) for _ in range(3)]
    try:
        await raw.ready()
        await wait_until(lambda: broker.has_service("e2e"), what="raw worker registered")
        for i, sock in enumerate(clients):
            await sock.send_multipart(rfc_request(b"e2e", codec.encode_request("n", {"n": i})))
        for _ in clients:
            request = await raw.next_request()
            n = codec.decode_request(request[4]).args["n"]
            await raw.reply(request[2], codec.encode_reply(n * 10))
        replies = [await recv(sock) for sock in clients]
        extra = [await nothing_within(sock, 0.05) for sock in clients]
    finally:
        raw.close()
        for sock in clients:
            sock.close(linger=0)

    assert [codec.decode_reply(r[3]) for r in replies] == [0, 10, 20]
    assert all(r[:3] == [b"MDPC02", b"\x03", b"e2e"] for r in replies)
    assert extra == [True, True, True]


# -- the kernel's broker (shared fixtures) --------------------------------------------------------------------------


async def test_kernel_broker_speaks_rfc18_and_majortomo(kernel: Kernel, client: mdp.AsyncClient,
                                                        broker_endpoint: str, zctx: zmq.asyncio.Context) -> None:
    sock = dealer(zctx, broker_endpoint)
    try:
        await sock.send_multipart(rfc_request(b"flaky", codec.encode_request("ping")))
        raw = await recv(sock)
    finally:
        sock.close(linger=0)
    frames = await asyncio.to_thread(majortomo_call, sync_context(zctx), broker_endpoint, "flaky",
                                     codec.encode_request("ping"))

    assert raw[:3] == [b"MDPC02", b"\x03", b"flaky"]
    assert codec.decode_reply(raw[3]) == "pong"
    assert frames[0] == b"flaky"
    assert codec.decode_reply(frames[1]) == "pong"
    assert await client.mmi_service("flaky") is True
    assert await client.mmi_service("no-such-actor") is False
