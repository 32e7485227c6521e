"""Sessions: registration, login, refresh-token rotation with reuse detection, logout."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from tollway.accounts.models import Membership, Organization, User
from tollway.accounts.passwords import verify_password
from tollway.accounts.service import account_service
from tollway.audit.service import audit_service
from tollway.auth import repository
from tollway.auth.models import RefreshToken
from tollway.auth.principal import Principal
from tollway.auth.scopes import ROLE_SCOPES
from tollway.auth.tokens import (
    ACCESS_TOKEN_TTL,
    InvalidToken,
    TokenExpired,
    issue_access_token,
)
from tollway.errors import NotFound, Unauthorized
from tollway.kit.ids import new_id
from tollway.kit.signing import KeyRing

REFRESH_TOKEN_TTL = timedelta(days=30)
REFRESH_TOKEN_PREFIX = "twr_"  # noqa: S105 - a visible prefix, not a secret


class InvalidCredentials(Unauthorized):
    code = "invalid_credentials"
    title = "Invalid credentials"


class RefreshTokenReused(InvalidToken):
    """A rotated refresh token came back: someone else holds a copy. The family is
    revoked, and that revocation must survive the error answer."""

    code = "refresh_token_reused"
    commit_transaction = True


@dataclass(frozen=True, slots=True)
class IssuedSession:
    user: User
    organization: Organization
    role: str
    tier: str
    access_token: str
    refresh_token: str
    expires_in: int


def hash_refresh_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def tier_of(session: AsyncSession, organization_id: str) -> str:
    """The organization's plan id, as carried in tokens.

    Every organization starts on ``free``; the plans domain, once present, answers
    from the organization's plan assignment.
    """
    del session, organization_id
    return "free"


class AuthService:
    async def register(
        self,
        session: AsyncSession,
        *,
        keys: KeyRing,
        email: str,
        password: str,
        name: str | None,
        organization_name: str | None,
        now: datetime,
    ) -> IssuedSession:
        tenancy = await account_service.register(
            session,
            email=email,
            password=password,
            name=name,
            organization_name=organization_name,
            now=now,
        )
        return await self.issue(
            session,
            keys=keys,
            user=tenancy.user,
            membership=tenancy.membership,
            organization=tenancy.organization,
            now=now,
        )

    async def login(
        self,
        session: AsyncSession,
        *,
        keys: KeyRing,
        email: str,
        password: str,
        now: datetime,
        organization_id: str | None = None,
    ) -> IssuedSession:
        user = await account_service.get_user_by_email(session, email)
        valid, upgraded_hash = verify_password(password, user.password_hash if user else None)
        if user is None or not valid or user.disabled_at is not None:
            raise InvalidCredentials("the email or the password is wrong")
        if upgraded_hash is not None:
            user.password_hash = upgraded_hash
        user.last_login_at = now
        membership = await self._membership(session, user=user, organization_id=organization_id)
        organization = await account_service.get_organization(session, membership.organization_id)
        return await self.issue(
            session, keys=keys, user=user, membership=membership, organization=organization, now=now
        )

    async def _membership(
        self, session: AsyncSession, *, user: User, organization_id: str | None
    ) -> Membership:
        if organization_id is None:
            return await account_service.default_membership(session, user.id)
        membership = await account_service.get_membership(
            session, user_id=user.id, organization_id=organization_id
        )
        if membership is None:
            raise NotFound("no such organization")
        return membership

    async def issue(
        self,
        session: AsyncSession,
        *,
        keys: KeyRing,
        user: User,
        membership: Membership,
        organization: Organization,
        now: datetime,
        family_id: str | None = None,
    ) -> IssuedSession:
        """A fresh access token and refresh token (a new family unless one is given)."""
        tier = await tier_of(session, organization.id)
        access_token, claims = issue_access_token(
            keys,
            user_id=user.id,
            organization_id=organization.id,
            role=membership.role,
            tier=tier,
            scopes=ROLE_SCOPES[membership.role],
            now=now,
            is_platform_admin=user.is_platform_admin,
        )
        refresh_token = REFRESH_TOKEN_PREFIX + secrets.token_urlsafe(32)
        await repository.refresh_tokens(session).add(
            RefreshToken(
                id=new_id("rtk"),
                family_id=family_id or new_id("fam"),
                user_id=user.id,
                organization_id=organization.id,
                token_hash=hash_refresh_token(refresh_token),
                access_token_id=claims.token_id,
                created_at=now,
                expires_at=now + REFRESH_TOKEN_TTL,
            )
        )
        return IssuedSession(
            user=user,
            organization=organization,
            role=membership.role,
            tier=tier,
            access_token=access_token,
            refresh_token=refresh_token,
            expires_in=int(ACCESS_TOKEN_TTL.total_seconds()),
        )

    async def refresh(
        self, session: AsyncSession, *, keys: KeyRing, refresh_token: str, now: datetime
    ) -> IssuedSession:
        """Rotate: the presented token is spent and a new pair issued in the same family.

        Presenting a spent token again means it leaked: the whole family (and the
        access tokens it issued) is revoked, and the caller must log in again.
        """
        tokens = repository.refresh_tokens(session)
        record = await tokens.get_by_hash(hash_refresh_token(refresh_token), for_update=True)
        if record is None or record.revoked_at is not None:
            raise InvalidToken("this refresh token is not valid; log in again")
        if record.used_at is not None:
            await self._revoke_family(session, record.family_id, now=now)
            audit_service.record(
                session,
                action="auth.refresh_token_reused",
                target=record.user_id,
                organization_id=record.organization_id,
                actor=f"user:{record.user_id}",
                details={"family_id": record.family_id},
                occurred_at=now,
            )
            raise RefreshTokenReused(
                "this refresh token was already used; every session of this login is revoked"
            )
        if record.expires_at <= now:
            raise TokenExpired("the refresh token has expired; log in again")
        record.used_at = now
        user = await account_service.get_user(session, record.user_id)
        membership = await account_service.get_membership(
            session, user_id=user.id, organization_id=record.organization_id
        )
        if membership is None or user.disabled_at is not None:
            await self._revoke_family(session, record.family_id, now=now)
            raise InvalidToken("this account can no longer use this organization")
        organization = await account_service.get_organization(session, record.organization_id)
        return await self.issue(
            session,
            keys=keys,
            user=user,
            membership=membership,
            organization=organization,
            now=now,
            family_id=record.family_id,
        )

    async def logout(self, session: AsyncSession, *, principal: Principal, now: datetime) -> None:
        """Revoke the caller's access token and every refresh token of its login."""
        if principal.token_id is None:
            raise InvalidToken("log out with the access token of a login, not an API key")
        await repository.revoked_tokens(session).revoke(
            principal.token_id, at=now, expires_at=now + ACCESS_TOKEN_TTL
        )
        family = await repository.refresh_tokens(session).get_by_access_token(principal.token_id)
        if family is not None:
            await self._revoke_family(session, family, now=now)

    async def _revoke_family(self, session: AsyncSession, family_id: str, *, now: datetime) -> None:
        tokens = repository.refresh_tokens(session)
        revoked = repository.revoked_tokens(session)
        for member in await tokens.list_family(family_id):
            if member.access_token_id is not None:
                await revoked.revoke(
                    member.access_token_id, at=now, expires_at=member.created_at + ACCESS_TOKEN_TTL
                )
        await tokens.revoke_family(family_id, at=now)


auth_service = AuthService()
