"""Who may ask for decisions."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from tollway.auth.dependencies import current_principal, require_scope
from tollway.auth.principal import Principal
from tollway.errors import Forbidden, Unauthorized


async def require_authorize_key(request: Request) -> Principal:
    """An API key holding the ``authorize`` scope: ``require_api_key`` and
    ``require_scope("authorize")`` in one dependency (the hot path solves one node
    fewer)."""
    principal = await current_principal(request)
    if principal.kind != "api_key":
        raise Unauthorized("this endpoint takes an API key", code="api_key_required")
    if not principal.has_scope("authorize"):
        raise Forbidden(
            "this credential lacks the scope(s): authorize",
            code="insufficient_scope",
            required_scopes=["authorize"],
        )
    return principal


AuthorizeKey = Annotated[Principal, Depends(require_authorize_key)]
EntitlementsReader = Annotated[Principal, Depends(require_scope("usage:read"))]
