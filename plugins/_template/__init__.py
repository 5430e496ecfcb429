"""A runnable plugin to copy: one actor (``echo``), one config class, one route, the three hooks.

Copy this folder into your own package, rename it, and point an entry point at it::

    [project.entry-points.ml_processing]
    my_plugin = "my_package.my_plugin"

or list it in plugins.toml (``[plugins] modules = ["my_package.my_plugin"]``). docs/PLUGINS.md walks
through each part. The math belongs in plain synchronous functions with doctests, like `greet`; the actor
only wires it to the bus.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ml_processing.bus import topics
from ml_processing.sdk import Actor, BadRequest, Config, Route, hookimpl


@dataclass(frozen=True)
class TemplateConfig:
    """``[plugins._template]`` in plugins.toml."""

    greeting: str = "pong"

    def __post_init__(self) -> None:
        if not self.greeting:
            raise ValueError("greeting: must not be empty")


def greet(greeting: str, name: str | None) -> str:
    """The plugin's pure logic.

    >>> greet("hello", "desk")
    'hello, desk'
    >>> greet("pong", None)
    'pong'
    """
    return f"{greeting}, {name}" if name else greeting


class Echo(Actor):
    """Service ``echo``: ``ping``, ``echo`` (returns its args), ``stats``; counts bars it sees."""

    name = "echo"

    async def on_start(self) -> None:
        self.bars = 0
        self.subscribe(topics.BAR + ".", self.on_bar)

    def on_bar(self, topic: str, body: Any) -> None:
        self.bars += 1

    def handle_ping(self, args: dict[str, Any]) -> str:
        name = args.get("name")
        if name is not None and not isinstance(name, str):
            raise BadRequest("'name' must be a string", field="name")
        return greet(self.config.greeting, name)

    def handle_echo(self, args: dict[str, Any]) -> dict[str, Any]:
        return args

    def handle_stats(self, args: dict[str, Any]) -> dict[str, int]:
        return {"bars": self.bars}


@hookimpl
def register_config_schemas() -> dict[str, type]:
    return {"_template": TemplateConfig}


@hookimpl
def register_actors(settings: Config) -> list[type[Actor]]:
    return [Echo]


@hookimpl
def register_routes() -> list[Route]:
    return [Route("POST", "/api/v1/echo", "echo", "echo", "Echo the request body (template plugin)", "template",
                  request_schema={"type": "object"})]
