"""Reading a request's arguments: each reader names the field it rejects."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ml_processing.core.errors import BadRequest


def text(args: Mapping[str, Any], name: str) -> str:
    """`args[name]` as a non-empty string, or a BadRequest naming the field."""
    value = args.get(name)
    if not isinstance(value, str) or not value:
        raise BadRequest(f"'{name}' must be a non-empty string", field=name)
    return value
