"""ZeroMQ's ZAP handler for CURVE, on the event loop (pyzmq's `AsyncioAuthenticator`, no thread of ours).

Each connection to the broker or the pub/sub proxy presents a client key; it is accepted when the
allow-list (`KeyRing`) knows it and, on the proxy, when its principal may publish (``compute``, domain
``pub_in``) or subscribe (``read``, domain ``pub_out``). The connection's ``User-Id`` is the key itself
(Z85), which the broker's gate maps to a principal at each request.
"""

from __future__ import annotations

from typing import Any

import zmq
from zmq.auth.asyncio import AsyncioAuthenticator

from ..log import get_logger
from .keys import KeyRing
from .principals import allowed

log = get_logger(__name__)

#: ZAP domain -> the role a key needs to connect there (the broker checks each request's op role itself).
DOMAINS = {"broker": None, "pub_in": "compute", "pub_out": "read"}


class _Keys:
    """pyzmq's credentials provider: ``callback(domain, key) -> bool``."""

    def __init__(self, ring: KeyRing) -> None:
        self.ring = ring
        self.refused = 0

    def callback(self, domain: str, key: bytes) -> bool:
        principal = self.ring.principal(key)
        role = DOMAINS.get(domain)
        ok = principal is not None and (role is None or allowed(principal, role))
        if not ok:
            self.refused += 1
            log.warning("connection_refused", domain=domain, key=key.decode(errors="replace"),
                        principal=principal.name if principal else None)
        return ok


class KeyAuthenticator:
    """Starts and stops the ZAP handler of one ZeroMQ context."""

    def __init__(self, context: zmq.Context[Any], ring: KeyRing) -> None:
        self._auth = AsyncioAuthenticator(context)
        self._keys = _Keys(ring)

    @property
    def refused(self) -> int:
        return self._keys.refused

    def start(self) -> None:
        self._auth.start()
        for domain in DOMAINS:
            self._auth.configure_curve_callback(domain, credentials_provider=self._keys)

    def stop(self) -> None:
        self._auth.stop()
