from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Row, delete, func, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from tollway.auth.models import (
    DashboardSession,
    LoginThrottle,
    OAuthAccount,
    OAuthState,
    RecoveryCode,
    RefreshToken,
    RevokedAccessToken,
    TwoFactorChallenge,
    UserToken,
)
from tollway.kit.repository import Repository


class RefreshTokenRepository(Repository[RefreshToken]):
    model = RefreshToken

    async def get_by_hash(
        self, token_hash: str, *, for_update: bool = False
    ) -> RefreshToken | None:
        statement = select(RefreshToken).where(RefreshToken.token_hash == token_hash)
        if for_update:
            statement = statement.with_for_update().execution_options(populate_existing=True)
        return (await self.session.execute(statement)).scalar_one_or_none()

    async def get_by_access_token(self, access_token_id: str) -> str | None:
        """The family of the login that issued this access token."""
        statement = select(RefreshToken.family_id).where(
            RefreshToken.access_token_id == access_token_id
        )
        return (await self.session.execute(statement)).scalars().first()

    async def list_family(self, family_id: str) -> list[RefreshToken]:
        statement = select(RefreshToken).where(RefreshToken.family_id == family_id)
        return list((await self.session.execute(statement)).scalars())

    async def list_live_families(self, user_id: str) -> list[str]:
        """The user's logins (families) with a refresh token not revoked yet."""
        statement = (
            select(RefreshToken.family_id)
            .where(RefreshToken.user_id == user_id, RefreshToken.revoked_at.is_(None))
            .distinct()
            .order_by(RefreshToken.family_id)
        )
        return list((await self.session.execute(statement)).scalars())

    async def list_live_logins(self, user_id: str, *, now: datetime) -> list[Row[Any]]:
        """The user's live logins, one row per family: ``family_id``, ``organization_id``,
        ``started_at``, ``last_active_at`` (the latest refresh), ``expires_at``."""
        statement = (
            select(
                RefreshToken.family_id,
                func.min(RefreshToken.organization_id).label("organization_id"),
                func.min(RefreshToken.created_at).label("started_at"),
                func.max(RefreshToken.created_at).label("last_active_at"),
                func.max(RefreshToken.expires_at).label("expires_at"),
            )
            .where(RefreshToken.user_id == user_id, RefreshToken.revoked_at.is_(None))
            .group_by(RefreshToken.family_id)
            .having(func.max(RefreshToken.expires_at) > now)
            .order_by(RefreshToken.family_id)
        )
        return list(await self.session.execute(statement))

    async def revoke_family(self, family_id: str, *, at: datetime) -> None:
        await self.session.execute(
            update(RefreshToken)
            .where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None))
            .values(revoked_at=at)
        )


class RevokedTokenRepository(Repository[RevokedAccessToken]):
    model = RevokedAccessToken

    async def revoke(self, jti: str, *, at: datetime, expires_at: datetime) -> None:
        if await self.session.get(RevokedAccessToken, jti) is None:
            self.session.add(RevokedAccessToken(jti=jti, revoked_at=at, expires_at=expires_at))
            await self.session.flush()

    async def list_active(self, *, now: datetime) -> set[str]:
        statement = select(RevokedAccessToken.jti).where(RevokedAccessToken.expires_at > now)
        return set((await self.session.execute(statement)).scalars())

    async def purge_expired(self, *, now: datetime) -> int:
        result = await self.session.execute(
            delete(RevokedAccessToken).where(RevokedAccessToken.expires_at <= now)
        )
        return int(getattr(result, "rowcount", 0) or 0)


