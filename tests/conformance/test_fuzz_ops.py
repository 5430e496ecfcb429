"""Arbitrary msgpack bodies to every op of every built-in service, and arbitrary payloads to every topic the
service subscribes to (hypothesis): every request is answered, never with ``internal``, and no actor is
restarted."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ml_processing.bus import codec, mdp, topics
from ml_processing.core.errors import MlpError, Timeout
from tests.conformance.service import Background, background_service

EXAMPLES = 60  # per op

scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12) | st.binary(max_size=12))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Background]:
    with background_service(tmp_path_factory.mktemp("fuzz")) as running:
        yield running


def _ops(service: Background) -> list[tuple[str, str, list[str]]]:
    out = []
    for name, cell in service.kernel.cells.items():
        for op, spec in cell.actor_cls.declarations().items():
            fields = [f.encode_name for f in msgspec.structs.fields(spec.args)] if spec.args is not None else []
            out.append((name, op, fields))
    return out


def _arguments(fields: list[str]) -> st.SearchStrategy[Any]:
    """Maps that use the op's own field names (to get past unknown-field errors), or anything at all."""
    named = st.fixed_dictionaries({}, optional=dict.fromkeys(fields, values)) if fields else st.just({})
    return named | values


def test_every_op_answers_arbitrary_arguments(service: Background) -> None:
    broker = service.kernel.endpoints["broker"][0]
    internal: dict[str, str] = {}
    with mdp.Client(broker, timeout=20.0) as client:

        def fuzz(name: str, op: str, fields: list[str]) -> None:
            @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                      suppress_health_check=list(HealthCheck))
            @given(args=_arguments(fields))
            def run(args: Any) -> None:
                try:
                    client.request(name, op, args)
                except Timeout:
                    raise AssertionError(f"{name}.{op} did not answer {args!r:.200}") from None
                except MlpError as exc:
                    if exc.code == "internal":
                        internal.setdefault(f"{name}.{op}", f"{exc.message} <- {args!r:.300}")

            run()

        for name, op, fields in _ops(service):
            fuzz(name, op, fields)
    assert not internal, "\n".join(f"{k}: {v}" for k, v in internal.items())
    for actor, (state, restarts) in service.restarts().items():
        assert (state, restarts) == ("running", 0), actor


def test_malformed_frames_are_answered_or_counted(service: Background) -> None:
    broker = service.kernel.endpoints["broker"][0]
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(broker)
    assert service.kernel.broker is not None
    before = service.kernel.broker.stats.malformed
    bodies = (b"", b"\xc1", codec.packb([1, 2]), codec.packb({"op": 5}), codec.packb({"args": {}}))
    answered = 0
    try:
        for body in bodies:
            sock.send_multipart([mdp.CLIENT, mdp.REQUEST, b"indicators", body])
            if sock.poll(2000):
                reply = codec.unpackb(sock.recv_multipart()[-1])
                assert reply["ok"] is False and reply["error"]["code"] == "bad_request"
                answered += 1
        sock.send_multipart([mdp.CLIENT, mdp.REQUEST, b"kernel", codec.encode_request("ping")])
        assert sock.poll(5000)
        assert codec.decode_reply(sock.recv_multipart()[-1]) == "pong"
    finally:
        sock.close(0)
    assert service.kernel.broker.stats.malformed >= before + len(bodies) - answered


def test_every_subscribed_topic_survives_arbitrary_payloads(service: Background) -> None:
    kinds = [topics.BAR, topics.TICK, topics.LABEL, topics.NEWS]
    ctx = zmq.Context.instance()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.connect(service.kernel.endpoints["pub_in"][0])
    sent = 0
    try:

        @settings(max_examples=400, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(kind=st.sampled_from(kinds), symbol=st.sampled_from(["EURUSD", "X", "a.b", ""]),
               timeframe=st.sampled_from(["1m", "1h", "0m", "zz", ""]),
               payload=values | st.binary(max_size=40))
        def send(kind: str, symbol: str, timeframe: str, payload: Any) -> None:
            nonlocal sent
            body = payload if isinstance(payload, bytes) else codec.packb(payload)
            pub.send_multipart([f"{kind}.{symbol}.{timeframe}".encode(), body])
            sent += 1

        _connected(pub, service)
        send()
    finally:
        pub.close(0)
    assert sent >= 100
    assert service.call(_ping(service)) == "pong"  # every message sent before it has been handled
    stats = service.kernel.subscriber.stats if service.kernel.subscriber else None
    assert stats is not None and stats.dropped_malformed >= 1 and stats.dropped_bad_topic >= 1
    health = service.call(service.kernel.request("kernel", "health", {}))
    assert health["bus"]["pubsub_dropped"]["malformed"] == stats.dropped_malformed
    assert health["bus"]["messages_dropped_by_actors"] >= 1  # well-formed garbage refused by the actors
    for actor, (state, restarts) in service.restarts().items():
        assert (state, restarts) == ("running", 0), actor


def _connected(pub: zmq.Socket[bytes], service: Background) -> None:
    """Probe until the publisher's messages come out of the proxy (no fixed settle time)."""
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.connect(service.kernel.endpoints["pub_out"][0])
    probe = topics.build(topics.KERNEL) + ".fuzzprobe"
    sub.setsockopt(zmq.SUBSCRIBE, probe.encode())
    try:
        for _ in range(250):
            pub.send_multipart([probe.encode(), codec.packb({})])
            if sub.poll(20):
                return
        raise AssertionError("the publisher never reached the proxy")
    finally:
        sub.close(0)


async def _ping(service: Background) -> Any:
    return await service.kernel.request("kernel", "ping", {})
