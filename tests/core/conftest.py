"""Fixtures of the kernel tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.thirdparty import on_path


@pytest.fixture
def plugin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder on sys.path for throwaway plugin modules; they are forgotten after the test."""
    folder = tmp_path / "site"
    folder.mkdir()
    with on_path(monkeypatch, folder):
        yield folder
