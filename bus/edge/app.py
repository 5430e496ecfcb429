"""The aiohttp app factory: a generic handler per `Route`, one error middleware, request ids, limits.

The edge is a bus client: it holds a *requester* (the in-process broker, or an `AsyncClient` to a remote
one) and turns each HTTP request into one bus request. It imports nothing of the kernel.

Limits against clients that are slow or lie (docs/PROTOCOL.md section 5):

* ``header_timeout``: a connection must deliver a complete request header within this many seconds of
  opening, or of the end of the previous response (so it is the keep-alive idle limit too); past it the
  connection is closed. aiohttp's server enforces it as its ``keepalive_timeout``: serve the app with
  `create_runner`, which passes it on.
* ``body_timeout``: a body must have arrived whole within this many seconds of the handler starting to read
  it, or the request is answered 408 (``timeout``) and the connection closed.
* ``max_body_bytes``: a declared ``Content-Length`` above it is answered 413 (``too_large``) before any of
  the body is read (also instead of ``100 Continue``); a chunked body is cut off once it passes the limit.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
import structlog
from aiohttp import HttpVersion11, web

from .. import codec
from ..errors import (
    BadRequest,
    CodecError,
    InternalError,
    MlpError,
    NotFound,
    Timeout,
    TooLarge,
    Unauthorized,
)
from .auth import CHALLENGE, Authenticator, bearer
from .openapi import OPENAPI_PATH, build_openapi
from .routes import Route

log = structlog.get_logger(__name__)

_PROMETHEUS = "text/plain; version=0.0.4; charset=utf-8"
# Binary bodies for clients that move arrays: msgpack with the bus codec's ndarray extension type
# (docs/PROTOCOL.md section 3), asked for by Content-Type (request) and Accept (reply). Errors stay JSON.
MSGPACK = "application/msgpack"
_MSGPACK_TYPES = frozenset({MSGPACK, "application/x-msgpack", "application/vnd.msgpack"})


class Requester(Protocol):
    async def request(self, service: str, op: str, args: dict[str, Any] | None = None, *,
                      rid: str | None = None, timeout: float | None = None, principal: Any = None) -> Any: ...


@dataclass
class EdgeStats:
    requests: int = 0
    by_status: dict[int, int] = field(default_factory=dict)


REQUESTER = web.AppKey("requester", Requester)
ROUTES = web.AppKey("routes", list)
STATS = web.AppKey("stats", EdgeStats)
OPENAPI = web.AppKey("openapi", dict)
MAX_BODY = web.AppKey("max_body", int)
HEADER_TIMEOUT = web.AppKey("header_timeout", float)
BODY_TIMEOUT = web.AppKey("body_timeout", float)

#: Defaults of `create_app`: seconds for a complete request header, and for a whole body.
DEFAULT_HEADER_TIMEOUT = 15.0
DEFAULT_BODY_TIMEOUT = 60.0

_rid_prefix = os.urandom(4).hex()
_rid_counter = itertools.count(1)


def _json(data: Any, status: int = 200, rid: str | None = None) -> web.Response:
    headers = {"X-Request-Id": rid} if rid else None
    return web.Response(body=codec.encode_json(data), status=status, content_type="application/json",
                        headers=headers)


#: Replies at least this large go out as two writes, the header and then the body as it is; smaller ones
#: as one (on Python < 3.12.9 aiohttp joins header and body into a new bytes object: a copy of the body).
LARGE_REPLY = 64 * 1024


async def _reply(request: web.Request, body: bytes, content_type: str, rid: str) -> web.StreamResponse:
    """A 200 response with `body`, written without a copy when it is large."""
    if len(body) < LARGE_REPLY:
        return web.Response(body=body, content_type=content_type, headers={"X-Request-Id": rid})
    response = web.StreamResponse(headers={"X-Request-Id": rid})
    response.content_type = content_type
    response.content_length = len(body)
    try:
        await response.prepare(request)
        await response.write(body)
        await response.write_eof()
    except ConnectionResetError:  # the client left before it had the reply: nothing more to tell it
        log.info("edge_client_gone", path=request.path, rid=rid, bytes=len(body))
    return response


def wants_msgpack(request: web.Request) -> bool:
    """Does the client accept msgpack (``Accept: application/msgpack``, the JSON default otherwise)?"""
    accept = request.headers.get("Accept", "")
    return "msgpack" in accept and any(part.split(";")[0].strip() in _MSGPACK_TYPES for part in accept.split(","))


#: Bodies at least this large are parsed on a thread. The parsers (simdjson, orjson, msgpack) hold the GIL
#: while they run, so the loop waits out the parse itself either way (about 1 ms per MB of JSON columns);
#: the thread lets it serve during the Python work around the parse.
LARGE_BODY = 1 << 20


def _decode_body(request: web.Request, raw: bytes, columns: frozenset[str]) -> Any:
    if request.content_type in _MSGPACK_TYPES:
        try:
            return codec.unpackb(raw)
        except CodecError as exc:
            raise BadRequest(f"request body is not valid msgpack: {exc.message}", field="body") from None
    try:
        return codec.decode_json(raw, columns)
    except CodecError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc.message}", field="body") from None


def json_columns(schema: dict[str, Any] | None) -> frozenset[str]:
    """The top-level body fields a route reads as columns: arrays whose items are doubles
    (``{"type": "array", "items": {"format": "double", ...}}``, alone or in an ``anyOf``). A large JSON
    body hands them to the op as float64 ndarrays (`codec.decode_json`), as msgpack does with the
    ndarray extension type."""
    found = set()
    for name, field_schema in ((schema or {}).get("properties") or {}).items():
        options = [field_schema, *field_schema.get("anyOf", ())] if isinstance(field_schema, dict) else []
        if any(isinstance(o, dict) and o.get("type") == "array" and isinstance(o.get("items"), dict)
               and o["items"].get("format") == "double" for o in options):
            found.add(name)
    return frozenset(found)


def error_response(exc: MlpError, rid: str | None = None) -> web.Response:
    response = _json({"error": exc.to_wire()}, exc.http_status, rid)
    if isinstance(exc, Unauthorized):
        response.headers["WWW-Authenticate"] = CHALLENGE
    return response


_HTTP_ERRORS: dict[int, type[MlpError]] = {404: NotFound, 413: TooLarge}
_MAX_JSON_DEPTH = 250  # orjson writes at most 254 levels; deeper input is refused, not failed on the way out


def new_request_id() -> str:
    return f"{_rid_prefix}-{next(_rid_counter)}"


def _depth_exceeds(value: Any, limit: int) -> bool:
    """Whether `value` nests lists/maps deeper than `limit` (iterative: no recursion limit to hit)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return False


