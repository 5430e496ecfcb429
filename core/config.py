"""plugins.toml parsed into frozen config objects, with environment variables on top.

Precedence, lowest first: the defaults written in these classes (the *embedded defaults*, enough to run),
the TOML file, then the environment. Every section and key is checked: an unknown key, a wrong type or a
bad value raises `ConfigError` with one line naming the key and where it came from.

Environment overrides: ``MLP_<SECTION>_<KEY>`` for any key (``MLP_EDGE_PORT=8010``; lists comma
separated; ``MLP_PLUGINS_MODULES`` and ``MLP_PLUGINS_AUTOLOAD`` for ``[plugins]``), and the seed's names ``MODEL_CACHE_SIZE``, ``FEATURE_CACHE_TTL``, ``PREDICTION_CACHE_TTL``,
``LOG_LEVEL`` and ``ENV``. ``MLP_CONFIG`` names the file; ``MLP_DISABLE_AUTOLOAD=1`` turns off entry-point
plugin autoloading.

>>> cfg = load_config(None, environ={"MLP_EDGE_PORT": "9000", "LOG_LEVEL": "debug"})
>>> cfg.edge.port, cfg.service.log_level, cfg.source
(9000, 'debug', '<embedded defaults>')
>>> load_config(None, environ={"MLP_EDGE_PORT": "high"})
Traceback (most recent call last):
...
ml_processing.core.errors.ConfigError: environment MLP_EDGE_PORT: [edge] port: expected an integer, got 'high'
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

from .errors import ConfigError

T = TypeVar("T")

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


@dataclass(frozen=True)
class ServiceConfig:
    """``[service]``: identity, environment, logging and where state lives."""

    name: str = "ml-processing"
    env: str = "development"
    log_level: str = "info"
    log_json: bool | None = None  # None: JSON unless stderr is a terminal; production always JSON
    data_dir: str = "./var"

    def __post_init__(self) -> None:
        object.__setattr__(self, "log_level", self.log_level.lower())  # LOG_LEVEL=WARNING works too
        _check(self.log_level in LOG_LEVELS, f"log_level: must be one of {', '.join(LOG_LEVELS)}")
        _check(bool(self.name), "name: must not be empty")


@dataclass(frozen=True)
class BusConfig:
    """``[bus]``: ZeroMQ endpoints and MDP timing."""

    broker_bind: tuple[str, ...] = ("tcp://127.0.0.1:5555",)
    broker_connect: str = "tcp://127.0.0.1:5555"  # where `ml-processing worker` finds the broker
    pub_in: str = "tcp://127.0.0.1:5556"  # XSUB side of the proxy: feeds publish here
    pub_out: str = "tcp://127.0.0.1:5557"  # XPUB side: subscribers connect here
    heartbeat_ms: int = 2500
    liveness: int = 3
    request_timeout_ms: int = 10_000
    max_queue: int = 10_000
    hwm: int = 10_000
    max_message_mb: float = 256.0  # a peer sending a larger ZeroMQ frame is disconnected
    # where the serve process's pub/sub proxy runs: "loop" (on the event loop: the lowest latency when this
    # process handles every series), "thread" (ZeroMQ's own proxy outside the GIL: when other processes or
    # hosts handle part of them), "auto" (thread when [kernel] processes > 1)
    proxy: str = "auto"

    def __post_init__(self) -> None:
        for key, endpoints in (("broker_bind", self.broker_bind), ("broker_connect", (self.broker_connect,)),
                               ("pub_in", (self.pub_in,)), ("pub_out", (self.pub_out,))):
            for endpoint in endpoints:
                _check("://" in endpoint, f"{key}: {endpoint!r} is not a transport://address endpoint")
        _check(bool(self.broker_bind), "broker_bind: needs at least one endpoint")
        _check(self.heartbeat_ms >= 10, "heartbeat_ms: must be at least 10")
        _check(self.liveness >= 1, "liveness: must be at least 1")
        _check(self.request_timeout_ms >= 1, "request_timeout_ms: must be positive")
        _check(self.max_queue >= 1 and self.hwm >= 1, "max_queue and hwm: must be positive")
        _check(self.max_message_mb > 0, "max_message_mb: must be positive")
        _check(self.proxy in ("auto", "loop", "thread"), f"proxy: {self.proxy!r} is not one of auto, loop, thread")


@dataclass(frozen=True)
class EdgeConfig:
    """``[edge]``: the aiohttp REST edge."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 8006
    max_body_mb: float = 256.0
    access_log: bool = False
    header_timeout_s: float = 15.0  # a connection that sends no complete request header in this time is closed
    body_timeout_s: float = 60.0  # a request body still arriving after this long is answered 408

    def __post_init__(self) -> None:
        _check(0 <= self.port <= 65535, "port: must be 0-65535")
        _check(self.max_body_mb > 0, "max_body_mb: must be positive")
        _check(self.header_timeout_s > 0 and self.body_timeout_s > 0,
               "header_timeout_s and body_timeout_s: must be positive")


