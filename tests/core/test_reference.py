"""docs/OPS.md is generated from the op declarations and says what they say."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_docs_ops_is_up_to_date() -> None:
    generated = subprocess.run([sys.executable, "-m", "ml_processing.core.reference"], capture_output=True,
                               text=True, check=True, timeout=120, env={"MLP_DISABLE_AUTOLOAD": "1", "PATH": ""}).stdout
    assert generated == (ROOT / "docs" / "OPS.md").read_text(encoding="utf-8"), (
        "docs/OPS.md is out of date: python -m ml_processing.core.reference > docs/OPS.md")
    assert "| `predict` | compute |" in generated and "| `register` | admin |" in generated
    assert "undeclared" not in generated  # every built-in op is declared
