"""The MDP/0.2 broker on real sockets: local services, remote workers, MMI, expiry, timeouts, bad input, drain."""

from __future__ import annotations

import asyncio
import socket
import threading
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
import zmq.asyncio

from ml_processing.bus import codec, mdp
from ml_processing.bus.errors import BadRequest, CodecError, InternalError, NotFound, Timeout, Unavailable

from .conftest import StartBroker
from .helpers import (
    HEARTBEAT,
    LIVENESS,
    Gate,
    RawWorker,
    dealer,
    echo,
    nothing_within,
    recv,
    rfc_request,
    running_workers,
    wait_until,
)


async def slow_echo(request: codec.Request) -> Any:
    await asyncio.sleep(float(request.args.get("sleep", 0.0)))
    if request.op == "missing":
        raise NotFound(f"no such thing {request.args.get('name')!r}", field="name")
    return {"op": request.op, "args": request.args}


def port_is_free(endpoint: str) -> bool:
    host, port = endpoint.removeprefix("tcp://").rsplit(":", 1)
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, int(port)))
        except OSError:
            return False
    return True


def make_worker(ctx: zmq.asyncio.Context, broker: mdp.Broker, service: str, handler: Any = slow_echo) -> mdp.Worker:
    return mdp.Worker(ctx, broker.bound[0], service, handler, heartbeat_interval=HEARTBEAT, liveness=LIVENESS)


# -- local services ----------------------------------------------------------------------------------------


async def test_local_sync_and_async_services_via_async_client(zctx: zmq.asyncio.Context,
                                                              start_broker: StartBroker) -> None:
    broker = await start_broker()
    broker.attach("echo", echo)
    broker.attach("slow", slow_echo)
    client = mdp.AsyncClient(broker.bound[0], timeout=3.0, context=zctx)
    try:
        sync_result = await client.request("echo", "ping", {"n": 1}, rid="r-1")
        async_result = await client.request("slow", "compute", {"sleep": 0.01, "n": 2})
        both = await asyncio.gather(*(client.request("slow", "n", {"n": i, "sleep": 0.02}) for i in range(8)))
    finally:
        client.close()

    assert sync_result == {"op": "ping", "args": {"n": 1}}
    assert async_result == {"op": "compute", "args": {"sleep": 0.01, "n": 2}}
    assert [r["args"]["n"] for r in both] == list(range(8))
    assert broker.stats.local_requests == 10
    assert broker.bound[0].startswith("tcp://127.0.0.1:") and not broker.bound[0].endswith(":*")


async def test_local_service_errors_become_typed_error_replies(zctx: zmq.asyncio.Context,
                                                               start_broker: StartBroker) -> None:
    broker = await start_broker()
    broker.attach("echo", echo)
    broker.attach("slow", slow_echo)
    client = mdp.AsyncClient(broker.bound[0], timeout=3.0, context=zctx)
    try:
        with pytest.raises(NotFound) as not_found:
            await client.request("slow", "missing", {"name": "rsi"})
        with pytest.raises(InternalError) as internal:
            await client.request("echo", "fail")
        still_serving = await client.request("echo", "ping")
    finally:
        client.close()

    assert not_found.value.field == "name"
    assert "RuntimeError" in internal.value.message
    assert still_serving == {"op": "ping", "args": {}}


async def test_local_service_over_ipc(zctx: zmq.asyncio.Context, start_broker: StartBroker, tmp_path: Path) -> None:
    endpoint = f"ipc://{tmp_path}/x.ipc"
    broker = await start_broker(endpoint)
    broker.attach("echo", echo)
    client = mdp.AsyncClient(endpoint, timeout=3.0, context=zctx)
    try:
        result = await client.request("echo", "ping", {"via": "ipc"})
    finally:
        client.close()

    assert broker.bound == [endpoint]
    assert result == {"op": "ping", "args": {"via": "ipc"}}


async def test_raw_rfc18_dealer_calls_local_services(zctx: zmq.asyncio.Context, start_broker: StartBroker) -> None:
    broker = await start_broker()
    broker.attach("echo", echo)
    broker.attach("slow", slow_echo)
    sock = dealer(zctx, broker.bound[0])
    try:
        await sock.send_multipart(rfc_request(b"echo", codec.encode_request("ping", {"a": 1})))
        sync_reply = await recv(sock)
        await sock.send_multipart(rfc_request(b"slow", codec.encode_request("compute", {"sleep": 0.01})))
        async_reply = await recv(sock)
    finally:
        sock.close(linger=0)

    assert sync_reply[:3] == [b"MDPC02", b"\x03", b"echo"] and len(sync_reply) == 4
    assert codec.decode_reply(sync_reply[3]) == {"op": "ping", "args": {"a": 1}}
    assert async_reply[:3] == [b"MDPC02", b"\x03", b"slow"] and len(async_reply) == 4
    assert codec.decode_reply(async_reply[3]) == {"op": "compute", "args": {"sleep": 0.01}}


