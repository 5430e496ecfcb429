"""What a real kernel registers with the service's configuration (entry points included), discovered once
per test session and shared by the contract tests (`ml_processing.checks.registries`)."""

from __future__ import annotations

from ml_processing import checks

FOUND = checks.registries()
