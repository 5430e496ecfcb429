"""The REST route table: every route is one bus request, described by a `Route`.

Every plugin declares its routes (the seed's included) through the ``register_routes`` hook; the kernel
fills each route's schemas from the op's declaration. The OpenAPI document is generated from the same
objects, so it cannot drift from what the app serves.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

OBJECT: dict[str, Any] = {"type": "object"}


@dataclass(frozen=True)
class Route:
    """One REST route translated to one bus request ``(service, op, args)``.

    ``args`` are built from the JSON body (an object) for POST/PUT/PATCH, then the path parameters, then
    the declared query parameters. ``content_type="text"`` sends a string result as text/plain (for
    Prometheus). ``content_type="raw"`` is for protocols with their own body format: the op gets the body
    as bytes (``args["body"]``), the request's ``content_type`` and ``headers`` (lowercase names), and
    returns ``{"body": bytes, "content_type"?, "status"?, "headers"?}``, sent as it is.
    """

    method: str
    path: str
    service: str
    op: str
    summary: str
    tag: str = "service"
    request_schema: dict[str, Any] | None = None
    response_schema: dict[str, Any] = field(default_factory=lambda: dict(OBJECT))
    query: tuple[tuple[str, str, str], ...] = ()  # (name, JSON type, description)
    content_type: str = "json"
    params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # path/query name -> JSON Schema
    required_query: frozenset[str] = frozenset()  # query parameters the op cannot do without
    error_schema: Mapping[str, Any] | None = None  # a protocol's own error body (raw routes); else the Error object

    @property
    def has_body(self) -> bool:
        return self.method in ("POST", "PUT", "PATCH")

    def param_type(self, name: str) -> str:
        """The JSON type of a path or query parameter (``string`` unless declared otherwise)."""
        schema = self.params.get(name)
        if schema is not None and isinstance(schema.get("type"), str):
            return str(schema["type"])
        for query_name, typ, _ in self.query:
            if query_name == name:
                return typ
        return "string"

    @property
    def operation_id(self) -> str:
        return f"{self.service}.{self.op}"


_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})


def check_route(route: Route) -> None:
    """Raise ValueError unless `route` can be served (method, absolute path, names)."""
    if route.method not in _METHODS:
        raise ValueError(f"route method {route.method!r} is not one of {', '.join(sorted(_METHODS))}")
    if not isinstance(route.path, str) or not route.path.startswith("/") or " " in route.path:
        raise ValueError(f"route path {route.path!r} must be an absolute URL path")
    if not route.service or not route.op:
        raise ValueError(f"route {route.method} {route.path} needs a service and an op")