async def test_local_service_wins_over_remote_workers_of_the_same_name(zctx: zmq.asyncio.Context,
                                                                       start_broker: StartBroker) -> None:
    broker = await start_broker()
    broker.attach("echo", lambda request: "local")
    worker = make_worker(zctx, broker, "echo")
    client = mdp.AsyncClient(broker.bound[0], timeout=3.0, context=zctx)
    try:
        async with running_workers([worker], broker, "echo"):
            results = [await client.request("echo", "ping") for _ in range(5)]
    finally:
        client.close()

    assert results == ["local"] * 5
    assert worker.requests == 0


async def test_local_async_service_past_request_timeout_answers_timeout(zctx: zmq.asyncio.Context,
                                                                        start_broker: StartBroker) -> None:
    broker = await start_broker(request_timeout=0.2)
    gate = Gate()
    broker.attach("gate", gate)
    broker.attach("echo", echo)
    client = mdp.AsyncClient(broker.bound[0], timeout=3.0, context=zctx)
    try:
        frames = await client.request_raw("gate", [codec.encode_request("hold")])  # the broker answers, not us
        after = await client.request("echo", "ping")
    finally:
        gate.open()
        client.close()

    with pytest.raises(Timeout):
        codec.decode_reply(frames[0])
    assert broker.stats.timeouts == 1
    assert gate.entered == 1
    assert after == {"op": "ping", "args": {}}


# -- remote workers -----------------------------------------------------------------------------------------


async def test_remote_workers_serve_sync_and_async_handlers(zctx: zmq.asyncio.Context,
                                                            start_broker: StartBroker) -> None:
    broker = await start_broker()
    sync_worker = make_worker(zctx, broker, "remote-sync", echo)
    async_worker = make_worker(zctx, broker, "remote-async", slow_echo)
    client = mdp.AsyncClient(broker.bound[0], timeout=3.0, context=zctx)
    try:
        async with running_workers([sync_worker], broker, "remote-sync"), \
                running_workers([async_worker], broker, "remote-async"):
            sync_result = await client.request("remote-sync", "ping", {"x": [1, 2]})
            array = await client.request("remote-async", "compute", {"sleep": 0.01, "close": np.arange(3.0)})
            with pytest.raises(NotFound) as caught:
                await client.request("remote-async", "missing", {"name": "macd"})
            with pytest.raises(InternalError):
                await client.request("remote-sync", "fail")
    finally:
        client.close()

    assert sync_result == {"op": "ping", "args": {"x": [1, 2]}}
    assert array["args"]["close"].tolist() == [0.0, 1.0, 2.0]
    assert caught.value.field == "name"
    assert (sync_worker.requests, async_worker.requests) == (2, 2)
    assert broker.services()["remote-sync"]["requests"] == 2


async def test_requests_spread_over_all_workers_of_a_service(zctx: zmq.asyncio.Context,
                                                             start_broker: StartBroker) -> None:
    broker = await start_broker()
    workers = [make_worker(zctx, broker, "spread") for _ in range(3)]
    client = mdp.AsyncClient(broker.bound[0], timeout=5.0, context=zctx)
    try:
        async with running_workers(workers, broker, "spread"):
            concurrent = await asyncio.gather(*(client.request("spread", "n", {"n": i, "sleep": 0.01})
                                                for i in range(15)))
            after_concurrent = [w.requests for w in workers]
            sequential = [await client.request("spread", "n", {"n": i}) for i in range(15, 30)]
    finally:
        client.close()

    assert [r["args"]["n"] for r in concurrent + sequential] == list(range(30))
    assert sum(w.requests for w in workers) == 30
    assert all(count > 0 for count in after_concurrent), after_concurrent
    # one request at a time, least recently used first: the 15 sequential requests go round the 3 workers
    assert [w.requests - before for w, before in zip(workers, after_concurrent, strict=True)] == [5, 5, 5]


