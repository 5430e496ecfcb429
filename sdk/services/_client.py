"""The base of the typed service clients: a service name and the actor's ``request`` verb."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import cache
from typing import Any

import msgspec

from ml_processing.core.ops import Args

Request = Callable[..., Awaitable[Any]]


class ServiceClient:
    """Calls one service's ops with their declared `Args`; subclasses add one method per op."""

    service = ""

    def __init__(self, request: Request, *, timeout: float | None = None) -> None:
        self._request = request
        self._timeout = timeout

    async def call(self, op: str, args: Args) -> Any:
        """Send `args` (checked on construction) as the op's argument map."""
        return await self._request(self.service, op, _as_map(args), timeout=self._timeout)


def _as_map(args: Args) -> dict[str, Any]:
    """The fields that differ from their defaults (arrays and nested values as they are)."""
    out = {}
    for name, encode_name, default in _fields(type(args)):
        value = getattr(args, name)
        if default is not msgspec.NODEFAULT and value is default:
            continue
        out[encode_name] = value
    return out


@cache
def _fields(cls: type[Args]) -> tuple[tuple[str, str, Any], ...]:
    """``(name, encode_name, default)`` of each field of `cls`, read once: `msgspec.structs.fields` resolves
    the type annotations on every call (about a millisecond), a cost each typed request would pay."""
    return tuple((f.name, f.encode_name, f.default) for f in msgspec.structs.fields(cls))
