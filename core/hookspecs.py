"""Every hook of ml-processing, in one place, grouped by lifecycle phase.

Hooks are synchronous and only *register* things; everything that waits happens in actors on the bus.
A plugin implements any subset with ``@hookimpl`` (from this module) and is found through the entry-point
group ``ml_processing``, a module path in ``[plugins] modules``, or the built-in list.

Order of calls at start-up: ``register_hookspecs`` (as each plugin registers), ``register_config_schemas``
(so the kernel can check ``[plugins.NAME]``), ``register_registries`` and the registry hooks they name
(the SDK's: ``register_indicators``, ``register_feature_extractors``, ``register_model_kinds``,
``register_patterns``, ``register_sentiment_analyzers``, in `ml_processing.sdk.hookspecs`), then
``register_routes`` and ``register_actors``. ``register_commands`` is called by the command line.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from ml_processing.bus.edge.routes import Route

    from .actor import Actor
    from .config import Config

PROJECT = "ml_processing"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# -- phase 1: configuration -----------------------------------------------------------------------------


@hookspec
def register_config_schemas() -> Mapping[str, type[Any]]:
    """Declare the frozen dataclass that checks a plugin's ``[plugins.NAME]`` section.

    :return: ``{NAME: ConfigClass}``. Keys of the section other than ``enabled`` are checked against the
        class exactly like the kernel's own sections (unknown key, wrong type, bad value: start-up
        stops with one line naming the key). Actors read the built object as ``self.config``.
    """
    raise NotImplementedError


# -- phase 2: hooks and registries that other layers declare ------------------------------------------------


@hookspec
def register_hookspecs() -> Iterable[object]:
    """Declare more hooks (modules or classes of ``@hookspec`` functions), as pytest's ``pytest_addhooks``.

    Called right after the plugin registers, before any later plugin does, so later plugins may implement
    the new hooks. The SDK declares the registry hooks this way (``register_indicators``, ...); the
    kernel itself knows no plugin kind.

    :return: hookspec modules or classes to add to the plugin manager.
    """
    raise NotImplementedError


@hookspec
def register_registries() -> Mapping[str, tuple[str, type[Any]]]:
    """Declare shared registries that hooks fill: ``{KIND: (HOOK, BASE_CLASS)}``.

    The kernel calls ``HOOK`` on every plugin, checks that each returned item is an instance of
    ``BASE_CLASS`` with a unique ``name``, and hands the table to every actor as
    ``ctx.registries[KIND][NAME]``.

    :return: ``{KIND: (HOOK, BASE_CLASS)}``; a kind already declared by another plugin, or a hook no
        plugin declared, marks this plugin broken.
    """
    raise NotImplementedError


@hookspec
def register_commands() -> Iterable[Any]:
    """Add subcommands to the ``ml-processing`` command (as Datasette's ``register_commands``).

    :return: `ml_processing.core.cli.Command` objects: a name, a one-line help, a function that adds the
        command's arguments to its argparse parser, and the function that runs it and returns the exit code.
    """
    raise NotImplementedError


# -- phase 3: what runs -----------------------------------------------------------------------------------


@hookspec
def register_actors(settings: Config) -> Iterable[type[Actor]]:
    """Return the actor classes this plugin runs; each becomes the bus service ``Actor.name``.

    :param settings: the whole configuration (read-only), for plugins that register actors conditionally.
    :return: actor classes (subclasses of `ml_processing.core.actor.Actor`), constructed and supervised
        by the kernel, one instance per process.
    """
    raise NotImplementedError


@hookspec
def register_routes() -> Iterable[Route]:
    """Return REST routes (`ml_processing.bus.edge.routes.Route`) that translate to this plugin's ops.

    :return: routes; each is one bus request, documented in the OpenAPI document automatically. A route
        whose method and path are already taken is refused and the plugin reported as broken.
    """
    raise NotImplementedError
