"""Packages: create, edit, delete and look up, and the listing every change recomputes
(a package is in search while it has a published version; its quality score, latest
version and search document follow its versions, in the same transaction)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import semver
from sqlalchemy.ext.asyncio import AsyncSession

from tollway.accounts.service.organizations import organization_service
from tollway.audit.service import audit_service
from tollway.kit.ids import new_id
from tollway.kit.outbox import outbox
from tollway.marketplace import repository
from tollway.marketplace.errors import (
    NotPackageOwner,
    PackageNameTaken,
    PackageNotFound,
    PackagePublished,
)
from tollway.marketplace.models import Package, PackageVersion
from tollway.marketplace.quality import QualityInput, quality_score
from tollway.marketplace.search import search_backend
from tollway.marketplace.service.env import MarketEnv
from tollway.marketplace.validation import (
    canonical_license,
    clean_category,
    clean_description,
    clean_keywords,
    clean_price,
)
from tollway.marketplace.versioning import validate_name


@dataclass(frozen=True, slots=True)
class PackageView:
    package: Package
    versions: list[PackageVersion]


def semver_key(version: PackageVersion) -> semver.Version:
    return semver.Version.parse(version.version)


def _editable(package: Package) -> dict[str, Any]:
    """What ``PATCH`` may change, to tell which fields an edit changed."""
    return {
        "description": package.description,
        "category": package.category,
        "keywords": list(package.keywords),
        "license": package.license,
        "price": package.price_minor,
        "currency": package.currency,
    }


class ListingService:
    async def create_package(
        self,
        session: AsyncSession,
        env: MarketEnv,
        *,
        organization_id: str,
        name: str,
        description: str,
        category: str,
        keywords: list[str],
        license: str,
        price_amount: int | None,
        price_currency: str | None,
    ) -> Package:
        normalized = validate_name(name)
        amount, currency = clean_price(price_amount, price_currency)
        expression = canonical_license(license, paid=amount > 0)
        package = Package(
            id=new_id("pkg"),
            name=normalized,
            description=clean_description(description),
            category=clean_category(category),
            keywords=clean_keywords(keywords),
            license=expression,
            price_minor=amount,
            currency=currency,
            organization_id=organization_id,
            author_name=(
                await organization_service.get_organization(session, organization_id)
            ).name,
            quality_score=0,
            downloads=0,
            listed=False,
            updated_at=env.clock.now(),
            created_at=env.clock.now(),
        )
        if await repository.get_package_by_name(session, normalized) is not None:
            raise PackageNameTaken(f"the name {normalized!r} is taken", name=normalized)
        await repository.add(session, package)
        audit_service.record(
            session,
            action="marketplace_package.created",
            target=package.id,
            organization_id=organization_id,
            details={"name": package.name, "price": amount, "currency": currency},
        )
        return package

    async def update_package(
        self,
        session: AsyncSession,
        env: MarketEnv,
        *,
        organization_id: str,
        package_ref: str,
        changes: dict[str, Any],
    ) -> PackageView:
        """Change a package's description, category, keywords, license or price (its
        author organization only), validated as at creation. ``changes`` holds the fields
        sent; ``price`` None makes the package free. The license is checked against the
        resulting price (``LicenseRef-...`` stays for paid packages only)."""
        package = await self.owned(session, package_ref, organization_id=organization_id)
        before = _editable(package)
        if "description" in changes:
            package.description = clean_description(changes["description"] or "")
        if "category" in changes:
            package.category = clean_category(changes["category"] or "")
        if "keywords" in changes:
            package.keywords = clean_keywords(changes["keywords"] or [])
        if "price" in changes:
            price = changes["price"] or {}
            package.price_minor, package.currency = clean_price(
                price.get("amount"), price.get("currency")
            )
        package.license = canonical_license(
            changes.get("license") or package.license, paid=package.price_minor > 0
        )
        after = _editable(package)
        changed = {key: after[key] for key in after if after[key] != before[key]}
        if changed:
            await self.refresh_listing(session, env, package)
            audit_service.record(
                session,
                action="marketplace_package.updated",
                target=package.id,
                organization_id=organization_id,
                details={"name": package.name, "changes": changed},
            )
            await outbox.publish(
                session,
                "marketplace_package.updated",
                {"package_id": package.id, "package": package.name, "changes": changed},
                organization_id=organization_id,
                occurred_at=env.clock.now(),
            )
        return await self.visible(session, package.id, organization_id=organization_id)

    async def delete_package(
        self, session: AsyncSession, env: MarketEnv, *, organization_id: str, package_ref: str
    ) -> None:
        """Delete a package none of whose versions was ever published (its drafts go
        with it) and free its name; a package that was published stays (409
        ``package_published``): buyers and dependents rely on its name@versions."""
        package = await self.owned(session, package_ref, organization_id=organization_id)
        versions = await repository.list_versions(session, package_id=package.id)
        if any(version.published_at is not None for version in versions):
            raise PackagePublished(
                f"{package.name} has published versions: deprecate or yank them instead"
            )
        await search_backend(session).remove(session, package.id)
        await repository.delete_package(session, package_id=package.id)
        audit_service.record(
            session,
            action="marketplace_package.deleted",
            target=package.id,
            organization_id=organization_id,
            details={"name": package.name, "drafts": [version.version for version in versions]},
        )
        await outbox.publish(
            session,
            "marketplace_package.deleted",
            {"package_id": package.id, "package": package.name},
            organization_id=organization_id,
            occurred_at=env.clock.now(),
        )

    async def find(self, session: AsyncSession, id_or_name: str) -> Package:
        package = await repository.find_package(session, id_or_name=id_or_name.strip())
        if package is None:
            package = await repository.get_package_by_name(
                session, re.sub(r"[-_.]+", "-", id_or_name.strip()).lower()
            )
        if package is None:
            raise PackageNotFound(f"there is no package {id_or_name[:100]!r}")
        return package

    async def visible(
        self, session: AsyncSession, id_or_name: str, *, organization_id: str | None
    ) -> PackageView:
        """The package and the versions the caller may see; a package with drafts only
        is invisible to other organizations (404)."""
        package = await self.find(session, id_or_name)
        versions = await repository.list_versions(session, package_id=package.id)
        if package.organization_id != organization_id:
            versions = [version for version in versions if version.state != "draft"]
            if not versions:
                raise PackageNotFound(f"there is no package {id_or_name[:100]!r}")
        versions.sort(key=semver_key, reverse=True)
        return PackageView(package=package, versions=versions)

    async def owned(
        self, session: AsyncSession, id_or_name: str, *, organization_id: str
    ) -> Package:
        view = await self.visible(session, id_or_name, organization_id=organization_id)
        if view.package.organization_id != organization_id:
            raise NotPackageOwner("only the package's author organization may change it")
        return view.package

    async def get_package(
        self, session: AsyncSession, *, id_or_name: str, organization_id: str | None
    ) -> PackageView:
        return await self.visible(session, id_or_name, organization_id=organization_id)

    async def refresh_listing(
        self, session: AsyncSession, env: MarketEnv, package: Package
    ) -> None:
        """Recompute what follows from the package's versions and fields: listed (while a
        version is published), latest version, quality score and the search document."""
        versions = await repository.list_versions(session, package_id=package.id)
        published = [v for v in versions if v.state == "published"]
        live = [v for v in versions if v.state in ("published", "deprecated")]
        # The newest release, preferring final versions over pre-releases.
        newest = max(
            published or live,
            key=lambda v: (not semver_key(v).prerelease, semver_key(v)),
            default=None,
        )
        package.listed = bool(published)
        package.latest_version = newest.version if newest is not None else None
        package.latest_published_at = max(
            (v.published_at for v in published if v.published_at is not None), default=None
        )
        now = env.clock.now()
        package.quality_score = quality_score(
            QualityInput(
                description=package.description,
                license=package.license,
                keywords=list(package.keywords),
                latest_published_at=max(
                    (v.published_at for v in live if v.published_at is not None), default=None
                ),
                downloads=package.downloads,
                has_live_version=bool(live),
            ),
            now=now,
        )
        package.updated_at = now
        await session.flush()
        backend = search_backend(session)
        if package.listed:
            await backend.index_package(session, package)
        else:
            await backend.remove(session, package.id)


listing_service = ListingService()
