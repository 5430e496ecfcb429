"""What the plugins bring, collected and checked: registries, REST routes and actors.

Every hook result is checked here; a malformed one (not the declared type, a name already taken, a hook
that raises) marks its plugin broken, is reported by name, and the service runs without it.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from ml_processing.bus.edge.routes import Route, check_route

from .actor import Actor
from .config import Config
from .errors import PluginError
from .plugins import PluginHost

#: Service names only the built-in kernel plugin may serve.
RESERVED_SERVICES = frozenset({"kernel"})


def collect_registries(plugins: PluginHost) -> dict[str, Mapping[str, Any]]:
    """Every registry the plugins declare (``register_registries``), filled by its hook; a plugin whose
    entries are unusable or taken is reported broken and its entries left out."""
    registries: dict[str, Mapping[str, Any]] = {}
    kinds: dict[str, tuple[str, type[Any]]] = {}
    for plugin, declared in plugins.call_each("register_registries"):
        try:
            for kind, (hook, base) in dict(declared).items():
                if kind in kinds or not isinstance(base, type) or not hasattr(plugins.pm.hook, hook):
                    raise PluginError(f"registry {kind!r} is taken, or its hook {hook!r} is not declared")
                kinds[kind] = (hook, base)
        except Exception as exc:  # a malformed hook result is the plugin's fault, never fatal
            plugins.mark_broken(plugin, exc.message if isinstance(exc, PluginError) else
                                f"register_registries returned something unusable: {exc}")
    for kind, (hook, base) in kinds.items():
        table: dict[str, Any] = {}
        owners: dict[str, str] = {}
        for plugin, items in plugins.call_each(hook):
            try:
                found = {}
                for item in list(items):
                    if not isinstance(item, base):
                        raise PluginError(f"{hook} returned {item!r:.100}, not an instance of {base.__name__}")
                    if item.name in table or item.name in found:
                        raise PluginError(f"{kind} {item.name!r} is already registered by plugin "
                                          f"{owners.get(item.name, plugin)!r}")
                    found[item.name] = item
            except Exception as exc:  # a malformed hook result is the plugin's fault, never fatal
                plugins.mark_broken(plugin, exc.message if isinstance(exc, PluginError) else
                                    f"{hook} returned something unusable: {exc}")
                continue
            table.update(found)
            owners.update(dict.fromkeys(found, plugin))
        registries[kind] = MappingProxyType(table)
    return registries

def collect_actors(plugins: PluginHost, config: Config, mode: str) -> list[tuple[str, type[Actor]]]:
    """(plugin, actor class) of every actor the plugins run; a malformed answer marks its plugin broken."""
    found: list[tuple[str, type[Actor]]] = []
    names: dict[str, str] = {}
    for plugin, classes in plugins.call_each("register_actors", settings=config):
        if plugins.infos[plugin].error:
            continue
        try:
            checked = []
            for cls in list(classes):
                if not (isinstance(cls, type) and issubclass(cls, Actor)):
                    raise PluginError(f"register_actors returned {cls!r:.100}, not an Actor subclass")
                if not isinstance(cls.name, str) or not cls.name or cls.name.startswith("mmi."):
                    raise PluginError(f"actor {cls.__name__} needs a service name (not mmi.*)")
                if cls.name in RESERVED_SERVICES and plugins.infos[plugin].source != "builtin":
                    raise PluginError(f"service name {cls.name!r} is reserved for the kernel")
                if cls.name in names:
                    raise PluginError(f"service {cls.name!r} is already served by plugin {names[cls.name]!r}")
                if mode == "worker" and cls.name in RESERVED_SERVICES:
                    continue  # the broker's process answers for the kernel
                checked.append(cls)
        except Exception as exc:  # a malformed hook result is the plugin's fault, never fatal
            plugins.mark_broken(plugin, exc.message if isinstance(exc, PluginError) else
                                f"register_actors returned something unusable: {exc}")
            continue
        for cls in checked:
            names[cls.name] = plugin
            found.append((plugin, cls))
            plugins.infos[plugin].actors.append(cls.name)
    return found

def collect_routes(plugins: PluginHost) -> list[Route]:
    """Every route the plugins declare; a taken or malformed one marks its plugin broken."""
    table: list[Route] = []
    taken: set[tuple[str, str]] = set()
    for plugin, routes in plugins.call_each("register_routes"):
        added: list[Route] = []
        try:
            for route in list(routes):
                if not isinstance(route, Route):
                    raise PluginError(f"register_routes returned {route!r:.100}, not a Route")
                check_route(route)
                key = (route.method, route.path)
                if key in taken:
                    raise PluginError(f"route {route.method} {route.path} is already taken")
                added.append(route)
        except Exception as exc:  # a malformed hook result is the plugin's fault, never fatal
            plugins.mark_broken(plugin, exc.message if isinstance(exc, PluginError) else
                                f"register_routes returned something unusable: {exc}")
            continue
        taken.update((r.method, r.path) for r in added)
        table.extend(added)
        plugins.infos[plugin].routes.extend(f"{r.method} {r.path}" for r in added)
    return table
