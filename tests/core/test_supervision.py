"""Supervision: an actor whose own work crashes restarts with a fresh instance; one that keeps crashing
fails alone. What a client sends never restarts an actor: a failing request or message answers itself."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import zmq
import zmq.asyncio
from prometheus_client.parser import text_string_to_metric_families

from ml_processing.bus import codec, mdp, topics
from ml_processing.core.errors import InternalError, Unavailable
from ml_processing.core.kernel import Kernel
from tests.conftest import make_config
from tests.core.helpers import running, wait_until
from tests.support import flaky

MODULES = ("ml_processing.plugins._template", "tests.support.flaky")


async def _running_again(kernel: Kernel, restarts: int) -> bool:
    cell = kernel.cells["flaky"]
    return cell.state == "running" and cell.restarts >= restarts


async def test_a_failing_request_answers_itself_and_never_restarts_the_actor(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, modules=MODULES, max_restarts=1)
    async with running(cfg) as kernel:
        client = mdp.AsyncClient(kernel.endpoints["broker"][0], timeout=3.0)
        try:
            cell = kernel.cells["flaky"]
            before = await client.request("flaky", "instance")
            for _ in range(5):  # far past max_restarts: none of them counts as a crash
                with pytest.raises(InternalError) as caught:
                    await client.request("flaky", "crash")
                assert caught.value.code == "internal"
                assert "RuntimeError" in caught.value.message and "error id" in caught.value.message
            assert cell.state == "running" and cell.restarts == 0
            assert await client.request("flaky", "instance") == before
            health = await client.request("kernel", "health")
            assert health["actors"]["flaky"]["internal_errors"] == 5
            assert health["actors"]["flaky"]["restarts"] == 0
            assert health["status"] == "healthy"
        finally:
            client.close()


async def test_work_spawned_for_a_request_fails_alone(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, modules=MODULES, max_restarts=1)
    async with running(cfg) as kernel:
        client = mdp.AsyncClient(kernel.endpoints["broker"][0], timeout=3.0)
        try:
            cell = kernel.cells["flaky"]
            for _ in range(3):
                assert await client.request("flaky", "fail_for_request") == "scheduled"
            await wait_until(lambda: cell.messages_failed == 3, what="three failed tasks counted")
            assert cell.state == "running" and cell.restarts == 0
            assert await client.request("flaky", "ping") == "pong"
        finally:
            client.close()


async def test_a_crash_of_the_actors_own_work_restarts_it_and_others_keep_answering(tmp_path: Path) -> None:
    # A long backoff keeps the actor down long enough to see the others answer while it restarts.
    cfg = make_config(tmp_path, modules=MODULES, backoff_initial_s=1.0, backoff_max_s=1.0)
    async with running(cfg) as kernel:
        client = mdp.AsyncClient(kernel.endpoints["broker"][0], timeout=3.0)
        try:
            cell = kernel.cells["flaky"]
            before = await client.request("flaky", "instance")
            old_instance = cell.instance  # held, so the new instance cannot reuse its id()
            starts = len(flaky.STARTS)

            assert await client.request("flaky", "crash_later") == "scheduled"
            await wait_until(lambda: cell.state == "restarting", what="flaky restarting")
            assert await client.request("echo", "ping") == "pong"
            with pytest.raises(Unavailable) as down:
                await client.request("flaky", "ping")
            assert "restarting" in down.value.message
            assert await client.request("kernel", "ping") == "pong"
            assert cell.state == "restarting"  # everything above happened while flaky was down

            await wait_until(lambda: _running_again(kernel, 1), what="flaky restarted")
            after = await client.request("flaky", "instance")
            assert after != before
            assert old_instance is not cell.instance
            assert len(flaky.STARTS) == starts + 1
            assert cell.restarts == 1
            assert "background task crashed on purpose" in (cell.last_error or "")
            assert await client.request("flaky", "ping") == "pong"
            health = await client.request("kernel", "health")
            assert health["status"] == "healthy"
            assert health["actors"]["flaky"]["restarts"] == 1
            assert health["actors"]["flaky"]["healthy"] is True
        finally:
            client.close()


@pytest.fixture
async def feed(kernel: Kernel) -> AsyncIterator[zmq.asyncio.Socket]:
    """A market-data feed: a PUB socket connected to the kernel's pub_in endpoint."""
    ctx = zmq.asyncio.Context()
    sock = ctx.socket(zmq.PUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(kernel.endpoints["pub_in"][0])
    try:
        yield sock
    finally:
        sock.close(linger=0)
        ctx.term()


async def _publish_until_seen(feed: zmq.asyncio.Socket, client: mdp.AsyncClient, topic: str) -> list[object]:
    """Publish numbered ticks until the flaky actor has seen one (ZeroMQ's slow joiner); bounded."""
    n = 0

    async def seen() -> list[object]:
        nonlocal n
        n += 1
        await feed.send_multipart([topic.encode(), codec.packb({"n": n})])
        await asyncio.sleep(0.02)
        result = await client.request("flaky", "seen")
        assert isinstance(result, list)
        return result

    return await wait_until(seen, timeout=5.0, interval=0.03, what="a tick reaching flaky")


async def test_a_failing_topic_handler_is_counted_never_a_restart(kernel: Kernel, client: mdp.AsyncClient,
                                                                  feed: zmq.asyncio.Socket) -> None:
    topic = topics.tick("X")
    first = await _publish_until_seen(feed, client, topic)
    assert all(isinstance(item, dict) and "n" in item for item in first)
    cell = kernel.cells["flaky"]
    old_instance = cell.instance

    for _ in range(5):
        await feed.send_multipart([topic.encode(), codec.packb({"crash": True})])
    await feed.send_multipart([topic.encode(), codec.packb({"after": True})])
    await wait_until(lambda: _seen_contains(client, {"after": True}), what="the message after the failing ones")

    assert cell.instance is old_instance and cell.restarts == 0 and cell.state == "running"
    assert cell.messages_failed == 5
    health = await client.request("kernel", "health")
    assert health["actors"]["flaky"]["messages_failed"] == 5


async def test_topic_message_with_a_bad_body_is_not_a_crash(kernel: Kernel, client: mdp.AsyncClient,
                                                            feed: zmq.asyncio.Socket) -> None:
    topic = topics.tick("Y")
    await _publish_until_seen(feed, client, topic)
    await feed.send_multipart([topic.encode(), b"\xc1 not msgpack"])
    await feed.send_multipart([topic.encode(), codec.packb({"after": True})])
    await wait_until(lambda: _seen_contains(client, {"after": True}), what="the message after the bad one")
    assert kernel.cells["flaky"].restarts == 0
    assert kernel.subscriber is not None and kernel.subscriber.stats.malformed >= 1


async def _seen_contains(client: mdp.AsyncClient, item: object) -> bool:
    return item in await client.request("flaky", "seen")


async def test_past_the_restart_intensity_the_actor_fails_alone(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, modules=MODULES, max_restarts=2)
    async with running(cfg) as kernel:
        client = mdp.AsyncClient(kernel.endpoints["broker"][0], timeout=3.0)
        try:
            cell = kernel.cells["flaky"]
            for restarts in (1, 2):
                await client.request("flaky", "crash_later")
                await wait_until(lambda r=restarts: _running_again(kernel, r), what=f"restart {restarts}")
            await client.request("flaky", "crash_later")  # the third crash within the window: past max_restarts=2
            await wait_until(lambda: cell.state == "failed", what="flaky failed")
            assert cell.restarts == 2

            with pytest.raises(Unavailable) as caught:
                await client.request("flaky", "ping")
            assert "flaky" in caught.value.message
            assert await client.request("echo", "ping", {"name": "desk"}) == "pong, desk"
            assert kernel.failed_actors() == ["flaky"]

            async with aiohttp.ClientSession() as http:
                async with http.get(f"{kernel.edge_url}/health") as resp:
                    assert resp.status == 200
                    health = await resp.json()
                async with http.post(f"{kernel.edge_url}/api/v1/echo", json={"still": "here"}) as resp:
                    assert resp.status == 200
                    assert await resp.json() == {"still": "here"}
                async with http.get(f"{kernel.edge_url}/metrics") as resp:
                    metrics = await resp.text()
            assert health["status"] == "degraded"
            assert health["actors"]["flaky"]["state"] == "failed"
            assert health["actors"]["flaky"]["healthy"] is False
            assert "background task crashed on purpose" in health["actors"]["flaky"]["last_error"]
            assert health["actors"]["echo"]["healthy"] is True
            assert health["actors"]["kernel"]["state"] == "running"

            states = {(s.labels["actor"], s.labels["state"]): s.value
                      for family in text_string_to_metric_families(metrics) if family.name == "mlp_actor_state"
                      for s in family.samples}
            assert states[("flaky", "failed")] == 1.0
            assert states[("echo", "running")] == 1.0
            # a failed actor stays down: no restart is scheduled behind the operator's back
            await asyncio.sleep(0.2)
            assert cell.state == "failed"
        finally:
            client.close()