async def test_stopped_worker_leaves_at_once(zctx: zmq.asyncio.Context, start_broker: StartBroker) -> None:
    broker = await start_broker()
    client = mdp.AsyncClient(broker.bound[0], timeout=3.0, context=zctx)
    try:
        async with running_workers([make_worker(zctx, broker, "brief")], broker, "brief"):
            assert await client.mmi_service("brief")
            assert (await client.request("brief", "ping"))["op"] == "ping"
        await wait_until(lambda: broker.services()["brief"]["workers"] == 0, what="worker gone")
        with pytest.raises(Unavailable):
            await client.request("brief", "ping")
        known = await client.mmi_service("brief")
    finally:
        client.close()

    assert known is False
    assert broker.stats.workers_expired == 0  # it said DISCONNECT; nothing had to expire


async def test_worker_rejoins_a_restarted_broker(zctx: zmq.asyncio.Context, start_broker: StartBroker) -> None:
    first = mdp.Broker(zctx, ["tcp://127.0.0.1:*"], heartbeat_interval=HEARTBEAT, liveness=LIVENESS)
    await first.start()
    endpoint = first.bound[0]
    worker = make_worker(zctx, first, "phoenix")
    client = mdp.AsyncClient(endpoint, timeout=3.0, context=zctx)
    first_open = True
    try:
        async with running_workers([worker], first, "phoenix"):
            assert (await client.request("phoenix", "before"))["op"] == "before"
            first_open = False
            await first.close()
            # ZeroMQ closes the listener in its I/O thread: wait until the port is free, then take it again
            await wait_until(lambda: port_is_free(endpoint), what="port released")
            second = await start_broker(endpoint)
            await wait_until(lambda: second.has_service("phoenix"), timeout=10.0, what="worker rejoined")
            result = await client.request("phoenix", "after")
    finally:
        client.close()
        if first_open:
            await first.close()

    assert result == {"op": "after", "args": {}}
    assert worker.reconnects >= 1
    assert worker.requests == 2


# -- unknown services and MMI ---------------------------------------------------------------------------------


async def test_unknown_service_is_unavailable_at_once(zctx: zmq.asyncio.Context, start_broker: StartBroker) -> None:
    broker = await start_broker()
    client = mdp.AsyncClient(broker.bound[0], timeout=3.0, context=zctx)
    try:
        with pytest.raises(Unavailable) as caught:  # a hang would surface as the client's own Timeout
            await client.request("nosuch", "ping")
        with pytest.raises(Unavailable):
            await broker.request("nosuch", "ping")
    finally:
        client.close()

    assert "nosuch" in caught.value.message


async def test_mmi_service_and_other_mmi(zctx: zmq.asyncio.Context, start_broker: StartBroker) -> None:
    broker = await start_broker()
    broker.attach("echo", echo)
    client = mdp.AsyncClient(broker.bound[0], timeout=3.0, context=zctx)
    sock = dealer(zctx, broker.bound[0])
    try:
        local = await client.mmi_service("echo")
        missing = await client.mmi_service("nosuch")
        async with running_workers([make_worker(zctx, broker, "remote")], broker, "remote"):
            remote = await client.mmi_service("remote")
            await sock.send_multipart(rfc_request(b"mmi.service", b"remote"))
            raw_200 = await recv(sock)
        await sock.send_multipart(rfc_request(b"mmi.service", b"nosuch"))
        raw_404 = await recv(sock)
        await sock.send_multipart(rfc_request(b"mmi.other", b"echo"))
        raw_501 = await recv(sock)
        await sock.send_multipart([b"MDPC02", b"\x01", b"mmi.service"])  # no body: nothing to look up
        raw_empty = await recv(sock)
    finally:
        sock.close(linger=0)
        client.close()

    assert (local, missing, remote) == (True, False, True)
    assert raw_200 == [b"MDPC02", b"\x03", b"mmi.service", b"200"]
    assert raw_404 == [b"MDPC02", b"\x03", b"mmi.service", b"404"]
    assert raw_501 == [b"MDPC02", b"\x03", b"mmi.other", b"501"]
    assert raw_empty == [b"MDPC02", b"\x03", b"mmi.service", b"404"]


# -- worker expiry and request timeouts ----------------------------------------------------------------------


