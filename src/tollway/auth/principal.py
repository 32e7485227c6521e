"""The authenticated caller, as every endpoint sees it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

from starlette.requests import Request

from tollway.auth.scopes import PURCHASE_SCOPE, SPENDING_ROLES
from tollway.errors import Forbidden


@dataclass(frozen=True, slots=True)
class Principal:
    """A user (access token or dashboard session) or an API key, acting for one organization."""

    kind: Literal["user", "api_key"]
    organization_id: str
    role: str
    scopes: frozenset[str]
    user_id: str | None = None
    api_key_id: str | None = None
    is_platform_admin: bool = False
    #: The ``jti`` of the access token, so logout can revoke it.
    token_id: str | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def actor(self) -> str:
        """How audit entries name this caller: ``user:usr_...`` or ``api_key:key_...``."""
        if self.kind == "api_key":
            return f"api_key:{self.api_key_id}"
        return f"user:{self.user_id}"

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes


def spending_refusal(principal: Principal) -> Forbidden | None:
    """Why ``principal`` may not charge the saved card off-session, or None when it may.

    A user needs the ``owner`` or ``billing`` role (their current role: the principal
    carries it); an API key needs the ``billing:purchase`` scope, which no key has
    unless its creator asked for it by name.
    """
    if principal.kind == "api_key":
        if principal.has_scope(PURCHASE_SCOPE):
            return None
        return Forbidden(
            f"spending the saved card needs a key with the scope {PURCHASE_SCOPE}",
            code="insufficient_scope",
            required_scopes=[PURCHASE_SCOPE],
        )
    if principal.role in SPENDING_ROLES:
        return None
    return Forbidden(
        f"this action needs the role {' or '.join(SPENDING_ROLES)}", code="insufficient_role"
    )


class Authenticator(Protocol):
    """Turns a request's credentials into a Principal; installed on ``app.state.authenticator``.

    Returns None when the request carries no credentials; raises
    :class:`~tollway.errors.Unauthorized` (``invalid_token``, ``token_expired``,
    ``invalid_api_key``) when it carries bad ones.
    """

    async def authenticate(self, request: Request) -> Principal | None: ...
