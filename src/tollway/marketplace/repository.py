"""Every query of the marketplace (the search index's are in ``search.py``)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from tollway.kit.pagination import PageParams, PageResult, paginate
from tollway.marketplace.models import (
    Earning,
    Package,
    PackageVersion,
    PublishBucket,
    Purchase,
)


async def add(session: AsyncSession, instance: object) -> None:
    session.add(instance)
    await session.flush()


async def get_package(
    session: AsyncSession, package_id: str, *, for_update: bool = False
) -> Package | None:
    statement = select(Package).where(Package.id == package_id)
    if for_update:
        statement = statement.with_for_update()
    return (await session.execute(statement)).scalar_one_or_none()


async def get_package_by_name(
    session: AsyncSession, name: str, *, for_update: bool = False
) -> Package | None:
    statement = select(Package).where(Package.name == name)
    if for_update:
        statement = statement.with_for_update()
    return (await session.execute(statement)).scalar_one_or_none()


async def list_packages_by_names(session: AsyncSession, names: Iterable[str]) -> list[Package]:
    wanted = sorted(set(names))
    if not wanted:
        return []
    return list((await session.execute(select(Package).where(Package.name.in_(wanted)))).scalars())


async def list_versions(session: AsyncSession, *, package_id: str) -> list[PackageVersion]:
    statement = (
        select(PackageVersion)
        .where(PackageVersion.package_id == package_id)
        .order_by(PackageVersion.created_at, PackageVersion.id)
    )
    return list((await session.execute(statement)).scalars())


async def list_resolvable_versions(
    session: AsyncSession, *, package_ids: Iterable[str]
) -> list[PackageVersion]:
    ids = sorted(set(package_ids))
    if not ids:
        return []
    statement = select(PackageVersion).where(
        PackageVersion.package_id.in_(ids), PackageVersion.state != "draft"
    )
    return list((await session.execute(statement)).scalars())


async def list_package_heads(session: AsyncSession, names: Iterable[str]) -> list[Any]:
    """(id, name, price_minor, currency, organization_id) of the named packages: plain
    rows, no ORM objects (resolution reads hundreds and keeps none)."""
    wanted = sorted(set(names))
    if not wanted:
        return []
    statement = select(
        Package.id, Package.name, Package.price_minor, Package.currency, Package.organization_id
    ).where(Package.name.in_(wanted))
    return list((await session.execute(statement)).all())


async def list_resolvable_version_rows(
    session: AsyncSession, *, package_ids: Iterable[str]
) -> list[Any]:
    """The non-draft versions of the packages as plain rows."""
    ids = sorted(set(package_ids))
    if not ids:
        return []
    statement = select(
        PackageVersion.package_id,
        PackageVersion.version,
        PackageVersion.state,
        PackageVersion.sha256,
        PackageVersion.signature,
        PackageVersion.signature_kid,
        PackageVersion.dependencies,
    ).where(PackageVersion.package_id.in_(ids), PackageVersion.state != "draft")
    return list((await session.execute(statement)).all())


async def get_version(
    session: AsyncSession, *, package_id: str, version: str, for_update: bool = False
) -> PackageVersion | None:
    statement = select(PackageVersion).where(
        PackageVersion.package_id == package_id, PackageVersion.version == version
    )
    if for_update:
        statement = statement.with_for_update()
    return (await session.execute(statement)).scalar_one_or_none()


async def count_downloads(session: AsyncSession, *, package_id: str, version_id: str) -> None:
    """One more download of the version and its package (atomic increments)."""
    await session.execute(
        update(PackageVersion)
        .where(PackageVersion.id == version_id)
        .values(downloads=PackageVersion.downloads + 1)
    )
    await session.execute(
        update(Package).where(Package.id == package_id).values(downloads=Package.downloads + 1)
    )


async def get_bucket(
    session: AsyncSession, *, organization_id: str, for_update: bool = False
) -> PublishBucket | None:
    statement = select(PublishBucket).where(PublishBucket.organization_id == organization_id)
    if for_update:
        statement = statement.with_for_update()
    return (await session.execute(statement)).scalar_one_or_none()


async def get_purchase(
    session: AsyncSession, purchase_id: str, *, for_update: bool = False
) -> Purchase | None:
    statement = select(Purchase).where(Purchase.id == purchase_id)
    if for_update:
        statement = statement.with_for_update()
    return (await session.execute(statement)).scalar_one_or_none()


async def get_live_purchase(
    session: AsyncSession, *, package_id: str, organization_id: str
) -> Purchase | None:
    """The pending or completed purchase of a package by an organization, if any."""
    statement = select(Purchase).where(Purchase.open_key == f"{package_id}:{organization_id}")
    return (await session.execute(statement)).scalar_one_or_none()


async def list_entitled_package_ids(
    session: AsyncSession, *, organization_id: str, package_ids: Iterable[str]
) -> set[str]:
    ids = sorted(set(package_ids))
    if not ids:
        return set()
    statement = select(Purchase.package_id).where(
        Purchase.organization_id == organization_id,
        Purchase.status == "completed",
        Purchase.package_id.in_(ids),
    )
    return set((await session.execute(statement)).scalars())


async def list_purchases(
    session: AsyncSession, *, organization_id: str, params: PageParams
) -> PageResult[Purchase]:
    statement = select(Purchase).where(Purchase.organization_id == organization_id)
    return await paginate(session, statement, id_column=Purchase.id, params=params)


async def get_earning_by_purchase(session: AsyncSession, *, purchase_id: str) -> Earning | None:
    statement = select(Earning).where(Earning.purchase_id == purchase_id)
    return (await session.execute(statement)).scalar_one_or_none()


async def list_earnings(
    session: AsyncSession, *, organization_id: str, params: PageParams
) -> PageResult[Earning]:
    statement = select(Earning).where(Earning.organization_id == organization_id)
    return await paginate(session, statement, id_column=Earning.id, params=params)


@dataclass(frozen=True, slots=True)
class EarningTotals:
    """One currency's sales as booked, and what refunds reversed of them."""

    currency: str
    sales: int
    gross: int
    commission: int
    net: int
    refunded: int
    commission_reversed: int
    net_reversed: int


async def earning_totals(session: AsyncSession, *, organization_id: str) -> list[EarningTotals]:
    statement = (
        select(
            Earning.currency,
            func.count(),
            func.sum(Earning.gross_minor),
            func.sum(Earning.commission_minor),
            func.sum(Earning.net_minor),
            func.sum(Earning.refunded_minor),
            func.sum(Earning.commission_reversed_minor),
            func.sum(Earning.net_reversed_minor),
        )
        .where(Earning.organization_id == organization_id)
        .group_by(Earning.currency)
        .order_by(Earning.currency)
    )
    rows = await session.execute(statement)
    return [EarningTotals(str(row[0]), *(int(value or 0) for value in row[1:])) for row in rows]


async def list_packages_of(session: AsyncSession, *, organization_id: str) -> list[Package]:
    statement = select(Package).where(Package.organization_id == organization_id)
    return list((await session.execute(statement)).scalars())


async def find_package(session: AsyncSession, *, id_or_name: str) -> Package | None:
    statement = select(Package).where(or_(Package.id == id_or_name, Package.name == id_or_name))
    return (await session.execute(statement)).scalars().first()


async def delete_package(session: AsyncSession, *, package_id: str) -> None:
    """A package and its versions (the caller made sure none was ever published)."""
    await session.execute(delete(PackageVersion).where(PackageVersion.package_id == package_id))
    await session.execute(delete(Package).where(Package.id == package_id))