async def test_silent_worker_expires_and_its_requests_fail_unavailable(zctx: zmq.asyncio.Context,
                                                                      start_broker: StartBroker) -> None:
    broker = await start_broker(request_timeout=10.0)
    silent = RawWorker(zctx, broker.bound[0], b"mute")
    client = mdp.AsyncClient(broker.bound[0], timeout=5.0, context=zctx)
    try:
        await silent.ready()
        await wait_until(lambda: broker.has_service("mute"), what="raw worker registered")
        held = asyncio.create_task(client.request("mute", "first"))
        request = await silent.next_request()  # the broker handed it over; the worker never answers
        queued = asyncio.create_task(client.request("mute", "second"))
        results = await asyncio.wait_for(asyncio.gather(held, queued, return_exceptions=True), 5.0)
        with pytest.raises(Unavailable):
            await client.request("mute", "third")
    finally:
        silent.close()
        client.close()

    assert request[:2] == [b"MDPW02", b"\x02"]
    assert codec.decode_request(request[4]).op == "first"
    assert [type(r) for r in results] == [Unavailable, Unavailable]
    assert broker.stats.workers_expired == 1
    assert broker.services()["mute"]["workers"] == 0
    assert broker.has_service("mute") is False
    assert broker.inflight == 0


async def test_expired_worker_that_speaks_again_is_told_to_disconnect(zctx: zmq.asyncio.Context,
                                                                      start_broker: StartBroker) -> None:
    broker = await start_broker()
    raw = RawWorker(zctx, broker.bound[0], b"sleepy")
    try:
        await raw.ready()
        await wait_until(lambda: broker.stats.workers_expired == 1, what="worker expired")
        await raw.heartbeat()
        frames: list[bytes] = []
        for _ in range(100):  # skip the heartbeats queued before the expiry
            frames = await recv(raw.sock)
            if frames[-1] == b"\x06":
                break
    finally:
        raw.close()

    assert frames[-2:] == [b"MDPW02", b"\x06"]


async def test_request_past_timeout_fails_and_late_reply_is_dropped(zctx: zmq.asyncio.Context,
                                                                    start_broker: StartBroker) -> None:
    broker = await start_broker(request_timeout=0.3)
    finished: list[int] = []

    async def handler(request: codec.Request) -> Any:
        await asyncio.sleep(float(request.args.get("sleep", 0.0)))
        finished.append(request.args["n"])
        return {"n": request.args["n"]}

    worker = make_worker(zctx, broker, "lagging", handler)
    client = mdp.AsyncClient(broker.bound[0], timeout=5.0, context=zctx)
    try:
        async with running_workers([worker], broker, "lagging"):
            with pytest.raises(Timeout) as caught:
                await client.request("lagging", "slow", {"n": 1, "sleep": 0.6})
            # let the late reply reach the broker, which must drop it and give the worker its next request
            await wait_until(lambda: finished == [1] and broker.services()["lagging"]["idle"] == 1,
                             what="late reply back at the broker")
            second = await client.request("lagging", "fast", {"n": 2})  # same pooled socket as the first
            third = await client.request("lagging", "fast", {"n": 3})
    finally:
        client.close()

    assert "did not answer" in caught.value.message  # the broker's timeout, not the client's
    assert (second, third) == ({"n": 2}, {"n": 3})
    assert broker.stats.timeouts == 1
    assert broker.stats.workers_expired == 0  # heartbeats kept flowing while the handler was busy
    assert broker.inflight == 0


async def test_request_queued_behind_a_busy_worker_times_out(zctx: zmq.asyncio.Context,
                                                            start_broker: StartBroker) -> None:
    broker = await start_broker(request_timeout=0.3, liveness=50)
    raw = RawWorker(zctx, broker.bound[0], b"busy")
    client = mdp.AsyncClient(broker.bound[0], timeout=5.0, context=zctx)
    try:
        await raw.ready()
        await wait_until(lambda: broker.has_service("busy"), what="raw worker registered")
        results = await asyncio.gather(client.request("busy", "a"), client.request("busy", "b"),
                                       return_exceptions=True)
    finally:
        raw.close()
        client.close()

    assert [type(r) for r in results] == [Timeout, Timeout]
    assert broker.stats.timeouts == 2


