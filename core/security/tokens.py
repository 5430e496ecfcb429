"""REST bearer tokens: high-entropy, shown once, stored only as salted hashes, compared in constant time.

A token reads ``mlp_<id>_<secret>``: the id finds its record, the secret (32 random bytes) is checked
against ``sha256(salt + secret)``. The store is ``<data_dir>/security/tokens.json`` (owner-only, written
atomically); a running service re-reads it when it changes, so ``ml-processing tokens revoke`` takes effect
at once.

>>> import tempfile, pathlib
>>> store = TokenStore(pathlib.Path(tempfile.mkdtemp()) / "tokens.json")
>>> token = store.add("desk", ["compute"])
>>> store.verify(token).name, sorted(store.verify(token).roles)
('desk', ['compute'])
>>> store.verify(token[:-1] + "x") is None, store.revoke("desk"), store.verify(token) is None
(True, 1, True)
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

from ..storage import atomic_write
from .principals import Principal

PREFIX = "mlp_"


def _digest(salt: bytes, secret: str) -> str:
    return hashlib.sha256(salt + secret.encode()).hexdigest()


class TokenStore:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._records: dict[str, dict[str, Any]] = {}
        self._stamp: tuple[int, int] | None = None

    # -- the file -------------------------------------------------------------------------------------

    def _load(self) -> dict[str, dict[str, Any]]:
        """The records, re-read when the file changed (one stat per call)."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._records, self._stamp = {}, None
            return self._records
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp != self._stamp:
            self._records = orjson.loads(self.path.read_bytes()) if st.st_size else {}
            self._stamp = stamp
        return self._records

    def _save(self, records: dict[str, dict[str, Any]]) -> None:
        atomic_write(self.path, orjson.dumps(records, option=orjson.OPT_INDENT_2))
        self._stamp = None

    # -- commands -------------------------------------------------------------------------------------

    def add(self, name: str, roles: Iterable[str]) -> str:
        """Create a token for `name` with `roles`; the token itself is returned once and never stored."""
        principal = Principal(name, frozenset(roles))  # checks the roles
        if not name or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise ValueError("a token name is letters, digits, '-', '_' and '.'")
        records = dict(self._load())
        token_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        salt = secrets.token_bytes(16)
        records[token_id] = {"name": name, "roles": sorted(principal.roles), "salt": salt.hex(),
                             "hash": _digest(salt, secret), "created": round(time.time(), 3)}
        self._save(records)
        return f"{PREFIX}{token_id}_{secret}"

    def list(self) -> list[dict[str, Any]]:
        """Every token's id, name, roles and creation time (never a secret or hash)."""
        return [{"id": token_id, "name": r["name"], "roles": r["roles"], "created": r["created"]}
                for token_id, r in sorted(self._load().items(), key=lambda item: item[1]["created"])]

    def revoke(self, name_or_id: str) -> int:
        """Remove every token of a name, or one token by id; how many were removed."""
        records = dict(self._load())
        gone = [t for t, r in records.items() if t == name_or_id or r["name"] == name_or_id]
        for token_id in gone:
            del records[token_id]
        if gone:
            self._save(records)
        return len(gone)

    # -- the edge's check -----------------------------------------------------------------------------

    def verify(self, token: str) -> Principal | None:
        """The principal of a token, or None; the secret is compared in constant time."""
        if not token.startswith(PREFIX):
            return None
        token_id, _, secret = token[len(PREFIX):].partition("_")
        record = self._load().get(token_id)
        if record is None or not secret:
            return None
        if not hmac.compare_digest(_digest(bytes.fromhex(record["salt"]), secret), record["hash"]):
            return None
        return Principal(record["name"], frozenset(record["roles"]))
