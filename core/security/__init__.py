"""Who may do what: principals and roles, REST bearer tokens, ZeroMQ CURVE keys, the audit trail.

A *principal* is a name with one or more roles (``read``, ``compute``, ``admin``, ``worker``). It comes
from a bearer token the REST edge checks (`tokens`) or from the CURVE key of a ZeroMQ connection (`keys`:
the authenticator sets each message's ``User-Id`` to the key's principal). The broker checks each
request's op role (declared beside the op's arguments, `ml_processing.core.ops`) before any actor sees
it; every state-changing op is written to the audit trail (`audit`). docs/SECURITY.md has the threat
model.
"""

from __future__ import annotations

from .principals import ANYONE, INTERNAL, Principal, allowed

__all__ = ["ANYONE", "INTERNAL", "Principal", "allowed"]