async def test_queue_limit_answers_unavailable(zctx: zmq.asyncio.Context, start_broker: StartBroker) -> None:
    broker = await start_broker(max_queue=1, liveness=50)
    raw = RawWorker(zctx, broker.bound[0], b"narrow")
    socks = [dealer(zctx, broker.bound[0]) for _ in range(3)]
    try:
        await raw.ready()
        await wait_until(lambda: broker.has_service("narrow"), what="raw worker registered")
        await socks[0].send_multipart(rfc_request(b"narrow", codec.encode_request("held")))
        held = await raw.next_request()
        await socks[1].send_multipart(rfc_request(b"narrow", codec.encode_request("queued")))
        await wait_until(lambda: broker.services()["narrow"]["queued"] == 1, what="one request queued")
        await socks[2].send_multipart(rfc_request(b"narrow", codec.encode_request("rejected")))
        rejected = await recv(socks[2])
        await raw.reply(held[2], codec.encode_reply("held done"))
        first = await recv(socks[0])
        queued = await raw.next_request()
        await raw.reply(queued[2], codec.encode_reply("queued done"))
        second = await recv(socks[1])
    finally:
        raw.close()
        for sock in socks:
            sock.close(linger=0)

    with pytest.raises(Unavailable):
        codec.decode_reply(rejected[3])
    assert codec.decode_reply(first[3]) == "held done"
    assert codec.decode_reply(second[3]) == "queued done"


# -- in-process requests ---------------------------------------------------------------------------------------


async def test_broker_request_in_process_to_local_and_remote(zctx: zmq.asyncio.Context,
                                                            start_broker: StartBroker) -> None:
    broker = await start_broker()
    broker.attach("echo", echo)
    broker.attach("slow", slow_echo)
    worker = make_worker(zctx, broker, "remote")
    async with running_workers([worker], broker, "remote"):
        local_sync = await broker.request("echo", "ping", {"a": 1})
        local_async = await broker.request("slow", "compute", {"sleep": 0.01})
        remote = await broker.request("remote", "compute", {"close": np.arange(3.0)}, rid="in-proc")
        many = await asyncio.gather(*(broker.request("remote", "n", {"n": i}) for i in range(5)))
        with pytest.raises(NotFound):
            await broker.request("remote", "missing", {"name": "x"})
        with pytest.raises(NotFound):
            await broker.request("slow", "missing", {"name": "x"})

    assert local_sync == {"op": "ping", "args": {"a": 1}}
    assert local_async == {"op": "compute", "args": {"sleep": 0.01}}
    assert remote["args"]["close"].tolist() == [0.0, 1.0, 2.0]
    assert [m["args"]["n"] for m in many] == list(range(5))
    assert worker.requests == 7
    assert broker.inflight == 0


async def test_broker_request_in_process_times_out(zctx: zmq.asyncio.Context, start_broker: StartBroker) -> None:
    broker = await start_broker(request_timeout=5.0, liveness=50)
    gate = Gate()
    broker.attach("gate", gate)
    raw = RawWorker(zctx, broker.bound[0], b"mute")
    try:
        await raw.ready()
        await wait_until(lambda: broker.has_service("mute"), what="raw worker registered")
        with pytest.raises(Timeout):
            await broker.request("gate", "hold", timeout=0.1)
        with pytest.raises(Timeout):
            await broker.request("mute", "hold", timeout=0.2)
    finally:
        gate.open()
        raw.close()

    assert broker.stats.timeouts == 2
    assert broker.inflight == 0


async def test_broker_request_in_process_wraps_handler_crash(start_broker: StartBroker) -> None:
    broker = await start_broker()
    broker.attach("echo", echo)

    with pytest.raises(InternalError):
        await broker.request("echo", "fail")


# -- malformed input ---------------------------------------------------------------------------------------------


MALFORMED_FRAMES: dict[str, list[bytes]] = {
    "garbage-header": [b"GARBAGE", b"\x01", b"echo", codec.encode_request("ping")],
    "mdp01-header": [b"MDPC01", b"echo", codec.encode_request("ping")],
    "one-frame": [b"MDPC02"],
    "header-only-delimited": [b"", b"MDPC02"],
    "no-service": [b"MDPC02", b"\x01"],
    "bad-client-command": [b"MDPC02", b"\x07", b"echo", codec.encode_request("ping")],
    "client-final-command": [b"MDPC02", b"\x03", b"echo", codec.encode_request("ping")],
    "empty-command": [b"MDPC02", b"", b"echo", codec.encode_request("ping")],
    "worker-no-command": [b"", b"MDPW02"],
}


@pytest.mark.parametrize("frames", list(MALFORMED_FRAMES.values()), ids=list(MALFORMED_FRAMES))
async def test_malformed_frames_are_counted_and_broker_keeps_serving(zctx: zmq.asyncio.Context,
                                                                     start_broker: StartBroker,
                                                                     frames: list[bytes]) -> None:
    broker = await start_broker()
    broker.attach("echo", echo)
    sock = dealer(zctx, broker.bound[0])
    try:
        await sock.send_multipart(frames)
        await wait_until(lambda: broker.stats.malformed == 1, what="malformed message counted")
        silent = await nothing_within(sock, 0.05)
        await sock.send_multipart(rfc_request(b"echo", codec.encode_request("ping")))
        reply = await recv(sock)
    finally:
        sock.close(linger=0)

    assert silent
    assert codec.decode_reply(reply[3]) == {"op": "ping", "args": {}}
    assert broker.stats.malformed == 1


