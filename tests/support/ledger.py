"""A test plugin with one piece of shared state (a value kept in the data directory), ops that say which
process answered, and slow stateless ops that keep the serve process busy, awaited or holding its loop
(process-group tests)."""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

from ml_processing.core.actor import Actor
from ml_processing.core.config import Config
from ml_processing.core.hookspecs import hookimpl
from ml_processing.core.ops import Args, NoArgs, op
from ml_processing.core.storage import atomic_write


class SetArgs(Args):
    value: int


class WorkArgs(Args):
    seconds: float = 0.2


class Ledger(Actor):
    name = "ledger"

    async def on_start(self) -> None:
        self.path = self.ctx.data_dir / "ledger.json"
        self.value = json.loads(self.path.read_text())["value"] if self.path.exists() else None

    @op(NoArgs, reply=dict[str, Any], role="compute", spread=True)
    def handle_where(self, args: NoArgs) -> dict[str, Any]:
        "Which process answered, and the value it holds."
        return {"pid": os.getpid(), "value": self.value}

    @op(WorkArgs, reply=dict[str, Any], role="compute", spread=True)
    async def handle_work(self, args: WorkArgs) -> dict[str, Any]:
        "Stateless work that takes a while (awaited: the process stays busy with the service meanwhile)."
        await asyncio.sleep(args.seconds)
        return {"pid": os.getpid(), "value": self.value}

    @op(WorkArgs, reply=dict[str, Any], role="compute", spread=True)
    def handle_burn(self, args: WorkArgs) -> dict[str, Any]:
        "Stateless work that holds the loop (as a large computation on the loop does)."
        time.sleep(args.seconds)
        return {"pid": os.getpid()}

    @op(NoArgs, reply=dict[str, Any], role="read")
    def handle_owner(self, args: NoArgs) -> dict[str, Any]:
        "Not stateless: always answered by the process that owns the state."
        return {"pid": os.getpid(), "value": self.value}

    @op(SetArgs, reply=dict[str, Any], role="admin")
    def handle_set(self, args: SetArgs) -> dict[str, Any]:
        "Change the state (written to the data directory by this process alone)."
        atomic_write(self.path, json.dumps({"value": args.value}).encode())
        self.value = args.value
        return {"pid": os.getpid(), "value": self.value}

    @op(SetArgs, reply=dict[str, Any], role="compute")
    def handle_set_later(self, args: SetArgs) -> dict[str, Any]:
        "Change the state in the background (as a training job registers a model), then say so."

        async def later() -> None:
            await asyncio.sleep(0.05)
            atomic_write(self.path, json.dumps({"value": args.value}).encode())
            self.value = args.value
            await self.ctx.changed()

        self.ctx.spawn(later(), "set-later", for_message=True)
        return {"pid": os.getpid()}


@hookimpl
def register_actors(settings: Config) -> list[type[Actor]]:
    return [Ledger]
