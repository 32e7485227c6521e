from __future__ import annotations

from fastapi import Request

from tollway.auth.dependencies import CurrentPrincipal
from tollway.kit.routing import SessionDep, WallClockDep, api_router
from tollway.kit.signing import KeyRing
from tollway.license.schemas import LicenseTokenOut, PublicKeysOut
from tollway.license.service import license_service
from tollway.payments.dependencies import PaymentEnvDep

router = api_router(prefix="/api/v1/license", tags=["license"])


@router.post("/token")
async def issue_license_token(
    request: Request,
    principal: CurrentPrincipal,
    session: SessionDep,
    env: PaymentEnvDep,
    wall_clock: WallClockDep,
) -> LicenseTokenOut:
    """An Ed25519-signed token (plan, license state, features, expiry) a CLI checks offline.

    Verify it with the JWKS of `GET /api/v1/license/public-key` (see docs/license.md).
    """
    keys: KeyRing = request.app.state.signing_keys
    issued = await license_service.issue(
        session,
        env,
        organization_id=principal.organization_id,
        keys=keys,
        now=wall_clock.now(),
    )
    return LicenseTokenOut(token=issued.token, expires_at=issued.expires_at)


@router.get("/public-key")
async def license_public_key(request: Request) -> PublicKeysOut:
    """The public keys (JWKS, Ed25519) that verify license tokens; newest first."""
    keys: KeyRing = request.app.state.signing_keys
    return PublicKeysOut(**license_service.public_keys(keys))
