from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from tollway.auth.models import RefreshToken, RevokedAccessToken
from tollway.kit.repository import Repository


class RefreshTokenRepository(Repository[RefreshToken]):
    model = RefreshToken

    async def get_by_hash(
        self, token_hash: str, *, for_update: bool = False
    ) -> RefreshToken | None:
        statement = select(RefreshToken).where(RefreshToken.token_hash == token_hash)
        if for_update:
            statement = statement.with_for_update()
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


def refresh_tokens(session: AsyncSession) -> RefreshTokenRepository:
    return RefreshTokenRepository(session)


def revoked_tokens(session: AsyncSession) -> RevokedTokenRepository:
    return RevokedTokenRepository(session)
