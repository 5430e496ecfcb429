"""The broker's gate on real sockets: every request is admitted before a service sees it, with the op read from
its body, locally and for remote workers, plain and under CURVE (the identity is the client's key)."""

from __future__ import annotations

from typing import Any

import pytest
import zmq
import zmq.asyncio
from zmq.auth.asyncio import AsyncioAuthenticator

from ml_processing.bus import codec, mdp
from ml_processing.bus.errors import BadRequest, Forbidden

from .conftest import StartBroker
from .helpers import HEARTBEAT, LIVENESS, dealer, recv, rfc_request, running_workers


class RecordingGate:
    """Admits everyone but for op ``secret``; remembers what it was asked."""

    def __init__(self) -> None:
        self.asked: list[tuple[Any, str, str]] = []

    def admit(self, identity: Any, service: str, op: str) -> str | None:
        self.asked.append((identity, service, op))
        if op == "secret":
            raise Forbidden(f"{op} is not for {identity!r}")
        return f"principal-of-{identity}"

    def may_serve(self, identity: Any, service: str) -> bool:
        return True


class Recorder:
    """A synchronous local service that keeps every request it is given."""

    def __init__(self) -> None:
        self.seen: list[codec.Request] = []

    def __call__(self, request: codec.Request) -> Any:
        self.seen.append(request)
        return {"op": request.op, "n": len(request.args.get("blob", b""))}


async def test_gate_admits_each_request_once_and_the_service_sees_the_principal(
        zctx: zmq.asyncio.Context, start_broker: StartBroker) -> None:
    gate, service = RecordingGate(), Recorder()
    broker = await start_broker(gate=gate)
    broker.attach("rec", service)
    client = mdp.AsyncClient(broker.bound[0], timeout=3.0, context=zctx)
    try:
        assert await client.request("rec", "open", {"x": 1}, rid="r1") == {"op": "open", "n": 0}
        with pytest.raises(Forbidden):
            await client.request("rec", "secret")
        blob = b"\x01" * (mdp.serving.LARGE_FRAME + 10)  # decoded off the loop: its op is read first
        assert await client.request("rec", "big", {"blob": blob}) == {"op": "big", "n": len(blob)}
    finally:
        client.close()
    assert gate.asked == [(None, "rec", "open"), (None, "rec", "secret"), (None, "rec", "big")]
    assert [(r.op, r.args.get("x"), r.rid, r.principal, r.transport) for r in service.seen[:1]] == [
        ("open", 1, "r1", "principal-of-None", "zmq")]
    assert [r.op for r in service.seen] == ["open", "big"]  # the refused request never reached the service
    assert service.seen[1].principal == "principal-of-None"
    assert broker.stats.refused == 1


async def test_gate_answers_malformed_bodies_bad_request_without_asking(zctx: zmq.asyncio.Context,
                                                                      start_broker: StartBroker) -> None:
    gate, service = RecordingGate(), Recorder()
    broker = await start_broker(gate=gate)
    broker.attach("rec", service)
    sock = dealer(zctx, broker.bound[0])
    try:
        for body in ([b"\xc1"], [codec.packb({"args": {}})], [codec.packb({"op": 7})], [codec.packb([1, 2])],
                     [codec.encode_request("two"), codec.encode_request("frames")]):
            await sock.send_multipart([b"MDPC02", b"\x01", b"rec", *body])
            reply = await recv(sock)
            with pytest.raises(BadRequest):
                codec.decode_reply(reply[3])
    finally:
        sock.close(linger=0)
    assert gate.asked == [] and service.seen == []
    assert broker.stats.malformed == 5


async def test_gate_admits_requests_for_remote_workers_by_their_op(zctx: zmq.asyncio.Context,
                                                                  start_broker: StartBroker) -> None:
    gate = RecordingGate()
    broker = await start_broker(gate=gate)
    worker = mdp.Worker(zctx, broker.bound[0], "far", lambda r: {"op": r.op}, heartbeat_interval=HEARTBEAT,
                        liveness=LIVENESS)
    client = mdp.AsyncClient(broker.bound[0], timeout=3.0, context=zctx)
    try:
        async with running_workers([worker], broker, "far"):
            assert await client.request("far", "open") == {"op": "open"}
            with pytest.raises(Forbidden):
                await client.request("far", "secret")
    finally:
        client.close()
    assert gate.asked == [(None, "far", "open"), (None, "far", "secret")]


async def test_under_curve_the_gate_is_given_the_client_key(zctx: zmq.asyncio.Context,
                                                           start_broker: StartBroker) -> None:
    server_public, server_secret = (k.decode() for k in zmq.curve_keypair())
    client_public, client_secret = (k.decode() for k in zmq.curve_keypair())
    auth = AsyncioAuthenticator(zctx)
    auth.start()
    auth.configure_curve(domain="broker", location=zmq.auth.CURVE_ALLOW_ANY)
    gate, service = RecordingGate(), Recorder()
    try:
        broker = await start_broker(gate=gate, curve=(server_public, server_secret))
        broker.attach("rec", service)
        keys = mdp.CurveKeys(server_public, client_public, client_secret)
        client = mdp.AsyncClient(broker.bound[0], timeout=3.0, context=zctx, keys=keys)
        try:
            for i in range(3):
                assert await client.request("rec", "open", {"i": i}) == {"op": "open", "n": 0}
        finally:
            client.close()
        sock = dealer(zctx, broker.bound[0])  # no key: the handshake fails, nothing reaches the broker
        try:
            await sock.send_multipart(rfc_request(b"rec", codec.encode_request("open")))
            with pytest.raises(AssertionError, match="no message"):
                await recv(sock, timeout=0.3)
        finally:
            sock.close(linger=0)
    finally:
        auth.stop()
    assert gate.asked == [(client_public, "rec", "open")] * 3
    assert {r.principal for r in service.seen} == {f"principal-of-{client_public}"}
