"""What the replay tests share: files to read, and the check that a report page stands alone."""

from __future__ import annotations

import re
from pathlib import Path

EXTERNAL = re.compile(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", re.IGNORECASE)


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def assert_self_contained(page: str) -> None:
    """At least two inline charts, no script, no stylesheet link, nothing fetched from elsewhere."""
    assert page.count("<svg") >= 2
    assert not EXTERNAL.search(page), EXTERNAL.search(page)
    assert "<script" not in page.lower() and "<link" not in page.lower()