async def test_worker_sending_a_bad_command_is_counted(zctx: zmq.asyncio.Context, start_broker: StartBroker) -> None:
    broker = await start_broker()
    broker.attach("echo", echo)
    raw = RawWorker(zctx, broker.bound[0], b"odd")
    client = mdp.AsyncClient(broker.bound[0], timeout=3.0, context=zctx)
    try:
        await raw.ready()
        await wait_until(lambda: broker.has_service("odd"), what="raw worker registered")
        await raw.sock.send_multipart([b"MDPW02", b"\x09"])
        await raw.sock.send_multipart([b"MDPW02", b"\x04", b"addr"])  # FINAL without empty frame and body
        await wait_until(lambda: broker.stats.malformed == 2, what="both counted")
        result = await client.request("echo", "ping")
    finally:
        raw.close()
        client.close()

    assert result == {"op": "ping", "args": {}}


BAD_BODIES: dict[str, list[bytes]] = {
    "not-msgpack": [b"\xc1\xc1\xc1"],
    "truncated": [codec.encode_request("ping", {"a": 1})[:-1]],
    "not-a-map": [msgpack.packb([1, 2, 3])],
    "no-op": [msgpack.packb({"args": {}})],
    "args-not-map": [msgpack.packb({"op": "ping", "args": [1]})],
    "bad-ndarray": [msgpack.packb({"op": "ping", "args": {"x": msgpack.ExtType(1, b"\x03<f8\x01")}})],
    "no-body": [],
    "two-bodies": [codec.encode_request("ping"), codec.encode_request("ping")],
}


@pytest.mark.parametrize("body", list(BAD_BODIES.values()), ids=list(BAD_BODIES))
async def test_bad_body_to_local_service_gets_bad_request(zctx: zmq.asyncio.Context, start_broker: StartBroker,
                                                          body: list[bytes]) -> None:
    broker = await start_broker()
    broker.attach("echo", echo)
    sock = dealer(zctx, broker.bound[0])
    try:
        await sock.send_multipart([b"MDPC02", b"\x01", b"echo", *body])
        reply = await recv(sock)
        await sock.send_multipart(rfc_request(b"echo", codec.encode_request("ping")))
        after = await recv(sock)
    finally:
        sock.close(linger=0)

    assert reply[:3] == [b"MDPC02", b"\x03", b"echo"]
    with pytest.raises(BadRequest) as caught:
        codec.decode_reply(reply[3])
    assert caught.value.code == "bad_request"
    assert codec.decode_reply(after[3]) == {"op": "ping", "args": {}}
    assert broker.stats.malformed == 1


async def test_bad_body_to_remote_worker_gets_bad_request(zctx: zmq.asyncio.Context,
                                                          start_broker: StartBroker) -> None:
    broker = await start_broker()
    worker = make_worker(zctx, broker, "remote", echo)
    sock = dealer(zctx, broker.bound[0])
    try:
        async with running_workers([worker], broker, "remote"):
            await sock.send_multipart(rfc_request(b"remote", b"\xc1not msgpack"))
            reply = await recv(sock)
            await sock.send_multipart(rfc_request(b"remote", codec.encode_request("ping")))
            after = await recv(sock)
    finally:
        sock.close(linger=0)

    with pytest.raises(BadRequest):
        codec.decode_reply(reply[3])
    assert codec.decode_reply(after[3]) == {"op": "ping", "args": {}}
    assert worker.malformed == 1


async def test_unencodable_result_is_internal_not_bad_request(zctx: zmq.asyncio.Context,
                                                              start_broker: StartBroker) -> None:
    broker = await start_broker()
    broker.attach("odd", lambda request: {"value": object()})
    worker = make_worker(zctx, broker, "remote-odd", lambda request: {"value": object()})
    client = mdp.AsyncClient(broker.bound[0], timeout=3.0, context=zctx)
    try:
        async with running_workers([worker], broker, "remote-odd"):
            with pytest.raises(InternalError) as local:
                await client.request("odd", "get")
            with pytest.raises(InternalError) as remote:
                await client.request("remote-odd", "get")
    finally:
        client.close()

    assert "cannot be encoded" in local.value.message
    assert "cannot be encoded" in remote.value.message
    assert broker.stats.malformed == 0


