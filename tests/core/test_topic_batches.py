"""Pub/sub messages reach an actor a drain at a time: a handler subscribed with `Actor.subscribe_batch` gets
every message of a drain in one call, and a message whose handling raises is counted alone (rejected or
failed, as with a per-message handler): the rest of its drain is handled and the actor never restarts.

This module is also the plugin that provides the actor under test (``batcher``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import pytest

from ml_processing.bus import topics
from ml_processing.core.actor import Actor
from ml_processing.core.config import Config
from ml_processing.core.errors import BadRequest
from ml_processing.core.hookspecs import hookimpl
from ml_processing.core.kernel import Kernel
from tests.conftest import make_config
from tests.core.helpers import running, wait_until


class Batcher(Actor):
    """Records what each call of its batch handler took; ``reject`` and ``crash`` messages raise."""

    name = "batcher"

    async def on_start(self) -> None:
        self.calls: list[list[int]] = []
        self.subscribe_batch(topics.prefix(topics.TICK), self.on_ticks)

    def on_ticks(self, messages: Iterable[tuple[str, Any]]) -> None:
        taken: list[int] = []
        self.calls.append(taken)
        for _, body in messages:
            if body.get("reject"):
                raise BadRequest("refused on purpose", field="tick")
            if body.get("crash"):
                raise RuntimeError("tick handler crashed on purpose")
            taken.append(body["n"])

    def handle_stop_ticks(self, args: dict[str, Any]) -> str:
        self.unsubscribe(topics.prefix(topics.TICK), self.on_ticks)
        return "stopped"


@hookimpl
def register_actors(settings: Config) -> list[type[Actor]]:
    return [Batcher]


@pytest.fixture
async def kernel(tmp_path: Path) -> AsyncIterator[Kernel]:
    async with running(make_config(tmp_path, modules=("ml_processing.plugins._template", __name__))) as k:
        yield k


def publish_in_one_turn(kernel: Kernel, bodies: list[dict[str, Any]]) -> None:
    """Local publishes of one loop turn reach local handlers together: one drain, whatever the machine's pace."""
    assert kernel.proxy is not None
    for body in bodies:
        kernel.proxy.publish(topics.tick("ES"), body)


async def test_a_drain_comes_in_one_call_and_a_failing_message_fails_alone(kernel: Kernel) -> None:
    cell = kernel.cells["batcher"]
    actor: Any = cell.instance
    publish_in_one_turn(kernel, [{"n": 1}, {"n": 2}, {"crash": True}, {"n": 3}, {"reject": True}, {"n": 4},
                                 {"n": 5}])
    await wait_until(lambda: 5 in [n for call in actor.calls for n in call], what="the last tick")

    assert actor.calls == [[1, 2], [3], [4, 5]]  # called again after each failing message, with the rest
    assert cell.messages_failed == 1 and cell.messages_rejected == 1
    assert cell.instance is actor and cell.restarts == 0 and cell.state == "running"
    health = await kernel.request("kernel", "health")
    assert health["actors"]["batcher"]["messages_failed"] == 1
    assert health["actors"]["batcher"]["messages_rejected"] == 1


async def test_a_drain_whose_last_message_fails_ends_there(kernel: Kernel) -> None:
    cell = kernel.cells["batcher"]
    actor: Any = cell.instance
    publish_in_one_turn(kernel, [{"n": 1}, {"crash": True}])
    await wait_until(lambda: cell.messages_failed == 1, what="the failing tick counted")
    publish_in_one_turn(kernel, [{"n": 2}])
    await wait_until(lambda: [2] in actor.calls, what="the next drain")

    assert actor.calls == [[1], [2]]  # nothing was left to call it again with
    assert cell.restarts == 0


async def test_a_batch_handler_unsubscribes_with_the_method_it_subscribed(kernel: Kernel) -> None:
    actor: Any = kernel.cells["batcher"].instance
    assert kernel.proxy is not None and topics.prefix(topics.TICK) in kernel.proxy.prefixes
    assert await kernel.request("batcher", "stop_ticks", {}) == "stopped"

    assert topics.prefix(topics.TICK) not in kernel.proxy.prefixes  # `self.on_ticks` is a new object each time
    assert all(prefix != topics.prefix(topics.TICK) for prefix, _, _ in kernel.cells["batcher"]._subs)
    assert actor.calls == []
