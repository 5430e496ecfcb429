"""The OpenAPI 3.1 document, generated from the route table so it always describes what is served."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from ..errors import ERROR_CODES
from .routes import Route

OPENAPI_PATH = "/api/v1/openapi.json"

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {
        "code": {"type": "string", "enum": list(ERROR_CODES)},
        "message": {"type": "string"},
        "field": {"type": "string"},
    }}},
}

_ERROR_STATUSES = {"400": "bad request (the message names the field)",
                   "401": "authentication is on and the bearer token is missing or unknown",
                   "403": "the token's principal lacks the role the op declares",
                   "404": "unknown route, service op, or entity",
                   "413": "request too large", "503": "service unavailable (no live worker, unhealthy actor, shutting down)",
                   "504": "the service did not answer in time"}


def _error_schema(route: Route) -> dict[str, Any]:
    """The body of an error status: the Error object, or for a route with a protocol of its own, either that
    protocol's error or the Error object (the edge answers some errors before the op sees the request)."""
    ours = {"$ref": "#/components/schemas/Error"}
    if route.error_schema is None:
        return ours
    return {"anyOf": [dict(route.error_schema), ours]}


def _operation(route: Route) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": route.operation_id,
        "summary": route.summary,
        "tags": [route.tag],
        "description": f"Bus request: service `{route.service}`, op `{route.op}`.",
        "parameters": [
            {"name": name, "in": "path", "required": True,
             "schema": dict(route.params.get(name) or {"type": "string"})}
            for name in re.findall(r"{(\w+)}", route.path)
        ] + [
            {"name": name, "in": "query", "required": name in route.required_query,
             "schema": dict(route.params.get(name) or {"type": typ}), "description": desc}
            for name, typ, desc in route.query
        ] + [{"name": "X-Request-Id", "in": "header", "required": False, "schema": {"type": "string"},
              "description": "carried into the bus request and every log line; echoed in the reply"}],
        "responses": {
            "200": {"description": "OK", "content": _content(route)},
            **{status: {"description": text, "content": {"application/json": {"schema": _error_schema(route)}}}
               for status, text in _ERROR_STATUSES.items()},
        },
    }
    if route.has_body:
        schema = {"schema": route.request_schema or {"type": "object"}}
        op["requestBody"] = {"required": False, "content": {
            "application/json": schema, ("application/octet-stream" if route.content_type == "raw"
                                         else "application/msgpack"): schema}}
    return op


def _content(route: Route) -> dict[str, Any]:
    schema = {"schema": route.response_schema}
    if route.content_type == "text":
        return {"text/plain": schema}
    if route.content_type == "raw":  # the op's own format: JSON, or JSON followed by binary data
        return {"application/json": schema, "application/octet-stream": schema}
    return {"application/json": schema, "application/msgpack": schema}


def build_openapi(routes: Iterable[Route], *, title: str, version: str,
                  components: dict[str, Any] | None = None) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route)
    paths[OPENAPI_PATH] = {"get": {"operationId": "edge.openapi", "summary": "This document", "tags": ["edge"],
                                   "responses": {"200": {"description": "OpenAPI 3.1 document",
                                                         "content": {"application/json": {"schema": {"type": "object"}}}}}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version,
                 "description": "REST edge of ml-processing: every route is one request on the ZeroMQ bus "
                                "(docs/PROTOCOL.md)."},
        "paths": paths,
        "components": {"schemas": {**(components or {}), "Error": _ERROR}},
    }
