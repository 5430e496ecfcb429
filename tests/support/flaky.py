"""A test plugin whose actor can be told to crash, stall or answer slowly (supervision and drain tests)."""

from __future__ import annotations

import asyncio
from typing import Any

from ml_processing.bus import topics
from ml_processing.core.actor import Actor
from ml_processing.core.config import Config
from ml_processing.core.hookspecs import hookimpl

STARTS: list[int] = []  # one entry per instance started (restarts are visible here)


class Flaky(Actor):
    name = "flaky"

    async def on_start(self) -> None:
        STARTS.append(id(self))
        self.seen: list[Any] = []
        self.subscribe(topics.prefix(topics.TICK), self.on_tick)

    def on_tick(self, topic: str, body: Any) -> None:
        if isinstance(body, dict) and body.get("crash"):
            raise RuntimeError("tick handler crashed on purpose")
        self.seen.append(body)

    def handle_ping(self, args: dict[str, Any]) -> str:
        return "pong"

    def handle_crash(self, args: dict[str, Any]) -> None:
        raise RuntimeError("crashed on purpose")

    def handle_crash_later(self, args: dict[str, Any]) -> str:
        """Crash in a background task of the actor's own: that, unlike a request, restarts it."""

        async def boom() -> None:
            raise RuntimeError("background task crashed on purpose")

        self.spawn(boom(), "boom")
        return "scheduled"

    def handle_fail_for_request(self, args: dict[str, Any]) -> str:
        """Work started on behalf of this request fails later: it fails alone, like the request would."""

        async def boom() -> None:
            raise RuntimeError("work for a request failed on purpose")

        self.spawn(boom(), "for-request", for_message=True)
        return "scheduled"

    async def handle_slow(self, args: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(float(args.get("seconds", 0.2)))
        return {"slept": args.get("seconds", 0.2)}

    def handle_seen(self, args: dict[str, Any]) -> list[Any]:
        return self.seen

    def handle_instance(self, args: dict[str, Any]) -> int:
        return id(self)


@hookimpl
def register_actors(settings: Config) -> list[type[Actor]]:
    return [Flaky]
