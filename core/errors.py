"""Errors of the kernel layer; the wire errors live in `ml_processing.bus.errors` and are re-exported."""

from __future__ import annotations

from ml_processing.bus.errors import (
    BadRequest,
    CodecError,
    Forbidden,
    InternalError,
    MlpError,
    NotFound,
    Timeout,
    TooLarge,
    Unauthorized,
    Unavailable,
)

__all__ = [
    "BadRequest",
    "CodecError",
    "ConfigError",
    "Forbidden",
    "InternalError",
    "MlpError",
    "NotFound",
    "PluginError",
    "Timeout",
    "TooLarge",
    "Unauthorized",
    "Unavailable",
]


class ConfigError(MlpError):
    """plugins.toml or an environment override is wrong; the message is one line naming key and file."""


class PluginError(MlpError):
    """A plugin could not be imported, failed validation, or broke while registering."""
