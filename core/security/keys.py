"""ZeroMQ CURVE keys: the service's key pair and the allow-list that maps client public keys to principals.

Files under ``<data_dir>/security/``: ``server.key`` (the service's public and secret key, Z85, owner-only,
created on the first start) and ``clients.json`` (public key -> name, roles and, for the worker role, the
services it may serve). ``ml-processing keys`` prints the service's public key and creates client key
pairs; a client sets ``CURVE_SERVERKEY`` to the service's public key and its own pair (docs/SECURITY.md).

>>> import tempfile, pathlib
>>> ring = KeyRing(pathlib.Path(tempfile.mkdtemp()))
>>> public, secret = ring.server()
>>> len(public), ring.server() == (public, secret)
(40, True)
>>> client_public, client_secret = ring.add_client("desk", ["compute"])
>>> ring.principal(client_public.encode()).name, ring.principal(b"x" * 40) is None
('desk', True)
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson
import zmq

from ..log import get_logger
from ..storage import atomic_write
from .principals import Principal
from .shared import Records, SharedMap

log = get_logger(__name__)


def _index(records: Records) -> dict[str, Principal]:
    known: dict[str, Principal] = {}
    for public, entry in records.items():
        try:
            known[public] = Principal(entry["name"], frozenset(entry["roles"]), frozenset(entry.get("services", ())))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:  # refuses that key, not every key
            log.error("client_key_unreadable", key=public, error=repr(exc), consequence="key refused")
    return known


class KeyRing:
    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self._shared = SharedMap(self.folder / "clients.json", _index)

    @property
    def server_file(self) -> Path:
        return self.folder / "server.key"

    @property
    def clients_file(self) -> Path:
        return self._shared.path

    def server(self) -> tuple[str, str]:
        """The service's (public, secret) key pair, Z85; created on first use."""
        if self.server_file.exists():
            pair = orjson.loads(self.server_file.read_bytes())
            return pair["public"], pair["secret"]
        public, secret = (k.decode() for k in zmq.curve_keypair())
        atomic_write(self.server_file, orjson.dumps({"public": public, "secret": secret}))
        return public, secret

    def clients(self) -> dict[str, dict[str, Any]]:
        """The allow-list as it is on disk now: public key -> {name, roles, services}."""
        return self._shared.read()

    def add_client(self, name: str, roles: Iterable[str], services: Iterable[str] = (),
                   public: str | None = None) -> tuple[str, str | None]:
        """Allow a client: a new key pair (returned; the secret is shown once and not kept), or an existing
        public key the client made itself."""
        principal = Principal(name, frozenset(roles), frozenset(services))
        secret: str | None = None
        if public is None:
            public, secret = (k.decode() for k in zmq.curve_keypair())
        if len(public) != 40:
            raise ValueError("a CURVE public key is 40 characters of Z85")
        clients = self._shared.read()
        clients[public] = {"name": name, "roles": sorted(principal.roles), "services": sorted(principal.services)}
        self._shared.write(clients)
        return public, secret

    def remove(self, name_or_key: str) -> int:
        """Remove every key of a name, or one key; the broker refuses their requests from the next one on."""
        clients = self._shared.read()
        gone = [k for k, c in clients.items() if k == name_or_key or c["name"] == name_or_key]
        for key in gone:
            del clients[key]
        if gone:
            self._shared.write(clients)
        return len(gone)

    def principal(self, public: bytes | str) -> Principal | None:
        """The principal of a client public key (Z85), or None when it is not allowed (checked at each
        request: a memory read unless the allow-list changed, `shared`)."""
        return self._shared.current().get(public.decode() if isinstance(public, bytes) else public)