async def test_a_reply_that_failed_half_encoded_leaves_nothing_for_the_next(zctx: zmq.asyncio.Context,
                                                                          start_broker: StartBroker) -> None:
    # the codec reuses one msgpack Packer per thread: what it wrote before failing must not lead the next body
    broker = await start_broker()
    broker.attach("odd", lambda request: {"first": "x" * 1000, "value": object()} if request.op == "odd"
                  else {"n": request.args["n"]})
    client = mdp.AsyncClient(broker.bound[0], timeout=3.0, context=zctx)
    try:
        with pytest.raises(InternalError):
            await client.request("odd", "odd")
        after = [await client.request("odd", "ok", {"n": i}) for i in range(3)]
    finally:
        client.close()

    assert after == [{"n": 0}, {"n": 1}, {"n": 2}]


@pytest.mark.parametrize("body", [
    {"op": "predict", "args": {}},  # the form encode_request writes: read straight from the bytes
    {"args": {"op": "not this one"}, "op": "later"},  # op not the first key
    {"op": "o" * 40, "args": {}},  # longer than a fixstr
    {"op": "é-ünïcode", "args": {}},
    {"op": "", "args": {}},
])
def test_the_op_read_for_the_gate_is_the_one_the_request_holds(body: dict[str, Any]) -> None:
    frame = msgpack.packb(body)
    assert codec.peek_op(frame) == body["op"]
    assert codec.peek_op(memoryview(frame)) == body["op"]


@pytest.mark.parametrize("frame", [
    b"\x82\xa2op\xa4pi",  # cut short inside the op
    b"\x81\xa2op\xa2\xff\xfe",  # not UTF-8
    b"\x81\xa2op\x07",  # not a string
    b"\x90",  # not a map
])
def test_an_op_that_cannot_be_read_is_a_codec_error(frame: bytes) -> None:
    with pytest.raises(CodecError):
        codec.peek_op(frame)


# -- shutting down ---------------------------------------------------------------------------------------------


async def test_stop_accepting_answers_unavailable(zctx: zmq.asyncio.Context, start_broker: StartBroker) -> None:
    broker = await start_broker()
    broker.attach("echo", echo)
    client = mdp.AsyncClient(broker.bound[0], timeout=3.0, context=zctx)
    try:
        async with running_workers([make_worker(zctx, broker, "remote")], broker, "remote"):
            before = await client.request("echo", "ping")
            broker.stop_accepting()
            with pytest.raises(Unavailable) as local:
                await client.request("echo", "ping")
            with pytest.raises(Unavailable):
                await client.request("remote", "ping")
            with pytest.raises(Unavailable):
                await broker.request("echo", "ping")
            with pytest.raises(Unavailable):
                await broker.request("remote", "ping")
    finally:
        client.close()

    assert before == {"op": "ping", "args": {}}
    assert "shutting down" in local.value.message


async def test_drain_waits_for_an_in_flight_async_request(zctx: zmq.asyncio.Context,
                                                          start_broker: StartBroker) -> None:
    broker = await start_broker()
    gate = Gate()
    broker.attach("gate", gate)
    client = mdp.AsyncClient(broker.bound[0], timeout=5.0, context=zctx)
    try:
        assert await broker.drain(0.01) is True  # nothing in flight
        pending = asyncio.create_task(client.request("gate", "hold", {"n": 7}))
        await wait_until(lambda: gate.entered == 1, what="request in flight")
        broker.stop_accepting()
        inflight = broker.inflight
        early = await broker.drain(0.05)
        with pytest.raises(Unavailable):
            await client.request("gate", "hold")
        gate.open()
        drained = await broker.drain(5.0)
        result = await asyncio.wait_for(pending, 5.0)
    finally:
        gate.open()
        client.close()

    assert (inflight, early, drained) == (1, False, True)
    assert result == {"released": 7}
    assert broker.inflight == 0


