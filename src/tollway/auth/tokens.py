"""Access tokens: short-lived JWTs signed with the platform's Ed25519 key ring.

Claims: ``sub`` (user), ``org``, ``role``, ``tier``, ``scopes``, ``jti``, ``iat``,
``exp`` and ``adm`` for platform admins; the header's ``kid`` names the signing key,
so keys rotate without logging anybody out, and any service can verify a token
offline with the JWKS at ``/api/v1/license/public-key``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt

from tollway.errors import Unauthorized
from tollway.kit.ids import new_id
from tollway.kit.signing import KeyRing

ACCESS_TOKEN_TTL = timedelta(minutes=15)
ISSUER = "tollway"
AUDIENCE = "tollway-api"


class InvalidToken(Unauthorized):
    code = "invalid_token"
    title = "Invalid token"


class TokenExpired(Unauthorized):
    code = "token_expired"
    title = "Token expired"


@dataclass(frozen=True, slots=True)
class AccessClaims:
    user_id: str
    organization_id: str
    role: str
    tier: str
    scopes: frozenset[str]
    token_id: str
    issued_at: datetime
    expires_at: datetime
    is_platform_admin: bool


def issue_access_token(
    keys: KeyRing,
    *,
    user_id: str,
    organization_id: str,
    role: str,
    tier: str,
    scopes: frozenset[str],
    now: datetime,
    is_platform_admin: bool = False,
) -> tuple[str, AccessClaims]:
    claims = AccessClaims(
        user_id=user_id,
        organization_id=organization_id,
        role=role,
        tier=tier,
        scopes=scopes,
        token_id=new_id("jti"),
        issued_at=now,
        expires_at=now + ACCESS_TOKEN_TTL,
        is_platform_admin=is_platform_admin,
    )
    payload: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": user_id,
        "org": organization_id,
        "role": role,
        "tier": tier,
        "scopes": sorted(scopes),
        "jti": claims.token_id,
        "iat": int(now.timestamp()),
        "exp": int(claims.expires_at.timestamp()),
        "typ": "access",
    }
    if is_platform_admin:
        payload["adm"] = True
    key = keys.current
    token = jwt.encode(payload, key.private_key, algorithm="EdDSA", headers={"kid": key.kid})
    return token, claims


def decode_access_token(keys: KeyRing, token: str, *, now: datetime) -> AccessClaims:
    """Verify signature, issuer, audience and expiry (against the business clock)."""
    try:
        header = jwt.get_unverified_header(token)
        kid = header.get("kid")
        key = next((candidate for candidate in keys.keys if candidate.kid == kid), None)
        if key is None:
            raise InvalidToken("the token was signed with an unknown key")
        public_key = key.public_key
        payload = jwt.decode(
            token,
            public_key,
            algorithms=["EdDSA"],
            audience=AUDIENCE,
            issuer=ISSUER,
            # Time is checked below against the business clock: PyJWT's own checks use the
            # wall clock, which a sandbox test clock runs ahead of.
            options={
                "verify_exp": False,
                "verify_iat": False,
                "verify_nbf": False,
                "require": ["exp", "iat", "sub", "jti", "org"],
            },
        )
    except jwt.PyJWTError as error:
        raise InvalidToken("the token is malformed or its signature does not verify") from error
    if payload.get("typ") != "access":
        raise InvalidToken("not an access token")
    expires_at = datetime.fromtimestamp(int(payload["exp"]), tz=UTC)
    if expires_at <= now:
        raise TokenExpired("the access token has expired; refresh it")
    return AccessClaims(
        user_id=str(payload["sub"]),
        organization_id=str(payload["org"]),
        role=str(payload.get("role", "member")),
        tier=str(payload.get("tier", "free")),
        scopes=frozenset(payload.get("scopes", [])),
        token_id=str(payload["jti"]),
        issued_at=datetime.fromtimestamp(int(payload["iat"]), tz=UTC),
        expires_at=expires_at,
        is_platform_admin=bool(payload.get("adm", False)),
    )
