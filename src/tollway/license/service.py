"""License tokens: what an organization may do, signed so that a CLI can check it offline.

A token is a compact JWS (``alg: EdDSA``, Ed25519, ``kid`` of the signing key) made
with PyJWT over the claims ``iss``, ``sub`` (organization), ``plan``,
``license_state``, ``features`` (name -> enabled), ``iat`` and ``exp``. The public
keys are ``GET /api/v1/license/public-key`` (a JWKS); docs/license.md shows the check.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import jwt
from sqlalchemy.ext.asyncio import AsyncSession

from tollway.billing.adapters import catalog
from tollway.billing.service.lifecycle import lifecycle_service
from tollway.kit.signing import KeyRing
from tollway.payments.env import PaymentEnv

ISSUER = "tollway"
#: A token is good for a week offline; a grace period ending earlier ends it earlier.
TOKEN_TTL = timedelta(days=7)


@dataclass(frozen=True, slots=True)
class LicenseToken:
    token: str
    expires_at: datetime
    claims: dict[str, Any]


class LicenseService:
    async def issue(
        self,
        session: AsyncSession,
        env: PaymentEnv,
        *,
        organization_id: str,
        keys: KeyRing,
        now: datetime,
    ) -> LicenseToken:
        """A token stamped with ``now``, security (wall) time: ``iat`` and ``exp`` are
        what a CLI checks against its own clock, so moving the sandbox's business clock
        never makes them future or past. The subscription is read on the business clock
        (``env``); a grace period ending earlier than a week ends the token as much
        earlier, measured on that clock."""
        sub = await lifecycle_service.current(session, env, organization_id=organization_id)
        expires_at = now + TOKEN_TTL
        if sub.license_state == "grace" and sub.grace_ends_at is not None:
            grace_left = sub.grace_ends_at - env.clock.now()
            expires_at = max(now + timedelta(minutes=5), min(expires_at, now + grace_left))
        features = await catalog().features(session, organization_id)
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "sub": organization_id,
            "plan": sub.plan_id,
            "subscription_status": sub.status,
            "license_state": sub.license_state,
            "grace_ends_at": sub.grace_ends_at.isoformat() if sub.grace_ends_at else None,
            "features": features,
            "iat": int(now.timestamp()),
            "exp": int(expires_at.timestamp()),
        }
        key = keys.current
        token = jwt.encode(claims, key.private_key, algorithm="EdDSA", headers={"kid": key.kid})
        return LicenseToken(
            token=token,
            expires_at=datetime.fromtimestamp(claims["exp"], tz=now.tzinfo),
            claims=claims,
        )

    def public_keys(self, keys: KeyRing) -> dict[str, Any]:
        return keys.jwks()


license_service = LicenseService()
