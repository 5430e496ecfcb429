"""REST bearer tokens: high-entropy, shown once, stored only as salted hashes, compared in constant time.

A token reads ``mlp_<id>_<secret>``: the id finds its record, the secret (32 random bytes) is checked
against ``sha256(salt + secret)``. The store is ``<data_dir>/security/tokens.json`` (owner-only, written
atomically); a running service re-reads it when a command changed it (`shared`: a memory read per request,
no system call), so ``ml-processing tokens revoke`` takes effect at once.

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
from typing import Any, NamedTuple

from ..log import get_logger
from .principals import Principal
from .shared import Records, SharedMap

log = get_logger(__name__)

PREFIX = "mlp_"


def _digest(salt: bytes, secret: str) -> bytes:
    return hashlib.sha256(salt + secret.encode(errors="surrogatepass")).digest()


class _Known(NamedTuple):
    """A token as the check needs it: made once per change of the store, not at each request."""

    salt: bytes
    digest: bytes
    principal: Principal


def _index(records: Records) -> dict[str, _Known]:
    known: dict[str, _Known] = {}
    for token_id, record in records.items():
        try:
            known[token_id] = _Known(bytes.fromhex(record["salt"]), bytes.fromhex(record["hash"]),
                                     Principal(record["name"], frozenset(record["roles"])))
        except (KeyError, TypeError, ValueError) as exc:  # one bad record refuses its token, not every token
            log.error("token_record_unreadable", id=token_id, error=repr(exc), consequence="token refused")
    return known


class TokenStore:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._shared = SharedMap(path, _index)

    @property
    def path(self) -> Path:
        return self._shared.path

    # -- commands -------------------------------------------------------------------------------------

    def add(self, name: str, roles: Iterable[str]) -> str:
        """Create a token for `name` with `roles`; the token itself is returned once and never stored."""
        principal = Principal(name, frozenset(roles))  # checks the roles
        if not name or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise ValueError("a token name is letters, digits, '-', '_' and '.'")
        records = self._shared.read()
        token_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        salt = secrets.token_bytes(16)
        records[token_id] = {"name": name, "roles": sorted(principal.roles), "salt": salt.hex(),
                             "hash": _digest(salt, secret).hex(), "created": round(time.time(), 3)}
        self._shared.write(records)
        return f"{PREFIX}{token_id}_{secret}"

    def list(self) -> list[dict[str, Any]]:
        """Every token's id, name, roles and creation time (never a secret or hash)."""
        return [{"id": token_id, "name": r["name"], "roles": r["roles"], "created": r["created"]}
                for token_id, r in sorted(self._shared.read().items(), key=lambda item: item[1]["created"])]

    def revoke(self, name_or_id: str) -> int:
        """Remove every token of a name, or one token by id; how many were removed. Every running service
        refuses them from its next request on."""
        records = self._shared.read()
        gone = [t for t, r in records.items() if t == name_or_id or r["name"] == name_or_id]
        for token_id in gone:
            del records[token_id]
        if gone:
            self._shared.write(records)
        return len(gone)

    # -- the edge's check -----------------------------------------------------------------------------

    def verify(self, token: str) -> Principal | None:
        """The principal of a token, or None; the secret's hash is compared in constant time."""
        if not token.startswith(PREFIX):
            return None
        token_id, _, secret = token[len(PREFIX):].partition("_")
        known = self._shared.current().get(token_id)
        if known is None or not secret:
            return None
        if not hmac.compare_digest(_digest(known.salt, secret), known.digest):
            return None
        return known.principal
