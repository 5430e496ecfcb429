"""One declaration per operation: its arguments, its reply, the role it needs, one line of documentation.

An actor's handler declares its op with `op`::

    class ComputeArgs(Args):
        close: Floats
        timeperiod: Int32 = 14

    class Indicators(Actor):
        name = "indicators"

        @op(ComputeArgs, reply=ComputeReply, role="compute")
        def handle_compute(self, args: ComputeArgs) -> dict[str, Any]:
            "Compute indicators over columns of bars."

That one declaration checks every request, whichever transport brought it (REST, MDP, the in-process
bus), before the handler runs: the handler receives a typed, validated `Args` instance. The same
declaration generates the OpenAPI document, the reference tables in docs/ and the role check.

Validation is msgspec's (`msgspec.convert`): types are exact (a bool is not a number, a string is not an
integer), unknown fields are refused, integers are bounded to the C type they are handed to, and an
error names the field (``timeperiod``, ``close[7]``). Types msgspec does not know (a column that arrives
as a list or as an ndarray) are taught with `register_type`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar, get_args

import msgspec
import msgspec.inspect

from .errors import BadRequest

__all__ = [
    "ROLES",
    "Args",
    "Int32",
    "Int64",
    "NoArgs",
    "NonNegInt",
    "OpSpec",
    "OpenArgs",
    "PositiveInt",
    "Role",
    "convert",
    "op",
    "register_type",
    "schema_hook",
]

Role = Literal["read", "compute", "admin", "worker"]
ROLES: tuple[str, ...] = get_args(Role)

#: Integers handed to C code: bounded to the C type, so an overflow is a 400 naming the field.
Int32 = Annotated[int, msgspec.Meta(ge=-(2**31), le=2**31 - 1)]
Int64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
PositiveInt = Annotated[int, msgspec.Meta(ge=1, le=2**31 - 1)]
NonNegInt = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]

F = TypeVar("F", bound=Callable[..., Any])


class Args(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Base of every op's argument structure: unknown fields are refused, instances are immutable."""


class NoArgs(Args, frozen=True):
    """The arguments of an op that takes none."""


class OpenArgs(Args, forbid_unknown_fields=False, frozen=True):
    """The arguments of an op that takes any map (an echo, a relay): its handler receives the map as sent.
    Declare named fields wherever the arguments are known."""


@dataclass(frozen=True)
class OpSpec:
    """What an op declares; `ml_processing.core.actor.Actor` collects one per ``handle_<op>``."""

    name: str
    attr: str
    args: type[Args] | None  # None: the handler takes the raw map (ops written before declarations)
    reply: Any
    role: str
    doc: str
    spread: bool = False  # stateless: with several processes, any of them may answer it
    shard: str | None = None  # the field naming the symbol whose live state it reads or changes: its owner answers

    def decode(self, raw: Any) -> Any:
        """The handler's argument: `raw` checked against the declaration (a `BadRequest` naming the field)."""
        if self.args is None or self.args is OpenArgs:
            if raw is None and self.args is OpenArgs:
                return {}
            if not isinstance(raw, dict):
                raise BadRequest("'args' must be a map", field="args")
            return raw
        try:  # `convert` written out: this runs for every request
            raw = raw if raw is not None else {}
            if self.hooked:
                return msgspec.convert(raw, self.args, dec_hook=_dec_hook)
            return msgspec.convert(raw, self.args)  # without keywords: about a quarter of the call's cost
        except _REFUSED as exc:
            raise _refused(exc, self.args) from None

    @functools.cached_property
    def hooked(self) -> bool:
        """Whether `args` may hold a type msgspec does not know (`_hooked`), decided at the first request."""
        return _hooked(self.args)

    def params(self) -> dict[str, Any]:
        """Field name -> type, for transports that carry some arguments as strings (URL path and query)."""
        if self.args is None:
            return {}
        return {f.encode_name: f.type for f in msgspec.structs.fields(self.args)}


