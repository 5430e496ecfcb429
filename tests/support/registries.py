"""What a real kernel registers with the service's configuration (entry points included), discovered once
per test session and shared by the contract tests (`ml_processing.checks.registries`)."""

from __future__ import annotations

from typing import Any

from ml_processing import checks

FOUND = checks.registries()

#: What the service registers, every plugin included (the patterns plugin adds its candlestick flags), as
#: one plain table per registry kind.
REGISTRIES: dict[str, Any] = {kind: dict(table) for kind, table in FOUND.registries.items()}
