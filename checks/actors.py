"""The actor contract (`ml_processing.core.actor`, `ml_processing.core.ops`), checked on one actor.

* every op is declared: an `Args` structure, a reply type (not the undeclared ``Any``), a role of
  ``read``, ``compute``, ``admin`` or ``worker``, a one-line doc, and both types have a JSON Schema (the
  OpenAPI document is generated from them); ``needs`` names services;
* on a running kernel, every op answers arguments that are not a map, and unknown fields (unless it takes
  any map, `OpenArgs`), with an error the caller caused (``bad_request``, ...); an empty map and wrongly
  typed fields with such an error or a result; never ``internal``, never a timeout; the actor is still
  running afterwards and was never restarted.

`check_actor_declarations` needs only the class; `check_actor_answers` a started `Kernel`;
`check_services` starts one from a configuration (`ml_processing.checks.local_config`), checks the services
named and stops it. Each raises `AssertionError` with everything that was wrong.

>>> from ml_processing.sdk import Actor, Args, op
>>> class PingArgs(Args):
...     name: str = "desk"
>>> class Pinger(Actor):
...     name = "pinger"
...     @op(PingArgs, reply=str, role="read")
...     def handle_ping(self, args: PingArgs) -> str:
...         "Answer pong to a name."
...         return f"pong, {args.name}"
>>> check_actor_declarations(Pinger)
>>> class Sloppy(Actor):
...     name = "sloppy"
...     def handle_ping(self, args):
...         return "pong"
>>> check_actor_declarations(Sloppy)
Traceback (most recent call last):
...
AssertionError: actor 'sloppy': op 'ping' is not declared (decorate handle_ping with @op(Args, reply=..., role=...))
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import msgspec

from ml_processing.core.actor import Actor
from ml_processing.core.config import Config
from ml_processing.core.errors import MlpError, Timeout
from ml_processing.core.kernel import Kernel
from ml_processing.core.ops import ROLES, Args, OpenArgs, schemas
from ml_processing.core.supervisor import State

from .discovery import running

__all__ = ["GARBAGE", "check_actor_answers", "check_actor_declarations", "check_services"]

#: Arguments no op should take: what each one is, and whether every op must answer it with an error (an
#: unknown field is an error wherever the op declares its fields; an empty map may be all an op needs).
GARBAGE: tuple[tuple[str, Any, bool], ...] = (
    ("an empty map", {}, False),
    ("an unknown field", {"no_such_field": 1}, True),
    ("a nested unknown field", {"no_such_field": {"deeper": [1, None, True, "x"]}}, True),
    ("a list", [1, 2, 3], True),
    ("a string", "garbage", True),
    ("a number", 7, True),
    ("a boolean", True, True),
)
#: Values given to each declared field in turn (wrong for nearly every field).
WRONG_VALUES: tuple[Any, ...] = ({"nested": {"map": True}}, [[[]]], -(2**70))


def check_actor_declarations(actor: type[Actor]) -> None:
    """Every op of `actor` declared with an `Args` type, a reply type, a valid role and a doc."""
    assert isinstance(actor.name, str) and actor.name, f"{actor.__name__}: no service name"
    where = f"actor {actor.name!r}"
    assert isinstance(actor.needs, tuple) and all(isinstance(n, str) and n for n in actor.needs), (
        f"{where}: needs {actor.needs!r} is not a tuple of service names")
    problems = []
    for name, spec in sorted(actor.declarations().items()):
        if spec.args is None:
            problems.append(f"op {name!r} is not declared (decorate {spec.attr} with @op(Args, reply=..., role=...))")
            continue
        if not (isinstance(spec.args, type) and issubclass(spec.args, Args)):
            problems.append(f"op {name!r}: arguments {spec.args!r} are not an Args structure")
        if spec.reply is Any:
            problems.append(f"op {name!r}: no reply type (reply=...)")
        if spec.role not in ROLES:
            problems.append(f"op {name!r}: role {spec.role!r} is not one of {', '.join(ROLES)}")
        if not spec.doc:
            problems.append(f"op {name!r}: no doc (the first line of {spec.attr}'s docstring)")
        try:
            schemas([spec.args, spec.reply])
        except (TypeError, ValueError, NotImplementedError) as exc:
            problems.append(f"op {name!r}: no JSON Schema for its arguments or reply: {exc}")
    assert actor.declarations(), f"{where}: answers no op (no handle_<op> method)"
    assert not problems, f"{where}: " + "; ".join(problems)


def _arguments(args: type[Args] | None) -> list[tuple[str, Any, bool]]:
    """(what, arguments, must they be refused) for one op."""
    open_map = args is None or args is OpenArgs
    cases = [(what, value, refuse and (not open_map or not isinstance(value, dict))) for what, value, refuse in GARBAGE]
    fields = msgspec.structs.fields(args) if args is not None else ()
    for field in fields:
        cases += [(f"{field.encode_name}={value!r:.20}", {field.encode_name: value}, False) for value in WRONG_VALUES]
    return cases


async def check_actor_answers(kernel: Kernel, service: str, *, timeout: float = 10.0) -> None:
    """Send every op of `service` on the started `kernel` the garbage of this module: each is answered with a
    caller's error (an empty map or a wrongly typed field may also get a result), never ``internal`` or a
    timeout, and the actor keeps running without a restart."""
    cell = kernel.cells.get(service)
    assert cell is not None, f"no actor serves {service!r} (services: {', '.join(sorted(kernel.cells))})"
    assert cell.state == State.RUNNING, f"actor {service!r} is {cell.state} before the check: {cell.last_error}"
    restarts, internal = cell.restarts, cell.internal_errors
    problems = []
    for op_name, spec in sorted(cell.actor_cls.declarations().items()):
        for what, args, refuse in _arguments(spec.args):
            try:
                await kernel.request(service, op_name, args, timeout=timeout)
                if refuse:
                    problems.append(f"{op_name}({what}): answered with a result, not an error")
            except Timeout:
                problems.append(f"{op_name}({what}): no answer within {timeout:g} s")
            except MlpError as exc:
                if exc.code == "internal":
                    problems.append(f"{op_name}({what}): internal error: {exc.message:.160}")
    assert not problems, f"actor {service!r} failed on garbage arguments: " + "; ".join(problems)
    assert cell.state == State.RUNNING and cell.restarts == restarts, (
        f"actor {service!r} is {cell.state} after {cell.restarts - restarts} restarts: {cell.last_error}")
    assert cell.internal_errors == internal, f"actor {service!r} counted {cell.internal_errors - internal} internal errors"


def check_services(config: Config, services: Iterable[str] | None = None) -> None:
    """Start a kernel from `config`, run `check_actor_answers` on each of `services` (every actor but the
    kernel's own by default), and stop it. For tests without an event loop of their own."""

    async def run() -> None:
        async with running(config) as kernel:
            for service in services if services is not None else [n for n in kernel.cells if n != "kernel"]:
                await check_actor_answers(kernel, service)

    asyncio.run(run())
