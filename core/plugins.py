"""Plugin discovery, registration and validation on a pluggy `PluginManager`.

Three sources, registered the same way: the built-in plugins (module paths in `BUILTIN_PLUGINS`), the
entry-point group ``ml_processing`` (off with ``MLP_DISABLE_AUTOLOAD=1`` or ``[plugins] autoload =
false``), and ``[plugins] modules``. ``[plugins.NAME] enabled = false`` blocks a plugin by name.

A plugin that fails to import, implements a hook that does not exist, has a hook signature that does not
match its spec, or raises while registering is unregistered, logged by name and listed as broken; the
service starts without it.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, cast

import pluggy

from . import hookspecs
from .config import Config, build_section
from .errors import ConfigError, PluginError
from .log import get_logger

log = get_logger(__name__)

ENTRY_POINT_GROUP = hookspecs.PROJECT

#: Built-in plugins, by module path (imported by name, exactly like a module listed in plugins.toml).
BUILTIN_PLUGINS: tuple[tuple[str, str], ...] = (
    ("kernel", "ml_processing.core.system"),
    ("sdk", "ml_processing.sdk.registries"),
    ("indicators", "ml_processing.plugins.indicators"),
    ("features", "ml_processing.plugins.features"),
    ("models", "ml_processing.plugins.models"),
    ("patterns", "ml_processing.plugins.patterns"),
    ("sentiment", "ml_processing.plugins.sentiment"),
    ("replay", "ml_processing.plugins.replay"),
)


@dataclass
class PluginInfo:
    """What `ml-processing plugins` and ``/api/v1/plugins`` report about one plugin."""

    name: str
    source: str  # "builtin", "entrypoint (DIST VERSION)" or "config"
    module: str
    enabled: bool = True
    hooks: list[str] = field(default_factory=list)
    actors: list[str] = field(default_factory=list)
    routes: list[str] = field(default_factory=list)
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "source": self.source, "module": self.module, "enabled": self.enabled,
                "hooks": self.hooks, "actors": self.actors, "routes": self.routes, "error": self.error,
                "status": "disabled" if not self.enabled else ("broken" if self.error else "loaded")}


class PluginHost:
    """Owns the `PluginManager`; finds, registers and validates plugins; calls hooks plugin by plugin."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}
        self.plugin_configs: dict[str, Any] = {}

    # -- discovery ----------------------------------------------------------------------------------

    def load(self) -> None:
        """Register every plugin from every source, then build and check their config sections."""
        for name, module in BUILTIN_PLUGINS:
            self._add(name, "builtin", module, lambda m=module: importlib.import_module(m))
        if self.config.plugins.autoload:
            for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
                dist = f"{ep.dist.name} {ep.dist.version}" if ep.dist is not None else "?"
                self._add(ep.name, f"entrypoint ({dist})", ep.value, ep.load)
        for module in self.config.plugins.modules:
            self._add(module.rsplit(".", 1)[-1], "config", module, lambda m=module: importlib.import_module(m))
        self._build_configs()

    def _add(self, name: str, source: str, module: str, loader: Any) -> None:
        if name in self.infos:
            if self.infos[name].module != module:
                log.warning("plugin_name_taken", plugin=name, module=module, kept=self.infos[name].module)
            return
        info = self.infos[name] = PluginInfo(name, source, module)
        if not self.config.plugins.enabled(name):
            info.enabled = False
            self.pm.set_blocked(name)
            log.info("plugin_disabled", plugin=name)
            return
        try:
            plugin: ModuleType | object = loader()
        except Exception as exc:
            self._broken(info, f"import failed: {type(exc).__name__}: {exc}")
            return
        try:
            self.pm.register(plugin, name=name)
            self._add_hookspecs(name)
            self._check_hooks(name, plugin)
        except Exception as exc:  # pluggy's PluginValidationError, or ours
            if self.pm.get_plugin(name) is not None:
                self.pm.unregister(name=name)
            self._broken(info, f"invalid: {exc}")
            return
        info.hooks = sorted(caller.name for caller in self.pm.get_hookcallers(plugin) or ())
        log.debug("plugin_registered", plugin=name, source=source, hooks=info.hooks)

    def _add_hookspecs(self, name: str) -> None:
        """Add the hooks a plugin declares (``register_hookspecs``) before any later plugin registers."""
        for impl in self.pm.hook.register_hookspecs.get_hookimpls():
            if impl.plugin_name == name:
                declared = cast("Iterable[ModuleType | type] | None", impl.function())
                for specs in declared or ():
                    self.pm.add_hookspecs(specs)

    def _check_hooks(self, name: str, plugin: object) -> None:
        """Refuse hook implementations without a spec (pluggy only notices them in check_pending)."""
        for caller in self.pm.get_hookcallers(plugin) or ():
            if not caller.has_spec():
                raise PluginError(f"implements unknown hook {caller.name!r}")

    def _broken(self, info: PluginInfo, error: str) -> None:
        info.error = error
        log.error("plugin_broken", plugin=info.name, module=info.module, source=info.source, error=error)

    def _build_configs(self) -> None:
        schemas: dict[str, type[Any]] = {}
        for plugin, result in self.call_each("register_config_schemas"):
            if not isinstance(result, Mapping) or not all(
                    isinstance(k, str) and dataclasses.is_dataclass(v) and isinstance(v, type)
                    for k, v in result.items()):
                self.mark_broken(plugin, f"register_config_schemas must return {{name: dataclass}}, got {result!r:.100}")
                continue
            taken = [k for k in result if k in schemas]
            if taken:
                self.mark_broken(plugin, f"config section(s) {', '.join(taken)} already declared by another plugin")
                continue
            schemas.update(result)
        for section_name, section in self.config.plugins.sections.items():
            where = self.config.source
            cls = schemas.get(section_name)
            if cls is None:
                known = self.infos.get(section_name)
                if section.options and known is not None and known.enabled and not known.error:
                    raise ConfigError(f"{where}: [plugins.{section_name}] {next(iter(section.options))}: "
                                      f"unknown key (plugin {section_name!r} declares no options)")
                if known is None and section.enabled and section.options:
                    log.warning("plugin_section_unused", section=f"plugins.{section_name}",
                                reason="no plugin of that name is installed")
                continue
            self.plugin_configs[section_name] = build_section(cls, section.options, where,
                                                              f"plugins.{section_name}")
        for section_name, cls in schemas.items():
            if section_name not in self.plugin_configs:
                self.plugin_configs[section_name] = build_section(cls, {}, self.config.source,
                                                                  f"plugins.{section_name}")

    # -- calling hooks ------------------------------------------------------------------------------

    def call_each(self, hook: str, **kwargs: Any) -> Iterator[tuple[str, Any]]:
        """Call `hook` on each plugin separately, in registration order (built-ins first, then entry points,
        then ``[plugins] modules``); one that raises is reported as broken, the others go on."""
        caller = getattr(self.pm.hook, hook)
        order = {name: i for i, name in enumerate(self.infos)}
        for impl in sorted(caller.get_hookimpls(), key=lambda impl: order.get(impl.plugin_name, len(order))):
            name = impl.plugin_name
            try:
                result = impl.function(*[kwargs[arg] for arg in impl.argnames])
            except Exception as exc:
                info = self.infos.get(name)
                if info is not None:
                    self._broken(info, f"{hook} raised {type(exc).__name__}: {exc}")
                    self.pm.unregister(name=name)
                continue
            if result is not None:
                yield name, result

    def mark_broken(self, name: str, error: str) -> None:
        info = self.infos.get(name)
        if info is not None and info.error is None:
            self._broken(info, error)
            if self.pm.get_plugin(name) is not None:
                self.pm.unregister(name=name)

    def report(self) -> list[dict[str, Any]]:
        return [info.as_dict() for info in self.infos.values()]
