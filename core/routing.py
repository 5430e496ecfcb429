"""REST routes described by the ops they call: each route's body, parameters and reply schemas come from
the op's declaration (`ml_processing.core.ops`), so the OpenAPI document cannot drift from what is checked.

A POST/PUT/PATCH route's body is the op's `Args` without the fields its URL carries; a GET/DELETE route's
query parameters are every `Args` field its path does not carry. Path and query values arrive as strings;
the edge reads each as the JSON type declared here (``integer``, ``number``, ``boolean``).
"""

from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Iterable, Mapping
from typing import Any

from ml_processing.bus.edge.routes import Route

from .ops import OpSpec, schemas

_PATH_PARAM = re.compile(r"{(\w+)}")
REF = "#/components/schemas/{name}"


def _resolve(schema: Mapping[str, Any], components: Mapping[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
        return copy.deepcopy(components[ref.rsplit("/", 1)[1]])
    return copy.deepcopy(dict(schema))


def _without(schema: dict[str, Any], names: set[str]) -> dict[str, Any]:
    properties = schema.get("properties")
    if isinstance(properties, dict):
        for name in names:
            properties.pop(name, None)
    if isinstance(schema.get("required"), list):
        schema["required"] = [n for n in schema["required"] if n not in names]
        if not schema["required"]:
            del schema["required"]
    return schema


def _not_null(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema of an optional parameter (``anyOf: [X, null]``) as X: an absent parameter is the null."""
    options = schema.get("anyOf")
    if isinstance(options, list):
        kept = [o for o in options if o != {"type": "null"}]
        if len(kept) == 1:
            rest = {k: v for k, v in schema.items() if k != "anyOf" and not (k == "default" and v is None)}
            return {**rest, **kept[0]}
    return schema


def describe(routes: Iterable[Route], specs: Mapping[tuple[str, str], OpSpec]
             ) -> tuple[list[Route], dict[str, Any]]:
    """`routes` with their schemas and parameters filled from `specs` (keyed by service and op), and the
    schema components they refer to. Routes of undeclared ops are returned as they are."""
    table = list(routes)
    declared = [(i, specs[(r.service, r.op)]) for i, r in enumerate(table)
                if (r.service, r.op) in specs and specs[(r.service, r.op)].args is not None]
    types: list[Any] = []
    for _, spec in declared:
        types += [spec.args, spec.reply]
    generated, components = schemas(types, REF) if types else ([], {})
    for n, (i, spec) in enumerate(declared):
        route = table[i]
        args_schema = _resolve(generated[2 * n], components)
        properties: dict[str, Any] = args_schema.get("properties", {})
        in_path = set(_PATH_PARAM.findall(route.path))
        descriptions = {name: desc for name, _, desc in route.query}
        if route.has_body:
            query_names = [name for name, _, _ in route.query]
        else:
            query_names = [name for name in properties if name not in in_path]
        params = {name: _not_null(properties.get(name, {"type": "string"})) for name in [*in_path, *query_names]}
        query = tuple((name, str(params[name].get("type", "string")),
                       descriptions.get(name) or str(params[name].get("description", "")))
                      for name in query_names)
        required = set(args_schema.get("required", []))
        changes: dict[str, Any] = {"params": params, "query": query, "summary": route.summary or spec.doc,
                                   "required_query": frozenset(n for n in query_names if n in required)}
        if route.content_type == "json":
            changes["response_schema"] = generated[2 * n + 1]
        if route.has_body and route.content_type != "raw":
            changes["request_schema"] = _without(args_schema, in_path | set(query_names))
        table[i] = dataclasses.replace(route, **changes)
    return table, components
