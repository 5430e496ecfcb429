"""The kernel's gate: one place decides who may do what, for the broker (`Gate`) and the edge
(`Authenticator`) alike.

A request's principal comes from the CURVE key of its ZeroMQ connection (the ``User-Id`` the ZAP handler
set: the key itself, looked up in the allow-list at each request, so removing a key takes effect at once)
or from the REST bearer token (looked up in the token store). Both are re-read when a command changed them
(`shared`: a memory read per request). The op's declared role (`ml_processing.core.ops`) must be among
the principal's; otherwise ``forbidden``. Refused state-changing requests are written to the audit trail
too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import Forbidden, Unauthorized
from ..log import get_logger
from .audit import AuditLog
from .keys import KeyRing
from .principals import ANYONE, Principal
from .tokens import TokenStore

log = get_logger(__name__)


class KernelGate:
    public = ANYONE

    def __init__(self, roles: Mapping[tuple[str, str], str], tokens: TokenStore, keys: KeyRing,
                 audit: AuditLog | None = None) -> None:
        self.roles = dict(roles)  # (service, op) -> role; an op the kernel does not know needs admin
        self.tokens = tokens
        self.keys = keys
        self.audit = audit
        self.refused = 0

    # -- the edge -------------------------------------------------------------------------------------

    def principal(self, token: str) -> Principal:
        found = self.tokens.verify(token)
        if found is None:
            raise Unauthorized("unknown or revoked bearer token", field="Authorization")
        return found

    # -- the broker -----------------------------------------------------------------------------------

    def _resolve(self, identity: Any) -> tuple[Principal, str]:
        if isinstance(identity, Principal):
            return identity, "rest"
        if isinstance(identity, str):
            found = self.keys.principal(identity)
            if found is not None:
                return found, "zmq"
        raise Unauthorized("this connection's key is not allowed (ml-processing keys)")

    def admit(self, identity: Any, service: str, op: str) -> str | None:
        principal, transport = (identity, "rest") if type(identity) is Principal else self._resolve(identity)
        role = self.roles.get((service, op), "admin")
        if role not in principal.grants:  # (`allowed`, written out: this runs at every request)
            self.refused += 1
            log.warning("request_forbidden", principal=principal.name, service=service, op=op, role=role,
                        transport=transport)
            if self.audit is not None and role == "admin":
                self.audit.write(principal.name, transport, service, op, None, "forbidden")
            raise Forbidden(f"principal {principal.name!r} lacks the {role!r} role that {service}.{op} needs")
        return principal.name

    def may_serve(self, identity: Any, service: str) -> bool:
        try:
            principal, _ = self._resolve(identity)
        except Unauthorized:
            return False
        return principal.may_serve(service)