@dataclass(frozen=True)
class KernelConfig:
    """``[kernel]``: supervision, shutdown and the event loop."""

    drain_timeout_s: float = 10.0
    max_restarts: int = 5  # restart intensity: this many crashes ...
    restart_window_s: float = 60.0  # ... within this window mark an actor unhealthy
    backoff_initial_s: float = 0.1
    backoff_max_s: float = 5.0
    worker_concurrency: int = 1  # MDP worker connections per actor in `ml-processing worker`
    processes: int = 1  # `serve`: this process plus processes-1 worker processes (stateless ops spread over all)
    offload_after_us: float = 200.0  # with processes > 1: a stateless op costing more goes to an idle worker process
    shard_checkpoint_s: float = 30.0  # the state of symbols other processes own is saved this often (core/shards.py)
    shard_page: int = 32  # symbols whose state travels in one message when symbols move or are saved
    uvloop: bool = True
    threads: int = 2  # thread pool for GIL-releasing work (numpy, xgboost)
    retain_memory_mb: int = 256  # freed heap kept for reuse instead of returned to the OS (0: malloc's default)

    def __post_init__(self) -> None:
        _check(self.drain_timeout_s >= 0, "drain_timeout_s: must not be negative")
        _check(self.max_restarts >= 0, "max_restarts: must not be negative")
        _check(self.restart_window_s > 0, "restart_window_s: must be positive")
        _check(self.backoff_initial_s >= 0, "backoff_initial_s: must not be negative")
        _check(self.backoff_initial_s <= self.backoff_max_s,
               f"backoff_initial_s: must not exceed backoff_max_s ({self.backoff_max_s})")
        _check(self.worker_concurrency >= 1, "worker_concurrency: must be at least 1")
        _check(1 <= self.processes <= 256, "processes: must be between 1 and 256")
        _check(self.offload_after_us >= 0, "offload_after_us: must not be negative")
        _check(self.shard_checkpoint_s > 0, "shard_checkpoint_s: must be positive")
        _check(1 <= self.shard_page <= 100_000, "shard_page: must be between 1 and 100,000")
        _check(self.threads >= 1, "threads: must be at least 1")
        _check(self.retain_memory_mb >= 0, "retain_memory_mb: must not be negative")


@dataclass(frozen=True)
class CacheConfig:
    """``[cache]``: sizes and lifetimes of the model, prediction and feature caches."""

    model_cache_size: int = 5000  # MODEL_CACHE_SIZE
    feature_cache_ttl: float = 1800.0  # FEATURE_CACHE_TTL, seconds
    prediction_cache_ttl: float = 300.0  # PREDICTION_CACHE_TTL, seconds
    feature_cache_size: int = 256  # feature matrices kept (each up to a request's size)

    def __post_init__(self) -> None:
        _check(self.model_cache_size >= 0, "model_cache_size: must not be negative")
        _check(self.feature_cache_size >= 0, "feature_cache_size: must not be negative")
        _check(self.feature_cache_ttl >= 0, "feature_cache_ttl: must not be negative")
        _check(self.prediction_cache_ttl >= 0, "prediction_cache_ttl: must not be negative")


@dataclass(frozen=True)
class SecurityConfig:
    """``[security]``: who may do what (docs/SECURITY.md)."""

    auth: bool = False  # bearer tokens on REST, CURVE keys on ZeroMQ, each op's role checked
    allow_insecure: bool = False  # serve a non-loopback address with auth off (refused otherwise)
    public_routes: tuple[str, ...] = ("/health",)  # REST paths answered without a token (add "/metrics")
    directory: str = "security"  # under [service] data_dir: tokens.json, server.key, clients.json
    bootstrap_admin: bool = False  # first start with no token: create an admin token, print it once
    tls_cert: str = ""  # PEM certificate chain of the REST edge; with tls_key, the edge speaks HTTPS
    tls_key: str = ""
    audit: bool = True  # every state-changing op: one fsynced line in <data_dir>/audit.log
    client_keys: str = ""  # worker mode with auth on: the key file `ml-processing keys client` wrote

    def __post_init__(self) -> None:
        _check(bool(self.tls_cert) == bool(self.tls_key), "tls_cert and tls_key: set both or neither")
        _check(all(p.startswith("/") for p in self.public_routes), "public_routes: absolute paths such as /health")
        _check(bool(self.directory), "directory: must not be empty")


