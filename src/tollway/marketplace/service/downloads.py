"""Downloads: who may have a version's artifact, and the download counts."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from tollway.marketplace import repository
from tollway.marketplace.errors import PurchaseRequired, VersionNotFound
from tollway.marketplace.models import Package, PackageVersion
from tollway.marketplace.service.listing import listing_service


@dataclass(frozen=True, slots=True)
class Download:
    package: Package
    version: PackageVersion


class DownloadService:
    async def prepare_download(
        self, session: AsyncSession, *, organization_id: str, package_ref: str, version: str
    ) -> Download:
        """The version to stream if the caller may have it: the author, or an organization
        that acquired the package (buyers keep deprecated and yanked versions)."""
        view = await listing_service.visible(session, package_ref, organization_id=organization_id)
        package = view.package
        row = next((v for v in view.versions if v.version == version.strip()), None)
        if row is None:
            raise VersionNotFound(f"{package.name} has no version {version[:100]!r}")
        if package.organization_id != organization_id:
            entitled = await repository.list_entitled_package_ids(
                session, organization_id=organization_id, package_ids=[package.id]
            )
            if package.id not in entitled:
                raise PurchaseRequired(
                    f"acquire {package.name} first: "
                    f"POST /api/v1/marketplace/packages/{package.id}/purchase"
                    + (" (free)" if package.is_free else ""),
                    package_id=package.id,
                    purchase_url=f"/api/v1/marketplace/packages/{package.id}/purchase",
                )
        return Download(package=package, version=row)

    async def record_download(
        self, session: AsyncSession, *, package_id: str, version_id: str
    ) -> None:
        await repository.count_downloads(session, package_id=package_id, version_id=version_id)


download_service = DownloadService()
