"""Live series sharded by symbol over the processes of a serve group and the worker hosts that join it.

Every process that serves the actors (the serve process, its worker processes, and ``ml-processing worker``
hosts) is a *member* with a name: ``serve``, or the name of its control service ``process.<name>``. Each live
message whose topic names a symbol is handled by the symbol's owner only (`ml_processing.bus.shards`: a
stable rendezvous hash of the member names), so each bar is handled once, and the indicators, feature
streams, live predictions, labels, patterns and market sentiment of a symbol live in one process.

The serve process's `ShardKeeper` decides the members: itself plus every ``process.*`` control service the
broker has a live worker for. When that set changes it starts a new *epoch* and moves the symbols whose
owner changed, in two steps over the members' control services:

1. ``shards_release`` to every member: take the new member list; the moving symbols are *frozen* (nobody
   handles their messages); each member sets aside the state of the moving symbols it held, forgets them,
   and names them; the keeper takes that state (``shards_take``) a page of symbols at a time, into the store.
2. ``shards_acquire`` to every member, a page at a time: each continues its gained symbols from the store
   (what step 1 saved, or, for a member that is gone, its last checkpoint); after its last page the
   freeze ends.

The keeper also pulls a checkpoint of every other member's symbols each ``[kernel] shard_checkpoint_s``
and writes it to ``<data_dir>/shards/`` (atomically, one file per symbol: the serve process stays the one
writer of the data directory). The guarantee, per symbol, is *at most once*: no bar is handled twice; the
bars published while a symbol moves (milliseconds for a member that joins or leaves cleanly) are handled by
nobody; when a member is lost, its symbols continue from its last checkpoint, so the bars it handled after
that checkpoint and those published until the broker notices the loss (``[bus] liveness`` heartbeats) are
missing from their series. Their published outputs (indicator updates, predictions) are not repeated.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from concurrent.futures import Executor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ml_processing.bus import codec
from ml_processing.bus.errors import CodecError, MlpError
from ml_processing.bus.proxy import Proxy
from ml_processing.bus.pubsub import Subscriber
from ml_processing.bus.shards import FIRST, Shards, owner

from .log import get_logger
from .merging import merge_replies
from .storage import atomic_write

if TYPE_CHECKING:
    from ml_processing.bus import mdp

    from .supervisor import ActorCell

log = get_logger(__name__)

#: Every member other than the serve process is named by its control service, which starts with this.
MEMBER_PREFIX = "process."
#: {symbol: {actor: state}}: what moves with symbols.
States = dict[str, dict[str, Any]]

STORE_VERSION = 1


class ShardMember:
    """This process's part: which live messages it handles, and its actors' state moved in and out.

    `attach` makes the process's subscriber (the serve process's proxy, a worker's subscriber) leave the
    messages of other members' symbols alone before they are decoded: one dictionary lookup per message
    while there are several members, nothing while the process is alone."""

    def __init__(self, name: str, cells: Mapping[str, ActorCell]) -> None:
        self.name = name
        # Alone, the serve process owns everything; any other member owns nothing until it is told.
        self.view = Shards(name, [name] if name == FIRST else [])
        self.cells = cells
        self.acquired = 0
        self.released = 0
        self._subscriber: Subscriber | Proxy | None = None
        self._accepted: dict[bytes, bool] = {}  # raw topic -> handled here, in this epoch
        self._handover: States = {}  # released symbols' state, until the keeper takes it

    def attach(self, subscriber: Subscriber | Proxy) -> None:
        self._subscriber = subscriber
        self._changed()

    def _changed(self) -> None:
        """The view changed: forget the answers per topic; while alone, no filter at all."""
        self._accepted = {}
        view = self.view
        alone = view.members == (self.name,) and not view.frozen
        if self._subscriber is not None:
            self._subscriber.accepts = None if alone else self.accepts

    def accepts(self, topic: bytes) -> bool:
        """Whether this process handles the live message with this raw topic now."""
        known = self._accepted.get(topic)
        if known is None:
            parts = topic.split(b".", 2)
            try:
                symbol = parts[1].decode() if len(parts) > 1 else None
            except UnicodeDecodeError:
                return True  # not a topic at all: decoding counts it as such
            if len(self._accepted) >= 100_000:
                self._accepted = {}
            known = self._accepted[topic] = self.view.owns(symbol)
        return known

    @property
    def skipped(self) -> int:
        """Live messages left to their owner (another member)."""
        return self._subscriber.stats.skipped if self._subscriber is not None else 0

    def _actors(self) -> list[Any]:
        return [cell.instance for cell in self.cells.values() if cell.instance is not None]

    def held(self) -> set[str]:
        """Every symbol one of this process's actors holds live state for."""
        symbols: set[str] = set()
        for actor in self._actors():
            symbols.update(actor.shard_symbols())
        return symbols

    def states(self, symbols: Iterable[str]) -> States:
        wanted = list(symbols)
        out: States = {}
        for actor in self._actors():
            for symbol, state in actor.shard_state(wanted).items():
                out.setdefault(symbol, {})[actor.ctx.name] = state
        return out

    def release(self, epoch: int, members: Sequence[str], moving: Iterable[str]) -> list[str]:
        """Step 1 of a move: take `members`, freeze `moving`; the moving symbols held here are set aside
        for `take` and forgotten by the actors. Returns them."""
        moving = set(moving)
        self.view.update(epoch, members, moving)
        self._changed()
        lost = sorted(s for s in self.held() & moving if s not in self.view.owned((s,)))
        self._handover = self.states(lost)
        for actor in self._actors():
            actor.shard_drop(lost)
        self.released += len(lost)
        if lost:
            log.info("shards_released", epoch=epoch, symbols=len(lost))
        return lost

    def take(self, symbols: Iterable[str]) -> States:
        """The state set aside by `release` of `symbols` (a page at a time: one message stays small)."""
        return {s: self._handover.pop(s) for s in symbols if s in self._handover}

    async def acquire(self, epoch: int, states: States, last: bool = True) -> int:
        """Step 2, a page at a time: continue the gained symbols from `states` (empty: afresh); after the
        `last` page the freeze ends."""
        if epoch != self.view.epoch:
            raise MlpError(f"acquire for epoch {epoch}, but this member is at epoch {self.view.epoch}")
        for actor in self._actors():
            mine = {symbol: by_actor.get(actor.ctx.name) for symbol, by_actor in states.items()}
            if mine:
                await actor.shard_load(mine)
        self.acquired += len(states)
        if last:
            self._handover = {}
            self.view.thaw()
            self._changed()
        if states:
            log.info("shards_acquired", epoch=epoch, symbols=len(states))
        return len(states)

    def checkpoint(self, offset: int = 0, limit: int | None = None) -> dict[str, Any]:
        """The state of the symbols this process owns, a page of them from `offset` (sorted by name), to be
        saved by the keeper (nothing is dropped); ``next`` is the next page's offset, or None."""
        owned = sorted(self.view.owned(self.held()))
        end = len(owned) if limit is None else offset + limit
        return {"states": self.states(owned[offset:end]), "next": end if end < len(owned) else None}

    def status(self) -> dict[str, Any]:
        return {"me": self.name, "epoch": self.view.epoch, "members": list(self.view.members),
                "frozen": len(self.view.frozen), "skipped_messages": self.skipped,
                "acquired": self.acquired, "released": self.released}


