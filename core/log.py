"""Logging: one structlog configuration, JSON lines in production or off a terminal, console on one."""

from __future__ import annotations

import logging
import sys
from contextvars import ContextVar
from typing import Any

import orjson
import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR, "critical": logging.CRITICAL}


#: (actor, op, request id) of the request being handled; set once per request by the dispatcher (one
#: ContextVar.set, cheaper than binding three structlog context variables) and added to every log line.
REQUEST: ContextVar[tuple[str, str, str | None] | None] = ContextVar("mlp_request", default=None)


def add_request_context(logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
    current = REQUEST.get()
    if current is not None:
        event.setdefault("actor", current[0])
        event.setdefault("op", current[1])
        if current[2] is not None:
            event.setdefault("rid", current[2])
    return event


def _dumps(obj: Any, default: Any = None) -> str:
    return orjson.dumps(obj, default=default or str).decode()


def configure(level: str = "info", *, json: bool | None = None) -> None:
    """Configure structlog (and the stdlib root logger that libraries use) once per process.

    ``json=None`` picks JSON lines unless stderr is a terminal.
    """
    if json is None:
        json = not sys.stderr.isatty()
    numeric = _LEVELS[level.lower()]
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        add_request_context,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    if json:
        processors += [structlog.processors.dict_tracebacks, structlog.processors.JSONRenderer(serializer=_dumps)]
    else:
        processors += [structlog.dev.ConsoleRenderer()]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=sys.stderr, format="%(levelname)s %(name)s %(message)s")


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
