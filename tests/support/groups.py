"""A plugins.toml for a serve group (`serve --processes 2`) in a test: its worker processes read the same
file, so the configuration is written to disk, with free ports, no edge, and the repository importable."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.core.helpers import free_ports

ROOT = Path(__file__).resolve().parents[2]


def group_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, plugins: str, kernel: str = "") -> Path:
    """Write the configuration of a two-process serve group whose ``[plugins]`` part is `plugins` (`kernel`:
    more ``[kernel]`` lines)."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    for var in [v for v in os.environ if v.startswith("MLP_")]:
        monkeypatch.delenv(var)
    broker, pub_in, pub_out = free_ports(3)
    path = tmp_path / "plugins.toml"
    path.write_text(f"""
[service]
data_dir = "{tmp_path / 'var'}"
log_level = "warning"

[bus]
broker_bind = ["tcp://127.0.0.1:{broker}"]
broker_connect = "tcp://127.0.0.1:{broker}"
pub_in = "tcp://127.0.0.1:{pub_in}"
pub_out = "tcp://127.0.0.1:{pub_out}"

[edge]
enabled = false

[kernel]
processes = 2
drain_timeout_s = 5.0
{kernel}

{plugins}""", encoding="utf-8")
    return path