class ShardStore:
    """The saved state of each symbol: ``<dir>/<hex of symbol>.msgpack``, written atomically."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, symbol: str) -> Path:
        return self.directory / f"{symbol.encode().hex()}.msgpack"

    def save(self, states: States, epoch: int) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        for symbol, by_actor in states.items():
            atomic_write(self._path(symbol), codec.packb({"version": STORE_VERSION, "symbol": symbol,
                                                          "epoch": epoch, "states": by_actor}))

    def load(self, symbol: str) -> dict[str, Any] | None:
        path = self._path(symbol)
        try:
            body = codec.unpackb(path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, CodecError) as exc:
            log.error("shard_state_unreadable", symbol=symbol, path=str(path), error=str(exc))
            return None
        if not isinstance(body, dict) or body.get("version") != STORE_VERSION:
            log.error("shard_state_unreadable", symbol=symbol, path=str(path), error="not a shard state file")
            return None
        states = body.get("states")
        return states if isinstance(states, dict) else None

    def symbols(self) -> set[str]:
        if not self.directory.is_dir():
            return set()
        found = set()
        for path in self.directory.glob("*.msgpack"):
            try:
                found.add(bytes.fromhex(path.stem).decode())
            except (ValueError, UnicodeDecodeError):
                log.warning("shard_state_file_ignored", path=str(path))
        return found


class ShardKeeper:
    """The serve process's side: the member list, moving symbols between members, checkpoints."""

    def __init__(self, member: ShardMember, broker: mdp.Broker, store: ShardStore, executor: Executor, *,
                 checkpoint_s: float, poll_s: float = 0.2, timeout: float = 30.0, page: int = 32) -> None:
        self.member = member
        self.page = page  # symbols per message when state moves or is saved
        self.broker = broker
        self.store = store
        self.executor = executor
        self.checkpoint_s = checkpoint_s
        self.poll_s = poll_s
        self.timeout = timeout
        self.universe: set[str] = set()  # every symbol known to have state somewhere
        self.epoch = 0
        self.settled = 0  # the last epoch whose move finished at every member
        self.moves = 0
        self.moved = 0
        self.last_move_ms = 0.0
        self.checkpoints = 0
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    @property
    def members(self) -> tuple[str, ...]:
        return self.member.view.members

    @property
    def moving(self) -> bool:
        """Whether a move is under way: some member may still hold frozen symbols (this one may not)."""
        return self.settled != self.epoch

    def live_members(self) -> list[str]:
        """The serve process plus every member control service with a live worker at the broker."""
        found = [FIRST]
        for name, info in self.broker.services().items():
            if name.startswith(MEMBER_PREFIX) and info.get("workers", 0) > 0:
                found.append(name)
        return sorted(found)

    async def start(self) -> None:
        """Continue the symbols saved in the store that this process does not hold, then watch members."""
        stored = await asyncio.get_running_loop().run_in_executor(self.executor, self.store.symbols)
        self.universe = stored | self.member.held()
        await self._move(self.live_members(), also=stored - self.member.held())
        self._task = asyncio.create_task(self._watch(), name="shard-keeper")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _watch(self) -> None:
        last_checkpoint = time.monotonic()
        while True:
            await asyncio.sleep(self.poll_s)
            try:
                members = self.live_members()
                if tuple(members) != self.members:
                    await self._move(members)
                if time.monotonic() - last_checkpoint >= self.checkpoint_s:
                    last_checkpoint = time.monotonic()
                    await self.checkpoint()
            except asyncio.CancelledError:
                raise
            except Exception:  # the keeper must outlive any one member's failure
                log.error("shard_keeper_failed", exc_info=True)

    async def _call(self, member: str, op: str, args: dict[str, Any]) -> Any:
        return await self.broker.request(member, op, args, timeout=self.timeout)

    async def _move(self, members: Sequence[str], also: Iterable[str] = ()) -> None:
        """A new epoch with `members`: release the moving symbols everywhere, save what was handed over,
        then each new owner acquires its symbols. State travels a page of symbols at a time, through the
        store: no message, and none of this process's memory, holds more than a page."""
        async with self._lock:
            started = time.perf_counter()
            old = self.members if self.epoch else (FIRST,)
            self.epoch += 1
            epoch = self.epoch
            self.universe |= self.member.held()
            moving = {s for s in self.universe if owner(s, old) != owner(s, members)} | set(also)
            others = [m for m in members if m != FIRST]
            released = await asyncio.gather(
                *(self._call(m, "shards_release", {"epoch": epoch, "members": list(members),
                                                   "moving": sorted(moving)}) for m in others),
                return_exceptions=True)
            handed = {FIRST: self.member.release(epoch, members, moving)}
            for name, reply in zip(others, released, strict=True):
                if isinstance(reply, BaseException):
                    log.error("shard_release_failed", member=name, epoch=epoch, error=str(reply))
                else:
                    handed[name] = list(reply)
            for name, lost in handed.items():
                for page in _pages(lost, self.page):
                    states = self.member.take(page) if name == FIRST else \
                        await self._call(name, "shards_take", {"symbols": page})
                    await self._in_thread(self.store.save, states, epoch)
            gained: dict[str, list[str]] = {m: [] for m in members}
            for symbol in sorted(moving):
                gained[owner(symbol, members)].append(symbol)
            results = await asyncio.gather(*(self._hand(m, epoch, gained[m]) for m in members),
                                           return_exceptions=True)
            for name, result in zip(members, results, strict=True):
                if isinstance(result, BaseException):
                    log.error("shard_acquire_failed", member=name, epoch=epoch, error=str(result))
            self.settled = epoch
            self.moves += 1
            self.moved += len(moving)
            self.last_move_ms = round((time.perf_counter() - started) * 1000, 3)
            log.info("shards_moved", epoch=epoch, members=list(members), moving=len(moving), ms=self.last_move_ms)

    async def _hand(self, member: str, epoch: int, symbols: list[str]) -> None:
        """`member` acquires `symbols` from the store, a page at a time (the last page ends its freeze)."""
        pages = _pages(symbols, self.page) or [[]]
        for i, page in enumerate(pages):
            stored = await self._in_thread(self._load_all, page)
            states = {s: stored.get(s, {}) for s in page}
            last = i == len(pages) - 1
            if member == FIRST:
                await self.member.acquire(epoch, states, last)
            else:
                await self._call(member, "shards_acquire", {"epoch": epoch, "states": states, "last": last})

    async def _in_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def _load_all(self, symbols: Iterable[str]) -> States:
        return {s: states for s in symbols if (states := self.store.load(s)) is not None}

    async def checkpoint(self) -> int:
        """Save the state of every symbol held by another member, a page at a time (their state outlives a
        lost member)."""
        async with self._lock:
            saved = await asyncio.gather(*(self._checkpoint(m) for m in self.members if m != FIRST),
                                         return_exceptions=True)
            self.checkpoints += 1
            for count in saved:
                if isinstance(count, BaseException):
                    log.warning("shard_checkpoint_failed", error=str(count))
            return sum(c for c in saved if isinstance(c, int))

    async def _checkpoint(self, member: str) -> int:
        offset: int | None = 0
        count = 0
        while offset is not None:
            page = await self._call(member, "shards_checkpoint", {"offset": offset, "limit": self.page})
            states = page["states"]
            if states:
                await self._in_thread(self.store.save, states, self.epoch)
                self.universe |= set(states)
                count += len(states)
            offset = page["next"]
        return count

    def status(self) -> dict[str, Any]:
        return {**self.member.status(), "moving": self.moving, "moves": self.moves, "symbols_moved": self.moved,
                "last_move_ms": self.last_move_ms, "checkpoints": self.checkpoints,
                "symbols_known": len(self.universe)}


