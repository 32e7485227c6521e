"""Dependencies endpoints declare to say who may call them.

Each is one node for FastAPI to solve: it takes the request and calls the plain
functions below it (``current_principal`` calls ``optional_principal``, which
authenticates once per request), instead of depending on them through ``Depends``,
which FastAPI would solve level by level on every request.

``Annotated[Principal, Depends(require_scope("credits:write"))]`` - the caller must be
authenticated and hold the scope; objects of other organizations are looked up with
``principal.organization_id`` and answer 404 when they belong elsewhere. Each domain
names the aliases its endpoints take in its own ``auth.py`` (``CreditsWriter`` in
``tollway.ledger.auth``); the ones every domain shares are at the end of this module.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

import structlog
from fastapi import Depends, Request

from tollway.auth.principal import Authenticator, Principal, spending_refusal
from tollway.errors import Forbidden, Unauthorized

_CACHE = "principal"


async def optional_principal(request: Request) -> Principal | None:
    """The caller if it sent credentials (bad credentials are still a 401)."""
    if hasattr(request.state, _CACHE):
        cached: Principal | None = getattr(request.state, _CACHE)
        return cached
    authenticator: Authenticator | None = getattr(request.app.state, "authenticator", None)
    principal = await authenticator.authenticate(request) if authenticator is not None else None
    setattr(request.state, _CACHE, principal)
    if principal is not None:
        structlog.contextvars.bind_contextvars(
            actor=principal.actor, organization_id=principal.organization_id
        )
    return principal


async def current_principal(request: Request) -> Principal:
    """The authenticated caller; 401 ``unauthenticated`` without credentials."""
    principal = await optional_principal(request)
    if principal is None:
        raise Unauthorized("send an access token or API key as 'Authorization: Bearer ...'")
    return principal


def require_scope(*scopes: str) -> Callable[..., Awaitable[Principal]]:
    """The caller must hold every scope listed (403 ``insufficient_scope`` otherwise)."""

    async def dependency(request: Request) -> Principal:
        principal = await current_principal(request)
        missing = [scope for scope in scopes if not principal.has_scope(scope)]
        if missing:
            raise Forbidden(
                f"this credential lacks the scope(s): {', '.join(missing)}",
                code="insufficient_scope",
                required_scopes=missing,
            )
        return principal

    return dependency


def require_role(*roles: str) -> Callable[..., Awaitable[Principal]]:
    """The caller must be a user with one of ``roles`` in the organization (403 otherwise)."""

    async def dependency(request: Request) -> Principal:
        principal = await current_principal(request)
        if principal.kind != "user" or principal.role not in roles:
            raise Forbidden(
                f"this action needs the role {' or '.join(roles)}", code="insufficient_role"
            )
        return principal

    return dependency


async def require_spending(request: Request) -> Principal:
    """The caller may charge the saved card off-session: a user with the ``owner`` or
    ``billing`` role, or an API key with ``billing:purchase`` (403 otherwise)."""
    principal = await current_principal(request)
    refusal = spending_refusal(principal)
    if refusal is not None:
        raise refusal
    return principal


async def require_api_key(request: Request) -> Principal:
    """Only API keys may call (the product-facing endpoints such as /authorize)."""
    principal = await current_principal(request)
    if principal.kind != "api_key":
        raise Unauthorized("this endpoint takes an API key", code="api_key_required")
    return principal


async def require_user(request: Request) -> Principal:
    """Only a logged-in user (access token or dashboard session), not an API key: for
    what a person does to their own account (2FA, their dashboard session)."""
    principal = await current_principal(request)
    if principal.kind != "user" or principal.user_id is None:
        raise Forbidden(
            "this endpoint is for a logged-in user, not an API key", code="user_required"
        )
    return principal


async def require_platform_admin(request: Request) -> Principal:
    """Only the operator's staff (platform admins) may call."""
    principal = await current_principal(request)
    if not principal.is_platform_admin:
        raise Forbidden("this endpoint is for platform administrators", code="admin_only")
    return principal


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]
AdminPrincipal = Annotated[Principal, Depends(require_platform_admin)]
ApiKeyPrincipal = Annotated[Principal, Depends(require_api_key)]
SpendingPrincipal = Annotated[Principal, Depends(require_spending)]
UserPrincipal = Annotated[Principal, Depends(require_user)]
