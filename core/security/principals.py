"""Principals and roles.

>>> desk = Principal("desk", frozenset({"compute"}))
>>> allowed(desk, "compute"), allowed(desk, "admin"), allowed(desk, "read")
(True, False, True)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..ops import ROLES

#: What each role implies: an admin may compute and read; compute may read.
IMPLIES: dict[str, frozenset[str]] = {
    "read": frozenset({"read"}),
    "compute": frozenset({"compute", "read"}),
    "admin": frozenset({"admin", "compute", "read"}),
    "worker": frozenset({"worker"}),
}


@dataclass(frozen=True)
class Principal:
    """Someone the service knows: a name and roles; `services` limits the worker role to named services."""

    name: str
    roles: frozenset[str]
    services: frozenset[str] = field(default_factory=frozenset)  # worker role: empty means every service
    #: every role held, directly or implied (made once: the gate asks it at each request)
    grants: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        unknown = set(self.roles) - set(ROLES)
        if unknown:
            raise ValueError(f"unknown role(s) {', '.join(sorted(unknown))}; roles: {', '.join(ROLES)}")
        object.__setattr__(self, "grants", frozenset().union(*(IMPLIES[r] for r in self.roles)))

    def may_serve(self, service: str) -> bool:
        """May this principal register as an MDP worker of `service`?"""
        return "worker" in self.roles and (not self.services or service in self.services)


def allowed(principal: Principal, role: str) -> bool:
    """Does `principal` hold `role` (directly or through a role that implies it)?"""
    return role in principal.grants


#: Requests made inside the process (actor to actor) and every request while authentication is off.
INTERNAL = Principal("internal", frozenset(ROLES))
#: Who calls a public route (``[security] public_routes``) when authentication is on.
ANYONE = Principal("anyone", frozenset({"read"}))