async def test_drain_waits_for_a_request_held_by_a_remote_worker(zctx: zmq.asyncio.Context,
                                                                 start_broker: StartBroker) -> None:
    broker = await start_broker(liveness=50)
    raw = RawWorker(zctx, broker.bound[0], b"remote")
    sock = dealer(zctx, broker.bound[0])
    try:
        await raw.ready()
        await wait_until(lambda: broker.has_service("remote"), what="raw worker registered")
        await sock.send_multipart(rfc_request(b"remote", codec.encode_request("work")))
        request = await raw.next_request()
        early = await broker.drain(0.05)
        await raw.reply(request[2], codec.encode_reply("done"))
        drained = await broker.drain(5.0)
        reply = await recv(sock)
    finally:
        raw.close()
        sock.close(linger=0)

    assert (early, drained) == (False, True)
    assert codec.decode_reply(reply[3]) == "done"


async def test_failed_bind_leaves_no_socket_open() -> None:
    ctx = zmq.asyncio.Context()  # not the fixture's: on failure this context can never terminate
    first = mdp.Broker(ctx, ["tcp://127.0.0.1:*"])
    await first.start()
    second = mdp.Broker(ctx, [first.bound[0]])
    with pytest.raises(zmq.ZMQError) as caught:  # kept, as a caller that logs or re-raises it would keep it
        await second.start()
    await first.close()
    terminated = threading.Event()

    def term() -> None:
        ctx.term()
        terminated.set()

    threading.Thread(target=term, name="zmq-term-bind", daemon=True).start()
    await asyncio.to_thread(terminated.wait, 2.0)

    assert caught.value.errno == zmq.EADDRINUSE
    assert terminated.is_set()


# -- bugs --------------------------------------------------------------------------------------------------------


async def test_queue_full_for_non_utf8_service_name_answers_unavailable(zctx: zmq.asyncio.Context,
                                                                        start_broker: StartBroker) -> None:
    broker = await start_broker(max_queue=1, liveness=50)
    service = b"\xff\xfe"
    raw = RawWorker(zctx, broker.bound[0], service)
    socks = [dealer(zctx, broker.bound[0]) for _ in range(3)]
    try:
        await raw.ready()
        await wait_until(lambda: broker.has_service(service), what="raw worker registered")
        await socks[0].send_multipart(rfc_request(service, codec.encode_request("held")))
        await raw.next_request()
        await socks[1].send_multipart(rfc_request(service, codec.encode_request("queued")))
        await wait_until(lambda: broker.stats.requests == 2, what="second request queued")
        await socks[2].send_multipart(rfc_request(service, codec.encode_request("over the limit")))
        answered = not await nothing_within(socks[2], 0.5)
    finally:
        raw.close()
        for sock in socks:
            sock.close(linger=0)

    assert answered




async def test_services_lists_a_non_utf8_service_name(zctx: zmq.asyncio.Context,
                                                      start_broker: StartBroker) -> None:
    broker = await start_broker(liveness=50)
    raw = RawWorker(zctx, broker.bound[0], b"\xff\xfe")
    try:
        await raw.ready()
        await wait_until(lambda: broker.has_service(b"\xff\xfe"), what="raw worker registered")
        listed = broker.services()
    finally:
        raw.close()

    assert len(listed) == 1


async def test_client_whose_identity_starts_with_0xff_gets_replies(zctx: zmq.asyncio.Context,
                                                                   start_broker: StartBroker) -> None:
    broker = await start_broker()
    sock = dealer(zctx, broker.bound[0], identity=b"\xffdesk-1")
    try:
        await sock.send_multipart(rfc_request(b"nosuch", codec.encode_request("ping")))
        answered = not await nothing_within(sock, 0.5)
    finally:
        sock.close(linger=0)

    assert answered


async def test_unsolicited_final_does_not_lose_requests(zctx: zmq.asyncio.Context,
                                                        start_broker: StartBroker) -> None:
    broker = await start_broker(liveness=50)
    raw = RawWorker(zctx, broker.bound[0], b"svc")
    clients = [dealer(zctx, broker.bound[0]) for _ in range(2)]
    try:
        await raw.ready()
        await wait_until(lambda: broker.has_service("svc"), what="raw worker registered")
        await raw.reply(b"\x00nobody", codec.encode_reply("stray"))  # a reply for no request at all
        for i, sock in enumerate(clients):
            await sock.send_multipart(rfc_request(b"svc", codec.encode_request("n", {"n": i})))
        for _ in range(2):  # a correct broker hands these over one at a time
            request = await raw.next_request()
            await raw.reply(request[2], codec.encode_reply(codec.decode_request(request[4]).args["n"]))
        answers = [not await nothing_within(sock, 0.5) for sock in clients]
    finally:
        raw.close()
        for sock in clients:
            sock.close(linger=0)

    assert answers == [True, True]
