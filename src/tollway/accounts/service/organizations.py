"""Organizations: lookups, the cached view and the billing profile."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from tollway.accounts import repository
from tollway.accounts.errors import InvalidCountry
from tollway.accounts.models import Organization
from tollway.accounts.service.records import BillingProfile, OrganizationView
from tollway.audit.service import audit_service
from tollway.errors import NotFound
from tollway.kit.cache import TTLCache
from tollway.kit.countries import normalize_country


def _billing_profile(organization: Organization) -> BillingProfile:
    return BillingProfile(
        name=organization.billing_name,
        country=organization.billing_country,
        address_lines=list(organization.billing_address or []),
        tax_id=organization.billing_tax_id,
    )


class OrganizationService:
    def __init__(self) -> None:
        self._organizations: TTLCache[str, OrganizationView] = TTLCache()

    async def get_organization(self, session: AsyncSession, organization_id: str) -> Organization:
        organization = await repository.organizations(session).get_by_id(organization_id)
        if organization is None:
            raise NotFound("no such organization")
        return organization

    async def get_organizations(
        self, session: AsyncSession, organization_ids: list[str]
    ) -> dict[str, Organization]:
        """Many organizations in one query (a billing sweep's chunk), by ID."""
        found = await repository.organizations(session).list_by_ids(organization_ids)
        return {organization.id: organization for organization in found}

    async def organization_view(
        self, session: AsyncSession, organization_id: str, *, now: datetime
    ) -> OrganizationView:
        """The organization as callers see it, read at most once a second per process."""

        async def load() -> OrganizationView:
            organization = await self.get_organization(session, organization_id)
            return OrganizationView(
                id=organization.id,
                name=organization.name,
                billing_country=organization.billing_country,
                billing_email=organization.billing_email,
                created_at=organization.created_at,
            )

        return await self._organizations.get_or_load(organization_id, now=now, load=load)

    async def billing_profile(self, session: AsyncSession, organization_id: str) -> BillingProfile:
        return _billing_profile(await self.get_organization(session, organization_id))

    async def set_billing_profile(
        self,
        session: AsyncSession,
        organization_id: str,
        *,
        name: str | None,
        country: str | None,
        address_lines: list[str],
        tax_id: str | None,
        actor: str | None = None,
    ) -> BillingProfile:
        """Replace the billing profile. ``country`` must be an ISO 3166-1 alpha-2 code
        (any case; 422 ``invalid_country`` otherwise, and nothing is written). Invoices
        issued from now on use it; issued ones keep the parties they were issued to."""
        code: str | None = None
        if country is not None:
            try:
                code = normalize_country(country)
            except ValueError as error:
                raise InvalidCountry(str(error), country=country) from None
        organization = await self.get_organization(session, organization_id)
        organization.billing_name = name
        organization.billing_country = code
        organization.billing_address = list(address_lines)
        organization.billing_tax_id = tax_id
        profile = _billing_profile(organization)
        audit_service.record(
            session,
            action="organization.billing_profile_changed",
            target=organization_id,
            organization_id=organization_id,
            actor=actor,
            details={"name": name, "country": code, "tax_id": tax_id},
        )
        await session.flush()
        self._organizations.discard(organization_id)
        return profile


organization_service = OrganizationService()
