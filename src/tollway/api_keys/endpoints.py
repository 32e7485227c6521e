from __future__ import annotations

from datetime import timedelta

from fastapi import Request

from tollway.api_keys.auth import KeyManager
from tollway.api_keys.schemas import (
    ApiKeyCreatedOut,
    ApiKeyIn,
    ApiKeyListOut,
    ApiKeyOut,
    ApiKeyRolledOut,
    ApiKeyRollIn,
)
from tollway.api_keys.service import api_key_service
from tollway.kit.routing import SessionDep, SettingsDep, WallClockDep, api_router

router = api_router(prefix="/api/v1/auth/keys", tags=["api keys"])


@router.post("", status_code=201, response_model=ApiKeyCreatedOut)
async def create_key(
    body: ApiKeyIn,
    principal: KeyManager,
    session: SessionDep,
    settings: SettingsDep,
    clock: WallClockDep,
) -> ApiKeyCreatedOut:
    """Create an API key for the caller's organization. The `key` is shown only in this
    answer; Tollway keeps only its HMAC. Scopes default to using the product (authorize,
    usage, credits, marketplace) and may not exceed the caller's own."""
    created = await api_key_service.create(
        session,
        principal=principal,
        name=body.name,
        scopes=body.scopes,
        expires_at=body.expires_at,
        environment=body.environment,
        pepper=settings.secret("api_key_pepper"),
        now=clock.now(),
    )
    return ApiKeyCreatedOut(
        **ApiKeyOut.model_validate(created.record).model_dump(), key=created.key
    )


@router.get("", response_model=ApiKeyListOut)
async def list_keys(principal: KeyManager, session: SessionDep) -> ApiKeyListOut:
    """The organization's API keys, newest first, without the keys themselves."""
    records = await api_key_service.list(session, organization_id=principal.organization_id)
    return ApiKeyListOut(items=[ApiKeyOut.model_validate(record) for record in records])


@router.post("/{key_id}/revoke", response_model=ApiKeyOut)
async def revoke_key(
    key_id: str, principal: KeyManager, request: Request, session: SessionDep, clock: WallClockDep
) -> ApiKeyOut:
    """Revoke a key. This process refuses it at once, every other within one second."""
    record = await api_key_service.revoke(
        session, organization_id=principal.organization_id, key_id=key_id, now=clock.now()
    )
    request.app.state.authenticator.forget_api_key(record.id)
    return ApiKeyOut.model_validate(record)


@router.post("/{key_id}/roll", status_code=201, response_model=ApiKeyRolledOut)
async def roll_key(
    key_id: str,
    principal: KeyManager,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    clock: WallClockDep,
    body: ApiKeyRollIn | None = None,
) -> ApiKeyRolledOut:
    """Replace a key without downtime: a new key (shown only in this answer) with the
    same name, scopes, environment and expiry, while the old one keeps working for
    `grace_seconds` (default one day; then it expires; `0` revokes it at once). Deploy
    the new key, and the old one stops by itself. 409 `api_key_revoked` or
    `api_key_expired` for a key that no longer works. Audited and published as
    `api_key.rolled`."""
    body = body or ApiKeyRollIn()
    rolled = await api_key_service.roll(
        session,
        principal=principal,
        key_id=key_id,
        grace=timedelta(seconds=body.grace_seconds),
        pepper=settings.secret("api_key_pepper"),
        now=clock.now(),
    )
    # This process sees the old key's new expiry (or revocation) at once.
    request.app.state.authenticator.forget_api_key(rolled.replaced.id)
    return ApiKeyRolledOut(
        **ApiKeyOut.model_validate(rolled.created.record).model_dump(),
        key=rolled.created.key,
        replaced_key=ApiKeyOut.model_validate(rolled.replaced),
    )