class LoginThrottleRepository(Repository[LoginThrottle]):
    model = LoginThrottle

    async def list_by_keys(self, keys: list[str]) -> list[LoginThrottle]:
        statement = select(LoginThrottle).where(LoginThrottle.key.in_(keys))
        return list((await self.session.execute(statement)).scalars())

    async def lock_or_create(self, key: str, *, now: datetime) -> LoginThrottle:
        """The key's row, locked for this transaction (created when missing).

        Insert-or-ignore first, so two processes failing at once for a new key do not
        collide on the primary key; then ``FOR UPDATE`` serialises their counting.
        """
        values = {
            "key": key,
            "failures": 0,
            "window_started_at": now,
            "lockouts": 0,
            "last_failure_at": now,
        }
        dialect = self.session.get_bind().dialect.name
        if dialect == "postgresql":
            await self.session.execute(
                postgresql_insert(LoginThrottle).values(**values).on_conflict_do_nothing()
            )
        else:
            await self.session.execute(
                sqlite_insert(LoginThrottle).values(**values).on_conflict_do_nothing()
            )
        statement = (
            select(LoginThrottle)
            .where(LoginThrottle.key == key)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        return (await self.session.execute(statement)).scalar_one()

    async def purge_idle(self, *, idle_since: datetime, now: datetime) -> int:
        """Forget keys without a failure since ``idle_since`` and not locked any more."""
        result = await self.session.execute(
            delete(LoginThrottle).where(
                LoginThrottle.last_failure_at < idle_since,
                (LoginThrottle.locked_until.is_(None)) | (LoginThrottle.locked_until <= now),
            )
        )
        return int(getattr(result, "rowcount", 0) or 0)


class RecoveryCodeRepository(Repository[RecoveryCode]):
    model = RecoveryCode

    async def get_unused(self, *, user_id: str, code_hash: str) -> RecoveryCode | None:
        statement = (
            select(RecoveryCode)
            .where(
                RecoveryCode.user_id == user_id,
                RecoveryCode.code_hash == code_hash,
                RecoveryCode.used_at.is_(None),
            )
            .with_for_update()
        )
        return (await self.session.execute(statement)).scalar_one_or_none()

    async def count_unused(self, user_id: str) -> int:
        statement = select(RecoveryCode.id).where(
            RecoveryCode.user_id == user_id, RecoveryCode.used_at.is_(None)
        )
        return len(list((await self.session.execute(statement)).scalars()))

    async def delete_for_user(self, user_id: str) -> None:
        await self.session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user_id))


class OAuthAccountRepository(Repository[OAuthAccount]):
    model = OAuthAccount

    async def get_by_provider_identity(
        self, *, provider: str, provider_user_id: str
    ) -> OAuthAccount | None:
        statement = select(OAuthAccount).where(
            OAuthAccount.provider == provider, OAuthAccount.provider_user_id == provider_user_id
        )
        return (await self.session.execute(statement)).scalar_one_or_none()

    async def list_for_user(self, user_id: str) -> list[OAuthAccount]:
        statement = (
            select(OAuthAccount).where(OAuthAccount.user_id == user_id).order_by(OAuthAccount.id)
        )
        return list((await self.session.execute(statement)).scalars())


class OAuthStateRepository(Repository[OAuthState]):
    model = OAuthState

    async def pop(self, state_hash: str) -> OAuthState | None:
        """The state, deleted in the same breath: a state is good for one callback."""
        statement = select(OAuthState).where(OAuthState.state_hash == state_hash).with_for_update()
        record = (await self.session.execute(statement)).scalar_one_or_none()
        if record is not None:
            await self.session.delete(record)
            await self.session.flush()
        return record

    async def purge_expired(self, *, now: datetime) -> int:
        result = await self.session.execute(delete(OAuthState).where(OAuthState.expires_at <= now))
        return int(getattr(result, "rowcount", 0) or 0)