def op(args: type[Args] = NoArgs, *, reply: Any = Any, role: Role = "compute",
       doc: str | None = None, spread: bool = False, shard: str | None = None) -> Callable[[F], F]:
    """Declare the op of a ``handle_<op>`` method: its `Args` structure, its reply type and its role.

    `doc` defaults to the first line of the handler's docstring. `spread` says the answer depends only on
    the arguments and on state every process holds (models, pipelines): with ``serve --processes N`` the
    broker may hand it to any process; every other op is answered by the process that owns the state.
    `shard` names the argument holding the symbol whose live state the op reads or changes: with live
    series sharded over processes (`ml_processing.core.shards`) the symbol's owner answers it, and, when
    the argument is absent, every process does and their replies are merged (``"*"``: always so).
    """
    if spread and shard:
        raise ValueError("an op is either stateless (spread) or bound to a symbol's live state (shard)")
    if spread and role == "admin":
        raise ValueError("an admin op changes state: it cannot be spread over processes")
    if role not in ROLES:
        raise ValueError(f"role {role!r} is not one of {', '.join(ROLES)}")
    if not (isinstance(args, type) and issubclass(args, Args)):
        raise TypeError(f"op arguments must be an Args subclass, not {args!r}")

    def mark(fn: F) -> F:
        if shard not in (None, "*") and shard not in {f.encode_name for f in msgspec.structs.fields(args)}:
            raise TypeError(f"shard={shard!r} names no argument of {args.__name__}")
        fn.__mlp_op__ = (args, reply, role, doc, spread, shard)  # type: ignore[attr-defined]
        return fn

    return mark


def spec_of(name: str, attr: str, fn: Callable[..., Any]) -> OpSpec:
    """The `OpSpec` of a handler (an undeclared one takes a map, returns anything, needs ``admin``)."""
    declared = getattr(fn, "__mlp_op__", None)
    lines = (fn.__doc__ or "").strip().splitlines()
    first = lines[0].strip() if lines else ""
    if declared is None:
        return OpSpec(name, attr, None, Any, "admin", first)
    args, reply, role, doc, spread, shard = declared
    return OpSpec(name, attr, args, reply, role, doc if doc is not None else first, spread, shard)


# -- decoding -------------------------------------------------------------------------------------------


#: Types msgspec does not know, by class: (decode(value) -> instance, JSON Schema). See `register_type`.
_TYPES: dict[type, tuple[Callable[[Any], Any], dict[str, Any]]] = {}


def register_type(type_: type, decode: Callable[[Any], Any], schema: dict[str, Any]) -> None:
    """Teach the declarations a type msgspec does not know (the SDK's columns: `numpy.ndarray`).

    `decode` turns a decoded msgpack/JSON value into an instance, raising `ValueError` with a message
    that may start with an element index (``"[7]: expected a number"``) to name the element."""
    _TYPES[type_] = (decode, schema)


def _hooked(type_: Any) -> bool:
    """Whether converting to `type_` may meet a type msgspec does not know (`register_type`), so
    `msgspec.convert` needs `_dec_hook`. Without it the call takes no keyword arguments, and msgspec's
    argument parsing, which is most of the cost of converting a small map, goes (callgrind: about 2,800
    instructions per request). `convert` is strict by default.

    >>> class Column(Args, frozen=True):
    ...     values: list[complex] | None = None  # a type msgspec does not know
    >>> _hooked(NoArgs), _hooked(Column)
    (False, True)
    """
    try:
        return _walk_hooked(type_)
    except Exception:  # unhashable, or not resolvable here: `msgspec.convert` with the hook decides
        return True


@functools.cache
def _walk_hooked(type_: Any) -> bool:
    seen: set[int] = set()
    stack: list[Any] = [msgspec.inspect.type_info(type_)]
    while stack:
        node = stack.pop()
        if isinstance(node, msgspec.inspect.CustomType):
            return True
        if id(node) in seen or not isinstance(node, (msgspec.Struct, tuple)):
            continue
        seen.add(id(node))  # a recursive structure refers back to a node already walked
        stack.extend(node if isinstance(node, tuple) else (getattr(node, f) for f in node.__struct_fields__))
    return False


def _dec_hook(type_: type, value: Any) -> Any:
    known = _TYPES.get(type_)
    if known is None:
        raise NotImplementedError(f"no decoder for {type_!r}")
    return known[0](value)


_PATH = re.compile(r" - at `\$(.*)`$")
_LEADING_FIELD = re.compile(r"^((?:\[\d+\])|(?:[A-Za-z_]\w*(?:\[\d+\])?))(?:: | )")