def _pages(items: Sequence[str], size: int) -> list[list[str]]:
    return [list(items[i:i + size]) for i in range(0, len(items), size)]


class ShardRouter:
    """The serve process's face of an actor whose ops read or change a symbol's live state (declared with
    ``@op(..., shard="symbol")``): the symbol's owner answers; without a symbol (an op over every series)
    every member answers and the replies are merged. Other ops go to the actor here as before."""

    def __init__(self, cell: ActorCell, member: ShardMember,
                 call: Callable[[str, str, dict[str, Any]], Awaitable[Any]]) -> None:
        self.cell = cell
        self.member = member
        self.call = call
        self.ops = {name: spec.shard for name, spec in cell.actor_cls.declarations().items() if spec.shard}

    def __call__(self, request: codec.Request) -> Any:
        field = self.ops.get(request.op)
        view = self.member.view
        if field is None or len(view.members) == 1:
            return self.cell(request)
        symbol = request.args.get(field) if isinstance(request.args, dict) else None
        if isinstance(symbol, str):
            target = view.owner(symbol)
            return self.cell(request) if target == self.member.name else self._forward(target, request)
        if field != "*" and symbol is not None:
            return self.cell(request)  # not a symbol: the actor's declaration refuses it, naming the field
        return self._everywhere(request)

    def _args(self, request: codec.Request) -> dict[str, Any]:
        return {"service": self.cell.name, "op": request.op, "args": request.args, "rid": request.rid,
                "principal": request.principal, "transport": request.transport}

    async def _forward(self, target: str, request: codec.Request) -> Any:
        return await self.call(target, "call", self._args(request))

    async def _everywhere(self, request: codec.Request) -> Any:
        async def here() -> Any:
            result = self.cell(request)
            return await result if inspect.isawaitable(result) else result

        others = [m for m in self.member.view.members if m != self.member.name]
        replies = await asyncio.gather(here(), *(self.call(m, "call", self._args(request)) for m in others),
                                       return_exceptions=True)
        for reply in replies:  # this process's own refusal first: it names the field as any would
            if isinstance(reply, BaseException):
                raise reply
        return merge_replies(replies)