class BodyTimeout(Timeout):
    """The request body did not arrive in time (HTTP 408; the wire code stays ``timeout``)."""

    http_status = 408


def _declared_too_large(request: web.Request) -> web.Response | None:
    """A 413 for a declared ``Content-Length`` above the limit, before any of the body is read; else None.

    The response closes the connection: the body it refused is never read, so the connection cannot carry
    another request."""
    length = request.content_length
    limit = request.app[MAX_BODY]
    if length is None or length <= limit:
        return None
    rid = request.headers.get("X-Request-Id") or new_request_id()
    response = error_response(TooLarge(f"request body larger than the limit of {limit} bytes "
                                       f"(Content-Length: {length})"), rid)
    response.force_close()
    return response


async def _read_body(request: web.Request) -> bytes:
    """The whole body, within the app's body timeout (a body already received costs no timer)."""
    if request.content.is_eof():
        return await _read_all(request)
    seconds = request.app[BODY_TIMEOUT]
    try:
        async with asyncio.timeout(seconds):
            return await _read_all(request)
    except TimeoutError:
        raise BodyTimeout(f"request body not received within {seconds:g} s", field="body") from None


async def _read_all(request: web.Request) -> bytes:
    """The body as one bytes object. A body of declared length, sent as it is (no ``Content-Encoding`` or
    ``Transfer-Encoding``), is joined once from the chunks the connection received, taken as they are;
    aiohttp's `read` copies it twice more (into a growing bytearray, then out of it), and its `readexactly`
    joins twice, a millisecond per few MB of columns. The declared length is within the limit already
    (`_declared_too_large`)."""
    length = request.content_length
    if length is None or "Content-Encoding" in request.headers or "Transfer-Encoding" in request.headers:
        return await request.read()
    chunks: list[bytes] = []
    received = 0
    while received < length:
        chunk, _ = await request.content.readchunk()  # a received chunk, not a copy
        if not chunk:
            raise BadRequest(f"request body ended after {received} of its {length} bytes (Content-Length)",
                             field="body")
        chunks.append(chunk)
        received += len(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)  # (no chunk: an empty body, b"")


async def _expect_handler(request: web.Request) -> web.Response | None:
    """``Expect: 100-continue``: refuse a declared length above the limit instead of asking for the body."""
    refused = _declared_too_large(request)
    if refused is not None:
        stats = request.app[STATS]
        stats.requests += 1
        stats.by_status[413] = stats.by_status.get(413, 0) + 1
        return refused
    if request.version == HttpVersion11:  # as aiohttp's own expect handler
        expect = request.headers.get("Expect", "")
        if expect.lower() != "100-continue":
            raise web.HTTPExpectationFailed(text=f"Unknown Expect: {expect}")
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # the response proper has not started
    return None


