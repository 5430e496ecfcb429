"""A plugin package to copy: an indicator (the common case) and a tiny service with a route (the rarer one).

The folder is a complete package: ``pyproject.toml`` installs it as ``mlp_template`` and names its two
plugins in the entry-point group ``ml_processing``; ``tests/`` runs the contract checks ml-processing ships
over a real kernel with the package installed. Copy it, rename it, install it, run its tests::

    cp -r plugins/_template ~/src/acme-signals && cd ~/src/acme-signals
    # rename in pyproject.toml: [project] name, the package (mlp_template), the entry points;
    # in tests/test_template.py: DISTRIBUTION
    pip install -e . && pytest

* `indicators` (plugin ``template_indicators``): the ``CLOSE_LOCATION`` indicator, its math with doctests,
  registered through ``register_indicators``. Patterns, feature extractors, model kinds and sentiment
  analysers are written the same way (docs/PLUGINS.md).
* this module (plugin ``_template``): the ``echo`` service, for a plugin that needs its own ops: a frozen
  config class (``[plugins._template]`` in plugins.toml), an actor whose ops are declared with `op`
  (arguments, reply, role, doc), and a REST route to one of them.

Everything is imported from ``ml_processing.sdk``, the only module a plugin imports. The project's tests
also load this module by its path (``[plugins] modules = ["ml_processing.plugins._template"]``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ml_processing.sdk import Actor, Args, Config, OpenArgs, Route, hookimpl, op


@dataclass(frozen=True)
class TemplateConfig:
    """``[plugins._template]`` in plugins.toml: checked at start-up like the kernel's own sections."""

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


class PingArgs(Args):
    """What ``ping`` takes: every request is checked against this before the handler runs."""

    name: str | None = None


class Echo(Actor):
    """Service ``echo``: ``ping`` answers a greeting, ``echo`` returns its arguments."""

    name = "echo"

    @op(PingArgs, reply=str, role="read")
    def handle_ping(self, args: PingArgs) -> str:
        "Answer the configured greeting, to a name when one is given."
        return greet(self.config.greeting, args.name)

    @op(OpenArgs, reply=dict[str, Any], role="read")
    def handle_echo(self, args: dict[str, Any]) -> dict[str, Any]:
        "Return the arguments as they were sent."
        return args


@hookimpl
def register_config_schemas() -> dict[str, type]:
    return {"_template": TemplateConfig}


@hookimpl
def register_actors(settings: Config) -> list[type[Actor]]:
    return [Echo]


@hookimpl
def register_routes() -> list[Route]:
    return [Route("POST", "/api/v1/echo", "echo", "echo", "Echo the request body (template plugin)", "template")]
