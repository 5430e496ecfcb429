"""Serving one request: decode the body, call a local service, encode its reply; failures become replies.

Both the broker (for services in its own process) and the worker (for the service it serves) answer
through `serve_request`, so a request is answered the same way wherever its service runs.

>>> from ml_processing.bus import codec
>>> reply = serve_request(lambda request: {"echo": request.op}, [codec.encode_request("ping")])
>>> codec.decode_reply(reply)
{'echo': 'ping'}
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import msgspec
import structlog

from .. import codec
from ..errors import CodecError, InternalError, MlpError

log = structlog.get_logger(__name__)


class LocalService(Protocol):
    """What the broker calls for a service living in its own process."""

    def __call__(self, request: codec.Request) -> Any:
        """Return the result (or an awaitable of it); raise `MlpError` for an error reply."""


_PLAIN_TYPES = frozenset({dict, list, str, int, float, bool, type(None), bytes, tuple})


def is_plain(result: Any) -> bool:
    """True for the result types of synchronous handlers (skips the slower awaitable check)."""
    return type(result) in _PLAIN_TYPES


#: Request frames at least this large are decoded on a thread, so the event loop keeps serving meanwhile.
LARGE_FRAME = 1 << 20


def serve_request(handler: LocalService, body: list[bytes], on_malformed: Callable[[], None] | None = None,
                  principal: str | None = None, transport: str = "zmq") -> bytes | Awaitable[bytes]:
    """Decode a request body, call `handler`, encode its reply; every failure becomes an error reply.

    Returns the reply frame at once when the handler answered synchronously, else an awaitable of it. A
    body that is not a valid request is answered ``bad_request`` and reported to `on_malformed`. A body of
    `LARGE_FRAME` bytes or more is decoded on the loop's default executor (the reply is then awaitable).
    """
    if len(body) == 1 and len(body[0]) >= LARGE_FRAME:
        return _serve_large(handler, body[0], on_malformed, principal, transport)
    try:
        if len(body) != 1:
            raise CodecError(f"request must carry exactly one body frame, got {len(body)}")
        request = codec.check_request(codec.unpackb(body[0]), principal, transport)  # `decode_request`
    except CodecError as exc:
        return _malformed(exc, on_malformed)
    return serve_decoded(handler, request)


def _malformed(exc: CodecError, on_malformed: Callable[[], None] | None) -> bytes:
    if on_malformed is not None:
        on_malformed()
    log.warning("malformed_request", error=exc.message)
    return codec.encode_error(exc)


async def _serve_large(handler: LocalService, frame: bytes, on_malformed: Callable[[], None] | None,
                       principal: str | None, transport: str) -> bytes:
    try:
        request = await asyncio.get_running_loop().run_in_executor(None, codec.decode_request, frame,
                                                                   principal, transport)
    except CodecError as exc:
        return _malformed(exc, on_malformed)
    reply = serve_decoded(handler, msgspec.structs.replace(request, size=len(frame)))
    return reply if isinstance(reply, bytes) else await reply


def serve_decoded(handler: LocalService, request: codec.Request) -> bytes | Awaitable[bytes]:
    """`serve_request` for a request decoded already (the broker decodes once when its gate needs the op)."""
    try:
        result = handler(request)
    except MlpError as exc:
        return codec.encode_error(exc)
    except Exception as exc:  # a LocalService should never leak one; answer, log, keep serving
        log.error("service_handler_failed", op=request.op, rid=request.rid, exc_info=exc)
        return codec.encode_error(InternalError(f"{type(exc).__name__}: {exc}"))
    if type(result) not in _PLAIN_TYPES and inspect.isawaitable(result):
        return _reply_when_done(result, request)
    try:  # `_encode_result` written out: every request's path
        return codec.encode_reply(result)
    except CodecError as exc:
        return _not_encodable(exc, request)


async def _reply_when_done(pending: Awaitable[Any], request: codec.Request) -> bytes:
    try:
        result = await pending
    except MlpError as exc:
        return codec.encode_error(exc)
    except Exception as exc:
        log.error("service_handler_failed", op=request.op, rid=request.rid, exc_info=exc)
        return codec.encode_error(InternalError(f"{type(exc).__name__}: {exc}"))
    return _encode_result(result, request)


def _encode_result(result: Any, request: codec.Request) -> bytes:
    try:
        return codec.encode_reply(result)
    except CodecError as exc:
        return _not_encodable(exc, request)


def _not_encodable(exc: CodecError, request: codec.Request) -> bytes:
    """The reply to a request whose handler returned what cannot be encoded: the handler's fault, not the
    client's."""
    log.error("result_not_encodable", op=request.op, rid=request.rid, error=exc.message)
    return codec.encode_error(InternalError(f"op {request.op!r} returned a result that cannot be encoded: "
                                            f"{exc.message}"))
