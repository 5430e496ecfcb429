"""How the edge learns who asks: an `Authenticator` given by the layer above (the kernel's token store).

With one, every route but the public ones needs ``Authorization: Bearer <token>``: a missing or unknown
token is answered 401 with ``WWW-Authenticate``; the principal it names travels with the bus request and
the broker checks the op's role (403 ``forbidden`` when it lacks it). Without one (authentication off),
requests carry no principal and the broker admits them as the service's own.
"""

from __future__ import annotations

from typing import Any, Protocol

from ..errors import Unauthorized

CHALLENGE = 'Bearer realm="ml-processing"'


class Authenticator(Protocol):
    public: Any  # the principal of a request to a public route

    def principal(self, token: str) -> Any:
        """The principal of a bearer token; raise `Unauthorized` for an unknown one."""

    def admit(self, identity: Any, service: str, op: str) -> str | None:
        """Raise `Forbidden` when `identity` lacks the role of `op` (the broker asks the same again)."""


def bearer(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header; `Unauthorized` naming what is wrong.

    >>> bearer("Bearer mlp_1_x"), bearer("bearer  mlp_1_x ")
    ('mlp_1_x', 'mlp_1_x')
    """
    if authorization is not None and authorization.startswith("Bearer "):  # as every client writes it
        token = authorization[7:].strip()
        if token:
            return token
    if not authorization:
        raise Unauthorized("this route needs Authorization: Bearer <token> (ml-processing tokens add)",
                           field="Authorization")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("the Authorization header must read 'Bearer <token>'", field="Authorization")
    return token.strip()
