"""Subcommands that plugins add to ``ml-processing`` through the ``register_commands`` hook.

A plugin that owns a behaviour also owns its command, as Datasette's ``register_commands`` does: it
returns `Command` objects and the CLI adds each one as a subcommand next to ``serve``, ``worker`` and
``plugins`` (each gets ``--config`` too). ``run`` receives the parsed arguments and the configuration the
CLI loaded (``--config``, ``MLP_CONFIG``, the environment) and returns the exit code, or a coroutine that
the CLI runs on the configured event loop (uvloop when ``[kernel] uvloop``) and whose result is the exit
code.

>>> import argparse
>>> def add_arguments(parser): parser.add_argument("--name", default="world")
>>> def run(args, config): print(f"hello, {args.name}"); return 0
>>> hello = Command("hello", "say hello", add_arguments, run)
>>> parser = argparse.ArgumentParser(prog="ml-processing hello")
>>> hello.add_arguments(parser)
>>> hello.run(parser.parse_args(["--name", "you"]), None)
hello, you
0
>>> Command("Hello!", "shout", add_arguments, run)
Traceback (most recent call last):
...
ValueError: command name 'Hello!' is not lowercase letters, digits and dashes
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from .config import LOG_LEVELS

#: What a command's ``run`` returns: the exit code, or an awaitable of it.
Outcome = int | Awaitable[int]

NAME = re.compile(r"^[a-z][a-z0-9-]{0,39}$")


@dataclass(frozen=True)
class Command:
    """One ``ml-processing NAME`` subcommand."""

    name: str  # lowercase letters, digits and dashes: ``replay``
    help: str  # one line, in ``ml-processing --help``
    add_arguments: Callable[[argparse.ArgumentParser], None]  # its options (``--config`` is added for it)
    run: Callable[[argparse.Namespace, Any], Outcome]  # (arguments, Config) -> exit code or awaitable
    description: str = ""  # ``ml-processing NAME --help``; the help line when empty
    log_level: str | None = None  # the least level the service's log shows while it runs (None: configured)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not NAME.match(self.name):
            raise ValueError(f"command name {self.name!r} is not lowercase letters, digits and dashes")
        if not callable(self.add_arguments) or not callable(self.run):
            raise ValueError(f"command {self.name!r}: add_arguments and run must be callables")
        if self.log_level is not None and self.log_level not in LOG_LEVELS:
            raise ValueError(f"command {self.name!r}: log_level must be one of {', '.join(LOG_LEVELS)}")