def field_of(error: msgspec.ValidationError) -> tuple[str, str]:
    """``(message, field)`` of a msgspec error: ``$.bars[3].close`` becomes ``bars[3].close``."""
    text = str(error)
    match = _PATH.search(text)
    message = text[:match.start()] if match else text
    where = match.group(1).lstrip(".").replace("[...]", "") if match else ""
    leading = _LEADING_FIELD.match(message)
    if leading is not None and (leading.group(1).startswith("[") or message[leading.end(1)] == ":"):
        # a decoder or __post_init__ named the element or field: "[7]: ..." or "volume[3]: ..."
        name = leading.group(1)
        where = f"{where}{name}" if name.startswith("[") else (f"{where}.{name}" if where else name)
        message = message[leading.end():]
    where = where or "args"
    if message.startswith("Object contains unknown field"):
        unknown = message.split("`")[1] if "`" in message else ""
        return f"unknown field {unknown!r}", f"{where}.{unknown}" if where != "args" else unknown or "args"
    if message.startswith("Object missing required field"):
        missing = message.split("`")[1] if "`" in message else ""
        return f"'{missing}' is required", f"{where}.{missing}" if where != "args" else missing or "args"
    return message, where


def convert(raw: Any, type_: Any, *, strict: bool = True) -> Any:
    """`raw` (decoded msgpack or JSON) as `type_`, or a `BadRequest` naming the field."""
    try:
        if strict and not _hooked(type_):
            return msgspec.convert(raw, type_)
        return msgspec.convert(raw, type_, strict=strict, dec_hook=_dec_hook)
    except _REFUSED as exc:
        raise _refused(exc, type_) from None


#: What `msgspec.convert` raises for arguments that do not match a declaration (anything else propagates).
_REFUSED = (msgspec.ValidationError, RecursionError, IndexError, KeyError, TypeError, ValueError, OverflowError)


def _refused(exc: BaseException, type_: Any) -> BadRequest:
    """The `BadRequest` for one of `_REFUSED`, naming the field."""
    if isinstance(exc, msgspec.ValidationError):
        message, where = field_of(exc)
        if message.startswith("Invalid enum value"):
            allowed = _choices(type_, where)
            if allowed:
                message += f" (one of {', '.join(repr(v) for v in allowed)})"
        return BadRequest(f"{where}: {message}" if where != "args" else message, field=where)
    if isinstance(exc, RecursionError):
        return BadRequest("arguments nest too deeply", field="args")
    # msgspec raises the others for a value it cannot read as the declared type (an ndarray where a
    # structure is declared, say): the sender's fault, never a crash
    return BadRequest(f"arguments do not match the declaration ({type(exc).__name__}: {exc})"[:300], field="args")


_STEP = re.compile(r"\.?([A-Za-z_]\w*)|\[(\d+)\]")


def _choices(type_: Any, where: str) -> list[Any]:
    """The values a Literal or Enum field at `where` (``steps[2].nan``) allows; [] when not found."""
    info: Any = msgspec.inspect.type_info(type_)
    for name, index in _STEP.findall(where):
        while isinstance(info, msgspec.inspect.UnionType):
            info = next((t for t in info.types if not isinstance(t, msgspec.inspect.NoneType)), None)
        if name and isinstance(info, msgspec.inspect.StructType):
            info = next((f.type for f in info.fields if f.encode_name == name), None)
        elif index and isinstance(info, (msgspec.inspect.ListType, msgspec.inspect.TupleType)):
            info = getattr(info, "item_type", None)
        elif name and isinstance(info, msgspec.inspect.DictType):
            info = info.value_type
        else:
            return []
    while isinstance(info, msgspec.inspect.UnionType):
        info = next((t for t in info.types if isinstance(t, (msgspec.inspect.LiteralType, msgspec.inspect.EnumType))),
                    None)
    if isinstance(info, msgspec.inspect.LiteralType):
        return list(info.values)
    if isinstance(info, msgspec.inspect.EnumType):
        return [member.value for member in info.cls]
    return []


# -- schemas --------------------------------------------------------------------------------------------


def schema_hook(type_: type) -> dict[str, Any]:
    """JSON Schema of the types taught with `register_type`, for `msgspec.json.schema`."""
    known = _TYPES.get(type_)
    if known is None:
        raise NotImplementedError(f"no schema for {type_!r}")
    return dict(known[1])


def schemas(types: list[Any], ref_template: str = "#/components/schemas/{name}"
            ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """JSON Schemas of `types` (``Any`` is the empty schema) and the components they refer to."""
    found, components = msgspec.json.schema_components(types, schema_hook=schema_hook, ref_template=ref_template)
    return list(found), components
