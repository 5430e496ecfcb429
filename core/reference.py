"""docs/OPS.md, generated from the op declarations of every built-in service (a test keeps it true)::

    python -m ml_processing.core.reference > docs/OPS.md

For each service: its ops with the role each needs, the REST route that calls it, its arguments (name,
type, default) and its reply, all read from the same declarations that check every request.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from .ops import OpSpec, schemas

HEADER = """# Operations

Every operation of every built-in service, generated from the op declarations that check each request
(`python -m ml_processing.core.reference > docs/OPS.md`; a test fails when this file is out of date). Call an
op over ZeroMQ as `{"op": NAME, "args": {...}}` to the service (docs/PROTOCOL.md), or through its REST route.
Arguments are exact: a boolean is not a number, a string is not an integer, unknown fields are refused,
integers handed to C code are bounded; an error names the field. Roles: `read` (health, metrics, lists,
gets), `compute` (predictions and computations that change nothing), `admin` (everything that changes
state). "Answered by", with several processes or worker hosts (docs/OPERATIONS.md, "Processes"): `any`
process (stateless), the serve process, the `owner` of the symbol named (with no symbol: every process,
replies merged), or `every` process with replies merged.
"""


def _type(schema: Mapping[str, Any], components: Mapping[str, Any]) -> str:
    """A short type name of a JSON Schema."""
    if "$ref" in schema:
        return str(schema["$ref"]).rsplit("/", 1)[-1]
    if "anyOf" in schema:
        return " or ".join(_type(s, components) for s in schema["anyOf"])
    if "enum" in schema:
        return " / ".join(f"`{v}`" for v in schema["enum"])
    kind = schema.get("type")
    if isinstance(kind, list):
        return " or ".join(str(k) for k in kind)
    if kind == "array":
        items = schema.get("items")
        return f"list of {_type(items, components)}" if isinstance(items, Mapping) and items else "list"
    if kind == "object":
        values = schema.get("additionalProperties")
        if isinstance(values, Mapping) and values:
            return f"map of {_type(values, components)}"
        return "map"
    if kind == "integer" and ("minimum" in schema or "maximum" in schema):
        return f"integer [{schema.get('minimum', '')}, {schema.get('maximum', '')}]"
    return str(kind) if kind else "any"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _where(spec: OpSpec) -> str:
    """Which process answers the op when there are several (docs/OPERATIONS.md, "Processes")."""
    if spec.spread:
        return "any"
    if spec.shard == "*":
        return "every, merged"
    if spec.shard:
        return f"owner of `{spec.shard}`"
    return "serve"


def render(actors: list[tuple[str, dict[str, OpSpec]]], routes: Mapping[tuple[str, str], list[str]]) -> str:
    """The markdown of `actors` (service name, its declarations) and the REST routes of each op."""
    types: list[Any] = []
    for _, specs in actors:
        for spec in specs.values():
            if spec.args is not None:
                types += [spec.args, spec.reply]
    generated, components = schemas(types, "#/components/schemas/{name}") if types else ([], {})
    out = [HEADER]
    n = 0
    for service, specs in actors:
        out.append(f"\n## `{service}`\n\n| op | role | answered by | REST | reply | what it does |\n"
                   "|---|---|---|---|---|---|")
        documented = []
        for name, spec in sorted(specs.items()):
            rest = "<br>".join(f"`{r}`" for r in routes.get((service, name), [])) or ""
            reply = "undeclared"
            if spec.args is not None:
                args = components.get(spec.args.__name__, generated[n])
                reply = _type(generated[n + 1], components)
                if args.get("properties"):
                    documented.append((name, spec, args))
                n += 2
            out.append(f"| `{name}` | {spec.role} | {_where(spec)} | {rest} | {_cell(reply)} | {_cell(spec.doc)} |")
        for name, spec, args in documented:
            required = set(args.get("required", []))
            out.append(f"\n### `{service}.{name}`\n\n{_cell(spec.doc)}\n\n| argument | type | default |\n|---|---|---|")
            for field, schema in args["properties"].items():
                default = "required" if field in required else f"`{schema.get('default')!r}`"
                out.append(f"| `{field}` | {_cell(_type(schema, components))} | {default} |")
    return "\n".join(out) + "\n"


def main() -> int:
    from . import log
    from .config import load_config
    from .kernel import Kernel

    log.configure("warning")
    kernel = Kernel(load_config(None, environ={"MLP_DISABLE_AUTOLOAD": "1"}))
    try:
        actors = kernel.discover()
        routes: dict[tuple[str, str], list[str]] = {}
        for route in kernel.routes:
            routes.setdefault((route.service, route.op), []).append(f"{route.method} {route.path}")
        sys.stdout.write(render([(cls.name, cls.declarations()) for _, cls in actors], routes))
    finally:
        kernel.executor.shutdown(wait=False)
        kernel.context.destroy(linger=0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