class DashboardSessionRepository(Repository[DashboardSession]):
    model = DashboardSession

    async def get_by_hash(self, token_hash: str) -> DashboardSession | None:
        statement = select(DashboardSession).where(DashboardSession.token_hash == token_hash)
        return (await self.session.execute(statement)).scalar_one_or_none()

    async def list_open(self, user_id: str, *, now: datetime) -> list[DashboardSession]:
        statement = (
            select(DashboardSession)
            .where(
                DashboardSession.user_id == user_id,
                DashboardSession.revoked_at.is_(None),
                DashboardSession.expires_at > now,
            )
            .order_by(DashboardSession.id)
        )
        return list((await self.session.execute(statement)).scalars())

    async def revoke_for_user(
        self, user_id: str, *, at: datetime, keep_id: str | None = None
    ) -> int:
        """Close every open session of the user but ``keep_id``; answers how many closed."""
        statement = update(DashboardSession).where(
            DashboardSession.user_id == user_id, DashboardSession.revoked_at.is_(None)
        )
        if keep_id is not None:
            statement = statement.where(DashboardSession.id != keep_id)
        result = await self.session.execute(statement.values(revoked_at=at))
        return int(getattr(result, "rowcount", 0) or 0)

    async def purge_expired(self, *, now: datetime) -> int:
        result = await self.session.execute(
            delete(DashboardSession).where(DashboardSession.expires_at <= now)
        )
        return int(getattr(result, "rowcount", 0) or 0)


class TwoFactorChallengeRepository(Repository[TwoFactorChallenge]):
    model = TwoFactorChallenge

    async def get_by_hash(self, challenge_hash: str) -> TwoFactorChallenge | None:
        """The challenge, locked: two completions of one challenge are serialised, and
        the second finds it deleted."""
        statement = (
            select(TwoFactorChallenge)
            .where(TwoFactorChallenge.challenge_hash == challenge_hash)
            .with_for_update()
        )
        return (await self.session.execute(statement)).scalar_one_or_none()

    async def purge_expired(self, *, now: datetime) -> int:
        result = await self.session.execute(
            delete(TwoFactorChallenge).where(TwoFactorChallenge.expires_at <= now)
        )
        return int(getattr(result, "rowcount", 0) or 0)


class UserTokenRepository(Repository[UserToken]):
    model = UserToken

    async def get_by_hash(self, token_hash: str, *, for_update: bool = False) -> UserToken | None:
        """The token by its hash; ``for_update`` locks it and reads it afresh, so two uses
        of one token are serialised and the second sees it used."""
        statement = select(UserToken).where(UserToken.token_hash == token_hash)
        if for_update:
            statement = statement.with_for_update().execution_options(populate_existing=True)
        return (await self.session.execute(statement)).scalar_one_or_none()

    async def delete_open(self, *, user_id: str, purpose: str, now: datetime) -> int:
        """Forget the user's unused, unexpired tokens of ``purpose`` (a newer one replaces
        them); answers how many there were."""
        result = await self.session.execute(
            delete(UserToken).where(
                UserToken.user_id == user_id,
                UserToken.purpose == purpose,
                UserToken.used_at.is_(None),
                UserToken.expires_at > now,
            )
        )
        return int(getattr(result, "rowcount", 0) or 0)

    async def purge_expired(self, *, expired_before: datetime) -> int:
        result = await self.session.execute(
            delete(UserToken).where(UserToken.expires_at <= expired_before)
        )
        return int(getattr(result, "rowcount", 0) or 0)


def refresh_tokens(session: AsyncSession) -> RefreshTokenRepository:
    return RefreshTokenRepository(session)


def revoked_tokens(session: AsyncSession) -> RevokedTokenRepository:
    return RevokedTokenRepository(session)


def login_throttles(session: AsyncSession) -> LoginThrottleRepository:
    return LoginThrottleRepository(session)


def recovery_codes(session: AsyncSession) -> RecoveryCodeRepository:
    return RecoveryCodeRepository(session)


def oauth_accounts(session: AsyncSession) -> OAuthAccountRepository:
    return OAuthAccountRepository(session)


def oauth_states(session: AsyncSession) -> OAuthStateRepository:
    return OAuthStateRepository(session)


def dashboard_sessions(session: AsyncSession) -> DashboardSessionRepository:
    return DashboardSessionRepository(session)


def two_factor_challenges(session: AsyncSession) -> TwoFactorChallengeRepository:
    return TwoFactorChallengeRepository(session)


def user_tokens(session: AsyncSession) -> UserTokenRepository:
    return UserTokenRepository(session)
