from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from tollway.api_keys.models import ApiKey
from tollway.kit.repository import Repository


class ApiKeyRepository(Repository[ApiKey]):
    model = ApiKey

    async def get_by_hash(self, key_hash: str) -> ApiKey | None:
        statement = select(ApiKey).where(ApiKey.key_hash == key_hash)
        return (await self.session.execute(statement)).scalar_one_or_none()

    async def get_for_organization(
        self, key_id: str, organization_id: str, *, for_update: bool = False
    ) -> ApiKey | None:
        statement = select(ApiKey).where(
            ApiKey.id == key_id, ApiKey.organization_id == organization_id
        )
        if for_update:
            # Two rolls of one key at once: the second waits and finds it rolled.
            statement = statement.with_for_update()
        return (await self.session.execute(statement)).scalar_one_or_none()

    async def list_for_organization(self, organization_id: str) -> list[ApiKey]:
        statement = (
            select(ApiKey)
            .where(ApiKey.organization_id == organization_id)
            .order_by(ApiKey.id.desc())
        )
        return list((await self.session.execute(statement)).scalars())

    async def list_unrevoked_created_by(self, user_id: str) -> list[ApiKey]:
        """Every key the user created, in any organization, not revoked yet."""
        statement = (
            select(ApiKey)
            .where(ApiKey.created_by_user_id == user_id, ApiKey.revoked_at.is_(None))
            .order_by(ApiKey.id)
        )
        return list((await self.session.execute(statement)).scalars())

    async def touch_last_used(self, used: dict[str, datetime]) -> None:
        for key_id, at in used.items():
            await self.session.execute(
                update(ApiKey)
                .where(
                    ApiKey.id == key_id,
                    (ApiKey.last_used_at.is_(None)) | (ApiKey.last_used_at < at),
                )
                .values(last_used_at=at)
            )


def api_keys(session: AsyncSession) -> ApiKeyRepository:
    return ApiKeyRepository(session)
