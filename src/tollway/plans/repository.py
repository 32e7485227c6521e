"""Every query of the plans domain."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.util import identity_key

from tollway.plans.models import (
    CatalogVersion,
    OrganizationOverride,
    OrganizationPlan,
    PlanPriceSnapshot,
)


def _forget(session: AsyncSession, model: Any, primary_key: str) -> None:
    """Expire the one row an upsert just wrote, if the session holds it, so the next
    read sees the new values; every other object of the session stays loaded."""
    held = session.identity_map.get(identity_key(model, primary_key))
    if held is not None:
        session.expire(held)


def _insert(session: AsyncSession, model: Any) -> Any:
    if session.get_bind().dialect.name == "postgresql":
        return pg_insert(model)
    return sqlite_insert(model)


class CatalogRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get_latest_version(self) -> CatalogVersion | None:
        statement = select(CatalogVersion).order_by(CatalogVersion.version.desc()).limit(1)
        return (await self.session.execute(statement)).scalar_one_or_none()

    async def get_latest_version_number(self) -> int | None:
        value = (await self.session.execute(select(func.max(CatalogVersion.version)))).scalar()
        return int(value) if value is not None else None

    async def get_by_version(self, version: int) -> CatalogVersion | None:
        return await self.session.get(CatalogVersion, version)

    async def add_version(
        self,
        *,
        version: int,
        digest: str,
        source: str,
        document: dict[str, Any],
        loaded_at: datetime,
        prices: list[dict[str, Any]],
    ) -> bool:
        """Insert a version and its price snapshots; False if another process took the number."""
        statement = (
            _insert(self.session, CatalogVersion)
            .values(
                version=version,
                digest=digest,
                source=source,
                document=document,
                loaded_at=loaded_at,
            )
            .on_conflict_do_nothing(index_elements=["version"])
            .returning(CatalogVersion.version)
        )
        inserted = (await self.session.execute(statement)).scalar_one_or_none()
        if inserted is None:
            return False
        for price in prices:
            self.session.add(PlanPriceSnapshot(catalog_version=version, **price))
        await self.session.flush()
        return True

    async def get_price(self, *, plan_id: str, version: int) -> PlanPriceSnapshot | None:
        return await self.session.get(PlanPriceSnapshot, (version, plan_id))


class PlansRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get_by_organization_id(self, organization_id: str) -> OrganizationPlan | None:
        return await self.session.get(OrganizationPlan, organization_id)

    async def upsert_assignment(self, values: dict[str, Any]) -> bool:
        """Insert or update; False when the organization does not exist."""
        statement = _insert(self.session, OrganizationPlan).values(**values)
        statement = statement.on_conflict_do_update(
            index_elements=["organization_id"],
            set_={key: statement.excluded[key] for key in values if key != "organization_id"},
        )
        try:
            async with self.session.begin_nested():
                await self.session.execute(statement)
        except IntegrityError:
            return False
        _forget(self.session, OrganizationPlan, values["organization_id"])
        return True

    async def get_overrides(self, organization_id: str) -> OrganizationOverride | None:
        return await self.session.get(OrganizationOverride, organization_id)

    async def get_plan_and_overrides(
        self, organization_id: str
    ) -> tuple[OrganizationPlan | None, OrganizationOverride | None]:
        """Both rows in one round trip (the entitlements cache calls this on every miss)."""
        statement = (
            select(OrganizationPlan, OrganizationOverride)
            .select_from(OrganizationPlan)
            .outerjoin(
                OrganizationOverride,
                OrganizationOverride.organization_id == OrganizationPlan.organization_id,
            )
            .where(OrganizationPlan.organization_id == organization_id)
        )
        row = (await self.session.execute(statement)).first()
        if row is not None:
            return row[0], row[1]
        return None, await self.get_overrides(organization_id)

    async def upsert_overrides(
        self, *, organization_id: str, overrides: dict[str, Any], now: datetime
    ) -> bool:
        """Insert or replace; False when the organization does not exist."""
        statement = _insert(self.session, OrganizationOverride).values(
            organization_id=organization_id, overrides=overrides, updated_at=now
        )
        statement = statement.on_conflict_do_update(
            index_elements=["organization_id"],
            set_={"overrides": statement.excluded.overrides, "updated_at": now},
        )
        try:
            async with self.session.begin_nested():
                await self.session.execute(statement)
        except IntegrityError:
            return False
        _forget(self.session, OrganizationOverride, organization_id)
        return True
