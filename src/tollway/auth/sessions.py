"""Dashboard cookie sessions with a synchronizer CSRF token.

The ``tollway_session`` cookie (HttpOnly, SameSite=Lax, Secure behind https) holds an
opaque token; the database keeps its SHA-256, the user, the organization and the
session's CSRF token. Unsafe requests authenticated by the cookie must echo the CSRF
token in the ``X-CSRF-Token`` header (or a ``csrf_token`` form field); the token is
given in the login answer and in the readable ``tollway_csrf`` cookie. The role is
read from the membership at each lookup, so a role change or removal applies to open
sessions within the authenticator's one-second cache.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from tollway.accounts.models import Membership, Organization, User
from tollway.accounts.service.members import membership_service
from tollway.accounts.service.organizations import organization_service
from tollway.accounts.service.users import user_service
from tollway.auth import repository
from tollway.auth.models import DashboardSession
from tollway.errors import Forbidden, Unauthorized
from tollway.kit.ids import new_id

SESSION_COOKIE = "tollway_session"
CSRF_COOKIE = "tollway_csrf"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FORM_FIELD = "csrf_token"
#: A browser login waiting for its TOTP code carries the challenge in this cookie to
#: the dashboard's 2FA page (see auth.service.AuthService.complete_challenge).
CHALLENGE_COOKIE = "tollway_2fa_challenge"
TWO_FACTOR_PAGE = "/dashboard/2fa"


class InvalidSession(Unauthorized):
    code = "invalid_session"
    title = "Session expired or logged out"


class CsrfFailed(Forbidden):
    code = "csrf_failed"
    title = "CSRF token missing or wrong"


def hash_session_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class OpenedSession:
    record: DashboardSession
    token: str
    user: User
    organization: Organization
    role: str


@dataclass(frozen=True, slots=True)
class SessionSnapshot:
    """What the authenticator caches about one cookie for up to a second."""

    session_id: str
    user_id: str
    organization_id: str
    role: str
    is_platform_admin: bool
    csrf_token: str
    expires_at: datetime


class DashboardSessionService:
    async def open(
        self,
        session: AsyncSession,
        *,
        user: User,
        membership: Membership,
        ttl: timedelta,
        now: datetime,
    ) -> OpenedSession:
        token = "tws_" + secrets.token_urlsafe(32)
        record = DashboardSession(
            id=new_id("ses"),
            token_hash=hash_session_token(token),
            csrf_token=secrets.token_urlsafe(32),
            user_id=user.id,
            organization_id=membership.organization_id,
            created_at=now,
            expires_at=now + ttl,
        )
        await repository.dashboard_sessions(session).add(record)
        organization = await organization_service.get_organization(
            session, membership.organization_id
        )
        return OpenedSession(
            record=record, token=token, user=user, organization=organization, role=membership.role
        )

    async def resolve(
        self, session: AsyncSession, *, token: str, now: datetime
    ) -> SessionSnapshot | None:
        """The live session of ``token`` with the user's current role, or None."""
        record = await repository.dashboard_sessions(session).get_by_hash(hash_session_token(token))
        if record is None or record.revoked_at is not None or record.expires_at <= now:
            return None
        membership = await membership_service.get_membership(
            session, user_id=record.user_id, organization_id=record.organization_id
        )
        user = await user_service.get_user(session, record.user_id)
        if membership is None or user.disabled_at is not None:
            return None
        return SessionSnapshot(
            session_id=record.id,
            user_id=user.id,
            organization_id=record.organization_id,
            role=membership.role,
            is_platform_admin=user.is_platform_admin,
            csrf_token=record.csrf_token,
            expires_at=record.expires_at,
        )

    async def close(self, session: AsyncSession, *, session_id: str, now: datetime) -> None:
        record = await repository.dashboard_sessions(session).get_by_id(session_id)
        if record is None or record.revoked_at is not None:
            raise InvalidSession("this session is already closed")
        record.revoked_at = now
        await session.flush()

    async def purge(self, session: AsyncSession, *, now: datetime) -> int:
        return await repository.dashboard_sessions(session).purge_expired(now=now)


dashboard_session_service = DashboardSessionService()
