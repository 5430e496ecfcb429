"""The error tree shared by every layer, rooted here because its codes are part of the wire protocol.

A reply carries an error as data, ``{"ok": false, "error": {"code": ..., "message": ...}}``; the requester
re-raises it as the same type, and the REST edge maps the type to an HTTP status.

>>> err = error_from_wire({"code": "not_found", "message": "no model 'x'"})
>>> type(err).__name__, err.http_status, str(err)
('NotFound', 404, "no model 'x'")
"""

from __future__ import annotations

from typing import Any, ClassVar


class MlpError(Exception):
    """Base of every error that crosses a module boundary."""

    code: ClassVar[str] = "internal"
    http_status: ClassVar[int] = 500

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            wire["field"] = self.field
        return wire


class BadRequest(MlpError):
    """The request is malformed or names something invalid; ``field`` names the culprit when known."""

    code = "bad_request"
    http_status = 400


class CodecError(BadRequest):
    """A frame could not be decoded (not msgpack, bad ext payload, wrong envelope)."""


class TooLarge(BadRequest):
    """The request exceeds a configured size limit."""

    code = "too_large"
    http_status = 413


class Unauthorized(MlpError):
    """No credentials, or credentials the service does not know (REST: a missing or bad bearer token)."""

    code = "unauthorized"
    http_status = 401


class Forbidden(MlpError):
    """The principal is known but lacks the role the op declares (or may not serve that service)."""

    code = "forbidden"
    http_status = 403


class NotFound(MlpError):
    """The named service, op, model, indicator or symbol does not exist."""

    code = "not_found"
    http_status = 404


class Unavailable(MlpError):
    """The service exists but cannot answer now (no live worker, unhealthy actor, shutting down)."""

    code = "unavailable"
    http_status = 503


class Timeout(MlpError):
    """No reply within the deadline."""

    code = "timeout"
    http_status = 504


class InternalError(MlpError):
    """A fault of the service itself; never caused by what a client sends."""

    code = "internal"
    http_status = 500


_BY_CODE: dict[str, type[MlpError]] = {
    cls.code: cls for cls in (BadRequest, TooLarge, Unauthorized, Forbidden, NotFound, Unavailable, Timeout,
                              InternalError)
}

#: Every wire error code, in the order docs/PROTOCOL.md lists them.
ERROR_CODES: tuple[str, ...] = tuple(_BY_CODE)


def error_from_wire(error: Any) -> MlpError:
    """Rebuild the exception a reply's ``error`` map describes (unknown codes become `InternalError`)."""
    if not isinstance(error, dict):
        return InternalError(f"malformed error in reply: {error!r:.200}")
    cls = _BY_CODE.get(str(error.get("code")), InternalError)
    field = error.get("field")
    return cls(str(error.get("message", "")), field=field if isinstance(field, str) else None)
