"""Fixtures of the replay tests."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from ml_processing.core import cli


@pytest.fixture
def quiet_cli(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """`cli.main` in-process without MLP_ variables and without configuring logging (structlog would keep
    pytest's capture stream)."""
    for var in [v for v in os.environ if v.startswith("MLP_")]:
        monkeypatch.delenv(var)
    monkeypatch.setattr(cli.log, "configure", lambda *args, **kwargs: None)
    yield
