"""The control service of a worker (``process.<i>`` of a serve group, ``process.NAME`` of a worker host): what
the serve process asks of it. Only the serve process may call it (the broker refuses socket clients).

Ops: ``status``; ``sync`` (reload a service's state after a change, keeping the live series it owns);
``shards_release``, ``shards_take``, ``shards_acquire``, ``shards_checkpoint`` (moving symbols, a page at a
time, `ml_processing.core.shards`);
``call`` (an op on the live state of a symbol this process owns, forwarded by the serve process).
"""

from __future__ import annotations

import inspect
import os
from typing import TYPE_CHECKING, Any

from ml_processing.bus import codec
from ml_processing.bus.errors import NotFound

if TYPE_CHECKING:
    from .kernel import Kernel


class ProcessControl:
    """The control service of one worker: the serve process's control of it."""

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel

    async def __call__(self, request: codec.Request) -> Any:
        args = request.args if isinstance(request.args, dict) else {}
        member = self.kernel.member
        if request.op == "status":
            return {"process": self.kernel.process, "member": member.name, "pid": os.getpid(),
                    "status": self.kernel.status, "shards": member.status(),
                    "actors": {name: cell.status() for name, cell in self.kernel.cells.items()}}
        if request.op == "shards_release":
            return member.release(int(args["epoch"]), list(args["members"]), list(args["moving"]))
        if request.op == "shards_take":
            return member.take(list(args["symbols"]))
        if request.op == "shards_acquire":
            return await member.acquire(int(args["epoch"]), dict(args["states"]), bool(args.get("last", True)))
        if request.op == "shards_checkpoint":
            return member.checkpoint(int(args.get("offset", 0)), args.get("limit"))
        if request.op not in ("sync", "call"):
            raise NotFound(f"process control has no op {request.op!r} (ops: call, shards_acquire, "
                           "shards_checkpoint, shards_release, shards_take, status, sync)", field="op")
        service = args.get("service")
        cell = self.kernel.cells.get(service) if isinstance(service, str) else None
        if cell is None:
            raise NotFound(f"no service {service!r} in this process", field="service")
        if request.op == "call":  # an op on the live state of a symbol this process owns, from the serve process
            forwarded = codec.Request(str(args["op"]), args.get("args") or {}, args.get("rid"), 0,
                                      args.get("principal"), args.get("transport") or "internal")
            result = cell(forwarded)
            return await result if inspect.isawaitable(result) else result
        if not self.kernel.shared_data:  # a host with a data directory of its own has nothing to reload
            return {"synced": None, "process": self.kernel.process}
        instance = cell.instance
        restarts = instance is not None and getattr(instance, "on_sync", None) is None
        held = sorted(instance.shard_symbols()) if instance is not None and restarts else []
        kept = instance.shard_state(held) if instance is not None and held else {}
        await cell.sync()
        if kept and cell.instance is not None:  # a restart to reload keeps the live series this process owns
            await cell.instance.shard_load(kept)
        return {"synced": service, "process": self.kernel.process}
