"""Who may ask what: the broker's hook for authentication and roles, kept free of any policy of its own.

A `Gate` is given by the layer above (the kernel's, `ml_processing.core.security.gate`). The broker asks it
before any service sees a request, for every request: from a socket (the identity is the ``User-Id`` that
ZeroMQ's ZAP handler set for the sender's CURVE key) and from its own process (the identity is whatever
the requester passed, e.g. the principal behind a REST bearer token, or None for an actor's own request).
It also asks it before accepting a worker's READY.
"""

from __future__ import annotations

from typing import Any, Protocol


class Gate(Protocol):
    def admit(self, identity: Any, service: str, op: str) -> str | None:
        """The name of the principal asking, when `identity` may call `op` of `service`; raise
        `Unauthorized` (unknown identity) or `Forbidden` (a role is missing) otherwise. None: an
        in-process request of the service itself."""

    def may_serve(self, identity: Any, service: str) -> bool:
        """May `identity` register as an MDP worker of `service`?"""