@web.middleware
async def error_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Count responses; map HTTP errors (unknown route, wrong method, too large) and bugs to JSON errors.

    Route handlers map `MlpError` themselves, so the common error path costs no exception here.
    """
    stats = request.app[STATS]
    stats.requests += 1
    try:
        refused = _declared_too_large(request)  # (a response is a mapping: never test it for truth)
        response: web.StreamResponse = await handler(request) if refused is None else refused
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        rid = request.headers.get("X-Request-Id") or new_request_id()
        cls = _HTTP_ERRORS.get(exc.status, BadRequest)
        message = exc.reason
        if exc.status == 413:
            message = f"request body larger than the limit of {request.app[MAX_BODY]} bytes"
        elif exc.status == 405:
            message = f"method {request.method} not allowed on {request.path}"
        elif exc.status == 404:
            message = f"no route {request.method} {request.path} (see {OPENAPI_PATH})"
        response = _json({"error": {"code": cls.code, "message": message}}, exc.status, rid)
    except MlpError as exc:
        response = error_response(exc, request.headers.get("X-Request-Id") or new_request_id())
    except ConnectionResetError:  # the client went away mid-request: nobody to answer, nothing of ours broke
        log.info("edge_client_disconnected", path=request.path, method=request.method)
        raise
    except Exception as exc:  # a bug of ours: say so, never leak a traceback
        rid = request.headers.get("X-Request-Id") or new_request_id()
        log.error("edge_handler_failed", path=request.path, method=request.method, rid=rid, exc_info=exc)
        response = error_response(InternalError(f"{type(exc).__name__} while handling the request"), rid)
    stats.by_status[response.status] = stats.by_status.get(response.status, 0) + 1
    return response


def _raw_response(result: Any, rid: str) -> web.Response:
    """The reply of a raw route's op, as the op built it."""
    if not isinstance(result, dict) or not isinstance(result.get("body"), (bytes, str)):
        raise InternalError("a raw route's op must return {'body': bytes, ...}")
    body = result["body"]
    headers = {str(k): str(v) for k, v in (result.get("headers") or {}).items()}
    headers["X-Request-Id"] = rid
    return web.Response(body=body.encode() if isinstance(body, str) else body, status=int(result.get("status", 200)),
                        content_type=result.get("content_type", "application/octet-stream"), headers=headers)


_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})


def _param(name: str, value: str, typ: str) -> Any:
    """A path or query value read as its declared JSON type; a `BadRequest` naming it otherwise."""
    try:
        if typ == "integer":
            return int(value)
        if typ == "number":
            return float(value)
    except ValueError:
        raise BadRequest(f"{name}: expected {'an integer' if typ == 'integer' else 'a number'}, got {value!r:.40}",
                         field=name) from None
    if typ == "boolean":
        lowered = value.lower()
        if lowered in _TRUE or lowered in _FALSE:
            return lowered in _TRUE
        raise BadRequest(f"{name}: expected true or false, got {value!r:.40}", field=name)
    return value


