"""The audit trail: one JSON line per state-changing op (time, principal, transport, op, target, outcome),
appended to ``<data_dir>/audit.log`` and fsynced before the reply leaves.

>>> import tempfile, pathlib, json
>>> trail = AuditLog(pathlib.Path(tempfile.mkdtemp()) / "audit.log")
>>> trail.write("desk", "rest", "models", "promote", "m", "ok")
>>> json.loads(trail.path.read_text())["principal"], trail.written
('desk', 1)
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import orjson


class AuditLog:
    """Appends and fsyncs; counts what it wrote (``mlp_audit_records`` in /metrics)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.written = 0
        self.failed = 0
        self._fd: int | None = None

    def _open(self) -> int:
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        return self._fd

    def write(self, principal: str, transport: str, service: str, op: str, target: Any, outcome: str,
              **extra: Any) -> None:
        """Append one record and fsync it."""
        record = {"time": round(time.time(), 6), "principal": principal, "transport": transport,
                  "service": service, "op": op, "target": target, "outcome": outcome, **extra}
        try:
            line = orjson.dumps(record, default=str)
        except TypeError:  # what a client named may be anything (an integer past 64 bits): keep the line
            line = json.dumps(record, default=str).encode()
        fd = self._open()
        os.write(fd, line + b"\n")
        os.fsync(fd)
        self.written += 1

    def read(self) -> list[dict[str, Any]]:
        """Every record, oldest first."""
        if not self.path.exists():
            return []
        return [orjson.loads(line) for line in self.path.read_bytes().splitlines() if line.strip()]

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
