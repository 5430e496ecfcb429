"""The actor: a named bus service with a lifecycle, request handlers per ``op``, subscriptions, publish.

Write an actor as a subclass with a ``name`` (its service name) and methods ``handle_<op>(self, args)``,
sync for quick work or ``async`` for anything that waits, each declared with `op` (its `Args`, reply and
role: `ml_processing.core.ops`). Raise `BadRequest`, `NotFound`, ... for errors the caller should see.
Any other exception answers that one request with ``internal`` (an error id that is also in the log line
with the traceback) and is counted; it never restarts the actor. Only what an actor runs on its own, its
``on_start`` and its spawned tasks, can crash it (then the supervisor restarts it).

>>> class PingArgs(Args):
...     times: int = 1
>>> class Echo(Actor):
...     name = "echo"
...     @op(PingArgs, reply=str, role="read")
...     def handle_ping(self, args: PingArgs) -> str:
...         "Answer pong."
...         return "pong" * args.times
>>> sorted(Echo.ops()), Echo.declarations()["ping"].role, Echo.declarations()["ping"].doc
(['ping'], 'read', 'Answer pong.')
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from ml_processing.bus.pubsub import Handler

from .cache import Cache
from .clock import REAL, Clock
from .config import Config
from .ops import Args, OpSpec, op, spec_of

__all__ = ["Actor", "ActorContext", "Args", "Batched", "Messages", "op"]

T = TypeVar("T")

#: What a batch handler is given: the ``(topic, body)`` messages of one socket drain, to iterate once.
Messages = Iterable[tuple[str, Any]]


@dataclass(frozen=True)
class Batched:
    """A handler subscribed with `Actor.subscribe_batch`: the kernel hands it every message of a drain in one
    call. Called as a per-message handler (where no kernel batches), it gets a batch of one."""

    handler: Callable[[Messages], None]

    def __call__(self, topic: str, body: Any) -> None:
        self.handler(((topic, body),))


@dataclass(frozen=True)
class ActorContext:
    """What the kernel hands an actor: configuration and the bus verbs, nothing else."""

    name: str
    settings: Config
    config: Any  # the plugin's own config object (from ``register_config_schemas``), or None
    publish: Callable[[str, Any], None]
    subscribe: Callable[[str, Handler], None]  # a `Batched` handler gets each drain's messages at once
    unsubscribe: Callable[[str, Callable[..., None]], None]  # the handler given to subscribe (or batched)
    request: Callable[..., Awaitable[Any]]
    spawn: Callable[..., asyncio.Task[Any]]  # (coro, name, *, for_message)
    executor: Executor
    data_dir: Path
    kernel: Any = None  # read-only view of the kernel (status, plugins, services) for introspection
    registries: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # e.g. ["indicators"][name]
    make_cache: Callable[[str, int, float], Cache] = Cache  # the kernel's: reported in the metrics
    make_histogram: Callable[..., Any] | None = None  # the kernel's: Prometheus histograms in /metrics
    clock: Clock = REAL  # the kernel's: tests inject a ManualClock
    #: Say that this service's shared state changed outside an admin op (a training job registered a model):
    #: every other process serving it reloads it before the awaitable completes. Admin ops do this by themselves.
    changed: Callable[[], Awaitable[None]] = field(default=lambda: _nothing())
    #: True in a worker process of ``serve --processes N``: it serves the stateless ops from the state on disk
    #: and must not write the data directory (no sweeping of others' temporary files, no defaults to create).
    replica: bool = False
    #: True in the serve process: it saves and loads the live state of its symbols (the market) itself. A
    #: worker (a process of the group or another host) is handed its symbols' live state (`shard_load`).
    primary: bool = True


class Actor:
    """Base of every actor. Subclasses set ``name`` and define ``handle_<op>`` methods."""

    name: ClassVar[str] = ""
    #: Services this actor asks while it starts: the kernel starts it once each of them is running.
    needs: ClassVar[tuple[str, ...]] = ()
    _ops: ClassVar[dict[str, OpSpec]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._ops = {attr[len("handle_"):]: spec_of(attr[len("handle_"):], attr, getattr(cls, attr))
                    for attr in dir(cls) if attr.startswith("handle_") and callable(getattr(cls, attr))}

    def __init__(self, ctx: ActorContext) -> None:
        self.ctx = ctx
        self.config = ctx.config
        self.settings = ctx.settings

    @classmethod
    def ops(cls) -> list[str]:
        """Every op this actor answers."""
        return list(cls._ops)

    @classmethod
    def declarations(cls) -> dict[str, OpSpec]:
        """Every op's declaration (arguments, reply, role, doc), by op name."""
        return dict(cls._ops)

    # -- lifecycle: override as needed ---------------------------------------------------------------

    async def on_start(self) -> None:
        """Acquire resources, load state, subscribe. Raising here counts as a crash."""

    async def on_stop(self) -> None:
        """Persist state and release resources; called on shutdown and before a restart."""

    def health(self) -> dict[str, Any]:
        """A fragment of ``/health`` in the seed's shape; numbers are summed across actors.

        For example ``{"ml_status": {"models_loaded": 3}}``.
        """
        return {}

    def metrics(self) -> dict[str, Any]:
        """A fragment of ``/metrics/ml``, merged like `health`."""
        return {}

    def counters(self) -> Mapping[str, float]:
        """Event counts of the actor's own (``{"bars": 1200, "drifts": 2}``), exported to Prometheus as
        ``mlp_actor_events{actor, event}``; read at each scrape, so keep it cheap."""
        return {}

    # -- live series sharded by symbol (`ml_processing.core.shards`): override where state is per symbol -

    def shard_symbols(self) -> Iterable[str]:
        """Every symbol this actor holds live state for."""
        return ()

    def shard_state(self, symbols: Sequence[str]) -> Mapping[str, Any]:
        """The live state of those of `symbols` held here, per symbol, as plain data (msgpack: numbers,
        strings, lists, maps, numpy arrays): it moves to the symbol's next owner and is saved there."""
        return {}

    def shard_drop(self, symbols: Sequence[str]) -> None:
        """Forget the live state of `symbols`: another process owns them now."""

    async def shard_load(self, states: Mapping[str, Any]) -> None:
        """Continue each symbol from the state `shard_state` gave for it (None: start it afresh, forgetting
        what is held). Called before this process handles the symbol's first message."""

    # -- bus verbs -----------------------------------------------------------------------------------

    def publish(self, topic: str, body: Any) -> None:
        """Publish on pub/sub; never blocks (a slow subscriber loses messages, counted)."""
        self.ctx.publish(topic, body)

    def subscribe(self, prefix: str, handler: Handler) -> None:
        """Call ``handler(topic, body)`` for every message whose topic starts with `prefix`."""
        self.ctx.subscribe(prefix, handler)

    def subscribe_batch(self, prefix: str, handler: Callable[[Messages], None]) -> None:
        """Call ``handler(messages)`` once per socket drain with every ``(topic, body)`` whose topic starts
        with `prefix`, in arrival order: per-drain work (lookups, the publish burst) is paid once. Handle
        each message as it is taken from `messages`: when one raises, that message alone is counted as
        rejected or failed (as with `subscribe`) and the handler is called again with the rest."""
        self.ctx.subscribe(prefix, Batched(handler))

    def unsubscribe(self, prefix: str, handler: Handler | Callable[[Messages], None]) -> None:
        """End a subscription made with `subscribe` or `subscribe_batch` (the same handler)."""
        self.ctx.unsubscribe(prefix, handler)

    async def request(self, service: str, op: str, args: dict[str, Any] | None = None, *,
                      timeout: float | None = None) -> Any:
        """Ask another service over the bus (a direct call when it lives in this process)."""
        return await self.ctx.request(service, op, args, timeout=timeout)

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str = "", *, for_message: bool = False
              ) -> asyncio.Task[Any]:
        """Run a background task; if it raises, the actor has crashed and is restarted. Work started on
        behalf of one request or message passes ``for_message=True``: its failure is logged and counted
        (``messages_failed``) and never restarts the actor."""
        return self.ctx.spawn(coro, name, for_message=for_message)

    @property
    def registries(self) -> Mapping[str, Mapping[str, Any]]:
        """What plugins registered through hooks, by kind then name (``registries["indicators"]["SMA"]``)."""
        return self.ctx.registries

    def cache(self, name: str, maxsize: int, ttl: float) -> Cache:
        """A bounded LRU cache with a lifetime, named in ``/metrics`` and ``/metrics/ml`` (hit rate)."""
        return self.ctx.make_cache(name, maxsize, ttl)

    def histogram(self, name: str, doc: str, labels: tuple[str, ...], buckets: tuple[float, ...]) -> Any:
        """A Prometheus histogram (``prometheus_client.Histogram``) exported in ``/metrics``."""
        if self.ctx.make_histogram is None:
            raise RuntimeError("this actor runs without a kernel: no metrics")
        return self.ctx.make_histogram(name, doc, labels, buckets)

    @property
    def clock(self) -> Clock:
        """The kernel's clock (``monotonic``, ``time``, ``sleep``): tests advance it instead of sleeping."""
        return self.ctx.clock

    async def run_in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        """Run GIL-releasing work (numpy, xgboost) on the kernel's thread pool, off the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self.ctx.executor, fn, *args)


async def _nothing() -> None:
    """`ActorContext.changed` of a process that serves its state alone."""
