"""The control service of a worker (``process.<i>`` of a serve group, ``process.NAME`` of a worker host): what
the serve process asks of it. Only the serve process may call it (the broker refuses socket clients).

Ops: ``status``; ``sync`` (reload a service's state after a change, keeping the live series it owns);
``shards_release``, ``shards_take``, ``shards_acquire``, ``shards_checkpoint`` (moving symbols, a page at a
time, `ml_processing.core.shards`);
``call`` (an op on the live state of a symbol this process owns, forwarded by the serve process).
Each declares its arguments like an actor's op (`Args`): a malformed request is refused naming the field.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ml_processing.bus import codec
from ml_processing.bus.errors import NotFound

from .ops import Args, NoArgs, NonNegInt, OpSpec, PositiveInt

if TYPE_CHECKING:
    from .kernel import Kernel


class ReleaseArgs(Args, frozen=True):
    epoch: NonNegInt
    members: list[str]
    moving: list[str]


class TakeArgs(Args, frozen=True):
    symbols: list[str]


class AcquireArgs(Args, frozen=True):
    epoch: NonNegInt
    states: dict[str, Any]
    last: bool = True


class CheckpointArgs(Args, frozen=True):
    offset: NonNegInt = 0
    limit: PositiveInt | None = None


class SyncArgs(Args, frozen=True):
    service: str


class CallArgs(Args, frozen=True):
    service: str
    op: str
    args: dict[str, Any] | None = None
    rid: str | None = None
    principal: str | None = None
    transport: str | None = None


_ARGS: dict[str, type[Args]] = {"status": NoArgs, "sync": SyncArgs, "call": CallArgs, "shards_release": ReleaseArgs,
                                "shards_take": TakeArgs, "shards_acquire": AcquireArgs,
                                "shards_checkpoint": CheckpointArgs}


class ProcessControl:
    """The control service of one worker: the serve process's control of it."""

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        self._ops: dict[str, tuple[OpSpec, Callable[[Any], Any]]] = {
            name: (OpSpec(name, f"_{name}", args, Any, "admin", ""), getattr(self, f"_{name}"))
            for name, args in _ARGS.items()}

    async def __call__(self, request: codec.Request) -> Any:
        found = self._ops.get(request.op)
        if found is None:
            raise NotFound(f"process control has no op {request.op!r} (ops: {', '.join(sorted(self._ops))})",
                           field="op")
        spec, handler = found
        result = handler(spec.decode(request.args))
        return await result if inspect.isawaitable(result) else result

    def _status(self, args: NoArgs) -> dict[str, Any]:
        kernel, member = self.kernel, self.kernel.member
        return {"process": kernel.process, "member": member.name, "pid": os.getpid(), "status": kernel.status,
                "shards": member.status(), "actors": {name: cell.status() for name, cell in kernel.cells.items()}}

    def _shards_release(self, args: ReleaseArgs) -> list[str]:
        return self.kernel.member.release(args.epoch, args.members, args.moving)

    def _shards_take(self, args: TakeArgs) -> Any:
        return self.kernel.member.take(args.symbols)

    def _shards_acquire(self, args: AcquireArgs) -> Awaitable[int]:
        return self.kernel.member.acquire(args.epoch, args.states, args.last)

    def _shards_checkpoint(self, args: CheckpointArgs) -> dict[str, Any]:
        return self.kernel.member.checkpoint(args.offset, args.limit)

    def _cell(self, service: str) -> Any:
        cell = self.kernel.cells.get(service)
        if cell is None:
            raise NotFound(f"no service {service!r} in this process", field="service")
        return cell

    async def _call(self, args: CallArgs) -> Any:
        """An op on the live state of a symbol this process owns, forwarded by the serve process."""
        forwarded = codec.Request(args.op, args.args or {}, args.rid, 0, args.principal, args.transport or "internal")
        result = self._cell(args.service)(forwarded)
        return await result if inspect.isawaitable(result) else result

    async def _sync(self, args: SyncArgs) -> dict[str, Any]:
        cell = self._cell(args.service)
        if not self.kernel.shared_data:  # a host with a data directory of its own has nothing to reload
            return {"synced": None, "process": self.kernel.process}
        instance = cell.instance
        restarts = instance is not None and getattr(instance, "on_sync", None) is None
        held = sorted(instance.shard_symbols()) if instance is not None and restarts else []
        kept = instance.shard_state(held) if instance is not None and held else {}
        await cell.sync()
        if kept and cell.instance is not None:  # a restart to reload keeps the live series this process owns
            await cell.instance.shard_load(kept)
        return {"synced": args.service, "process": self.kernel.process}