def _handler(route: Route, guard: Authenticator | None, public: bool) -> Any:
    service, op, text, raw_body = route.service, route.op, route.content_type == "text", route.content_type == "raw"
    query = [name for name, _, _ in route.query]
    has_body = route.has_body
    columns = json_columns(route.request_schema)
    types = {name: route.param_type(name) for name in [*route.params, *query]}
    anyone = guard.public if guard is not None and public else None

    async def handle(request: web.Request) -> web.StreamResponse:
        rid = request.headers.get("X-Request-Id") or new_request_id()
        args: dict[str, Any] = {}
        try:
            principal = anyone
            if guard is not None and anyone is None:  # before any of the body is read
                principal = guard.principal(bearer(request.headers.get("Authorization")))
                guard.admit(principal, service, op)  # a missing role is 403 before the body is looked at
            if raw_body:
                args = {"body": await _read_body(request) if request.body_exists else b"",
                        "content_type": request.content_type,
                        "headers": {k.lower(): v for k, v in request.headers.items()}}
            elif has_body and request.body_exists:
                raw = await _read_body(request)
                if raw.strip():
                    body = (_decode_body(request, raw, columns) if len(raw) < LARGE_BODY else
                            await asyncio.get_running_loop().run_in_executor(None, _decode_body, request, raw,
                                                                             columns))
                    if not isinstance(body, dict):
                        raise BadRequest(f"request body must be an object (a map), got {type(body).__name__}",
                                         field="body")
                    args = body
            if request.match_info:
                for name, value in request.match_info.items():
                    args[name] = _param(name, value, types.get(name, "string"))
            for name in query:
                if name in request.query:
                    args[name] = _param(name, request.query[name], types[name])
            result = await request.app[REQUESTER].request(service, op, args, rid=rid, principal=principal)
            if raw_body:
                return _raw_response(result, rid)
            if text:
                return web.Response(body=str(result).encode(), headers={"Content-Type": _PROMETHEUS,
                                                                         "X-Request-Id": rid})
            if wants_msgpack(request):
                try:
                    payload = codec.packb(result)
                except CodecError as exc:
                    log.error("result_not_encodable", service=service, op=op, rid=rid, error=exc.message)
                    raise InternalError(f"op {op!r} of service {service!r} returned a result that cannot be "
                                        f"encoded: {exc.message}") from None
                return await _reply(request, payload, MSGPACK, rid)
            try:
                payload = codec.encode_json(result)
            except orjson.JSONEncodeError as exc:
                if _depth_exceeds(args, _MAX_JSON_DEPTH):
                    raise BadRequest(f"request body nests deeper than {_MAX_JSON_DEPTH} levels",
                                     field="body") from None
                log.error("result_not_json_encodable", service=service, op=op, rid=rid, error=str(exc))
                raise InternalError(f"op {op!r} of service {service!r} returned a result that is not "
                                    f"JSON-encodable: {exc}") from None
            return await _reply(request, payload, "application/json", rid)
        except BodyTimeout as exc:  # the rest of the body may still come: never read it as a next request
            response = error_response(exc, rid)
            response.force_close()
            return response
        except MlpError as exc:
            return error_response(exc, rid)

    handle.__name__ = f"{service}_{op}"
    return handle


async def _openapi(request: web.Request) -> web.Response:
    return _json(request.app[OPENAPI])


def create_app(requester: Requester, routes: Iterable[Route] = (), *,
               max_body_bytes: int = 256 * 1024 * 1024, title: str = "ml-processing",
               version: str = "0", components: dict[str, Any] | None = None,
               header_timeout: float = DEFAULT_HEADER_TIMEOUT,
               body_timeout: float = DEFAULT_BODY_TIMEOUT, authenticator: Authenticator | None = None,
               public_paths: Iterable[str] = ()) -> web.Application:
    """Build the REST app; tests call this too, with a real broker as `requester`.

    `header_timeout` takes effect when the app is served through `create_runner`; `body_timeout` and
    `max_body_bytes` however it is served (see the module's docstring)."""
    if not header_timeout > 0 or not body_timeout > 0:
        raise ValueError(f"header_timeout and body_timeout must be positive, got {header_timeout}, {body_timeout}")
    app = web.Application(middlewares=[error_middleware], client_max_size=max_body_bytes)
    table = list(routes)
    app[REQUESTER] = requester
    app[ROUTES] = table
    app[STATS] = EdgeStats()
    app[MAX_BODY] = max_body_bytes
    app[HEADER_TIMEOUT] = float(header_timeout)
    app[BODY_TIMEOUT] = float(body_timeout)
    app[OPENAPI] = build_openapi(table, title=title, version=version, components=components)
    public = frozenset(public_paths)
    for route in table:
        app.router.add_route(route.method, route.path, _handler(route, authenticator, route.path in public),
                             expect_handler=_expect_handler)
    app.router.add_get(OPENAPI_PATH, _openapi if authenticator is None or OPENAPI_PATH in public
                       else _guarded(_openapi, authenticator))
    return app


def _guarded(handler: Any, guard: Authenticator) -> Any:
    """`handler` behind the bearer-token check (a route of the edge's own, such as the OpenAPI document)."""

    async def handle(request: web.Request) -> web.StreamResponse:
        try:
            guard.principal(bearer(request.headers.get("Authorization")))
        except MlpError as exc:
            return error_response(exc, request.headers.get("X-Request-Id") or new_request_id())
        response: web.StreamResponse = await handler(request)
        return response

    return handle


def create_runner(app: web.Application, **options: Any) -> web.AppRunner:
    """An `aiohttp.web.AppRunner` for `app` that enforces its header timeout; `options` go to the runner
    (``handle_signals``, ``shutdown_timeout``, ``access_log``...)."""
    options.setdefault("keepalive_timeout", app[HEADER_TIMEOUT])
    return web.AppRunner(app, **options)