@dataclass(frozen=True)
class PluginSection:
    """``[plugins.NAME]``: ``enabled`` plus the plugin's own keys (checked against its config class)."""

    enabled: bool = True
    options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class PluginsConfig:
    """``[plugins]``: where plugins come from."""

    autoload: bool = True  # entry points of the group `ml_processing`
    modules: tuple[str, ...] = ()  # extra plugin modules by import path
    sections: Mapping[str, PluginSection] = field(default_factory=lambda: MappingProxyType({}))

    def enabled(self, name: str) -> bool:
        section = self.sections.get(name)
        return section is None or section.enabled


@dataclass(frozen=True)
class Config:
    service: ServiceConfig = field(default_factory=ServiceConfig)
    bus: BusConfig = field(default_factory=BusConfig)
    edge: EdgeConfig = field(default_factory=EdgeConfig)
    kernel: KernelConfig = field(default_factory=KernelConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    security: SecurityConfig = field(default_factory=SecurityConfig)
    plugins: PluginsConfig = field(default_factory=PluginsConfig)
    source: str = "<embedded defaults>"

    @property
    def data_path(self) -> Path:
        return Path(self.service.data_dir)


_SECTIONS: dict[str, type[Any]] = {
    "service": ServiceConfig,
    "bus": BusConfig,
    "edge": EdgeConfig,
    "kernel": KernelConfig,
    "cache": CacheConfig,
    "security": SecurityConfig,
}

#: The seed's environment variables, and the key each overrides.
SEED_ENV = {
    "MODEL_CACHE_SIZE": ("cache", "model_cache_size"),
    "FEATURE_CACHE_TTL": ("cache", "feature_cache_ttl"),
    "PREDICTION_CACHE_TTL": ("cache", "prediction_cache_ttl"),
    "LOG_LEVEL": ("service", "log_level"),
    "ENV": ("service", "env"),
}


def _coerce(value: Any, hint: Any, *, from_env: bool) -> Any:
    """Check (and, for environment strings, parse) `value` against a field's type hint."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None or (from_env and value.lower() in ("", "none", "auto")):
            return None
        return _coerce(value, options[0], from_env=from_env)
    if hint is bool:
        if from_env:
            lowered = value.lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(f"expected a boolean, got {value!r}")
        if not isinstance(value, bool):
            raise ValueError(f"expected a boolean, got {value!r}")
        return value
    if hint is int:
        if from_env:
            try:
                return int(value)
            except ValueError:
                raise ValueError(f"expected an integer, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected an integer, got {value!r}")
        return value
    if hint is float:
        if from_env:
            try:
                return float(value)
            except ValueError:
                raise ValueError(f"expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ValueError(f"expected a string, got {value!r}")
        return value
    if origin is dict or hint is dict:
        if from_env or not isinstance(value, Mapping):
            raise ValueError(f"expected a table, got {value!r:.60}")
        return dict(value)
    if origin is tuple:
        if from_env:
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"expected a list, got {value!r}")
        (item,) = typing.get_args(hint)[:1]
        return tuple(_coerce(v, item, from_env=False) for v in value)
    raise ValueError(f"unsupported field type {hint!r}")


def build_section(cls: type[T], table: Mapping[str, Any], where: str, section: str,
                  *, from_env: bool = False) -> T:
    """Build a frozen config object from a table, rejecting unknown keys, wrong types and bad values.

    Used for the kernel's sections and for every plugin's config class alike.
    """
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where}: [{section}] must be a table, got {type(table).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values: dict[str, Any] = {}
    for key, raw in table.items():
        if key not in names:
            raise ConfigError(f"{where}: [{section}] {key!r}: unknown key (known: {', '.join(sorted(names))})")
        try:
            values[key] = _coerce(raw, hints[key], from_env=from_env)
        except ValueError as exc:
            raise ConfigError(f"{where}: [{section}] {key}: {exc}") from None
    try:
        return cls(**values)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{where}: [{section}] {exc}") from None


def _env_overrides(environ: Mapping[str, str]) -> dict[tuple[str, str], tuple[str, str]]:
    """(section, key) -> (value, variable name) for every override present in the environment."""
    found: dict[tuple[str, str], tuple[str, str]] = {}
    for var, target in SEED_ENV.items():
        if var in environ:
            found[target] = (environ[var], var)
    for var, value in environ.items():
        if not var.startswith("MLP_") or var in ("MLP_CONFIG", "MLP_DISABLE_AUTOLOAD"):
            continue
        rest = var[4:].lower()
        section = next((s for s in _SECTIONS if rest.startswith(s + "_")), None)
        if section is None:
            if rest in ("plugins_modules", "plugins_autoload"):
                continue  # applied to [plugins] by load_config
            if rest.startswith("plugins_"):
                raise ConfigError(f"environment {var}: [plugins] unknown key (known: MLP_PLUGINS_MODULES, "
                                  "MLP_PLUGINS_AUTOLOAD; plugin options belong in plugins.toml)")
            raise ConfigError(f"environment {var}: unknown section (known: {', '.join(_SECTIONS)})")
        found[(section, rest[len(section) + 1:])] = (value, var)
    return found


def _plugins_section(table: Any, where: str) -> PluginsConfig:
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where}: [plugins] must be a table")
    autoload = table.get("autoload", True)
    modules = table.get("modules", [])
    if not isinstance(autoload, bool):
        raise ConfigError(f"{where}: [plugins] autoload: expected a boolean, got {autoload!r}")
    if not isinstance(modules, list) or not all(isinstance(m, str) and m for m in modules):
        raise ConfigError(f"{where}: [plugins] modules: expected a list of module paths, got {modules!r}")
    sections: dict[str, PluginSection] = {}
    for name, sub in table.items():
        if name in ("autoload", "modules"):
            continue
        if not isinstance(sub, Mapping):
            raise ConfigError(f"{where}: [plugins] {name}: unknown key (plugin sections are tables "
                              f"[plugins.{name}]; keys are autoload, modules)")
        enabled = sub.get("enabled", True)
        if not isinstance(enabled, bool):
            raise ConfigError(f"{where}: [plugins.{name}] enabled: expected a boolean, got {enabled!r}")
        options = MappingProxyType({k: v for k, v in sub.items() if k != "enabled"})
        sections[name] = PluginSection(enabled, options)
    return PluginsConfig(autoload, tuple(modules), MappingProxyType(sections))


def load_config(path: str | os.PathLike[str] | None = None, *,
                environ: Mapping[str, str] | None = None) -> Config:
    """Read `path` (or ``MLP_CONFIG``, or nothing: the embedded defaults) and apply the environment."""
    env = os.environ if environ is None else environ
    if path is None and env.get("MLP_CONFIG"):
        path = env["MLP_CONFIG"]
    data: dict[str, Any] = {}
    where = "<embedded defaults>"
    if path is not None:
        where = str(path)
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"{where}: file not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{where}: not valid TOML: {exc}") from None
    for key in data:
        if key not in _SECTIONS and key != "plugins":
            raise ConfigError(f"{where}: [{key}]: unknown section (known: {', '.join([*_SECTIONS, 'plugins'])})")
    tables: dict[str, dict[str, Any]] = {}
    for name in _SECTIONS:
        table = data.get(name, {})
        if not isinstance(table, Mapping):
            raise ConfigError(f"{where}: [{name}] must be a table, got {type(table).__name__}")
        tables[name] = dict(table)
    overridden: dict[str, list[str]] = {}
    for (section, key), (value, var) in _env_overrides(env).items():
        hints = typing.get_type_hints(_SECTIONS[section])
        if key not in hints:
            raise ConfigError(f"environment {var}: [{section}] {key!r}: unknown key "
                              f"(known: {', '.join(sorted(hints))})")
        try:
            tables[section][key] = _coerce(value, hints[key], from_env=True)
        except ValueError as exc:
            raise ConfigError(f"environment {var}: [{section}] {key}: {exc}") from None
        overridden.setdefault(section, []).append(var)
    sections = {}
    for name, cls in _SECTIONS.items():
        origin = where if name not in overridden else f"{where} + environment {', '.join(overridden[name])}"
        sections[name] = build_section(cls, tables[name], origin, name)
    plugins = _plugins_section(data.get("plugins", {}), where)
    if "MLP_PLUGINS_MODULES" in env:
        modules = _coerce(env["MLP_PLUGINS_MODULES"], tuple[str, ...], from_env=True)
        plugins = dataclasses.replace(plugins, modules=modules)
    if "MLP_PLUGINS_AUTOLOAD" in env:
        try:
            autoload = _coerce(env["MLP_PLUGINS_AUTOLOAD"], bool, from_env=True)
        except ValueError as exc:
            raise ConfigError(f"environment MLP_PLUGINS_AUTOLOAD: [plugins] autoload: {exc}") from None
        plugins = dataclasses.replace(plugins, autoload=autoload)
    if env.get("MLP_DISABLE_AUTOLOAD", "").lower() in ("1", "true", "yes", "on"):
        plugins = dataclasses.replace(plugins, autoload=False)
    return Config(**sections, plugins=plugins, source=where)
