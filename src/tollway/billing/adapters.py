"""The catalog and credits ports over the ``plans``, ``metering`` and ``ledger`` domains.

Billing calls those domains only through :mod:`tollway.billing.ports`; these adapters
are the installed implementations, and :func:`catalog` / :func:`credits` answer the
one in use (a test may install others with ``ports.use_catalog`` / ``use_credits``).
They import the domains' services directly: none of them imports billing, so there is
no cycle.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from sqlalchemy.ext.asyncio import AsyncSession

from tollway.billing.ports import (
    Catalog,
    Credits,
    DunningPolicy,
    LicenseState,
    MeterPrice,
    PlanTerms,
    TaxRate,
    TokenPack,
    chosen_catalog,
    chosen_credits,
)
from tollway.ledger.service.grants import grant_service
from tollway.ledger.service.holds import hold_service
from tollway.metering.service.counters import usage_counter_service
from tollway.plans.errors import UnknownPlan
from tollway.plans.service.assignments import plans_service
from tollway.plans.service.catalog import catalog_service


class PlansCatalog:
    """:class:`~tollway.billing.ports.Catalog` over ``tollway.plans.service``."""

    def __init__(self) -> None:
        self._catalog_service = catalog_service
        self._plans_service = plans_service

    @property
    def default_plan_id(self) -> str:
        return self._catalog_service.catalog.default_plan

    async def get_plan(
        self, session: AsyncSession, plan_id: str, *, version: int | None = None
    ) -> PlanTerms | None:
        try:
            priced = await self._catalog_service.priced_plan(session, plan_id, version)
        except UnknownPlan:
            return None
        catalog = self._catalog_service.catalog
        plan = priced.plan
        return PlanTerms(
            id=priced.plan_id,
            name=priced.name,
            amount_minor=priced.price.amount_minor,
            currency=priced.price.currency,
            interval="year" if priced.price.interval == "year" else "month",
            trial_days=priced.trial_days,
            monthly_tokens=priced.monthly_tokens,
            features={
                feature_id: catalog.features[feature_id].degradation
                for feature_id in (plan.features if plan is not None else {})
                if feature_id in catalog.features
            },
            meter_prices=tuple(
                MeterPrice(
                    meter=price.meter,
                    included=price.included,
                    unit_amount_minor=price.unit_amount_minor,
                    per_units=price.per_units,
                )
                for price in priced.overage
            ),
            rollover_cap=plan.token_rollover_cap if plan is not None else 0,
            catalog_version=priced.catalog_version,
            trial_credits=plan.trial_credits if plan is not None else True,
        )

    async def tax_rate(self, session: AsyncSession, country: str | None) -> TaxRate | None:
        rate = self._catalog_service.tax_rate(country)
        if rate is None:
            return None
        return TaxRate(
            country=rate.country,
            rate_bp=int(rate.percent * 100),
            inclusive=rate.inclusive,
            name=rate.name,
        )

    async def dunning_policy(self, session: AsyncSession) -> DunningPolicy:
        final: Literal["unpaid", "canceled"] = (
            "canceled" if self._catalog_service.final_dunning_policy() == "canceled" else "unpaid"
        )
        return DunningPolicy(
            retry_days=self._catalog_service.dunning_schedule(),
            grace_days=self._catalog_service.grace_days(),
            final_status=final,
        )

    async def get_token_pack(self, session: AsyncSession, pack_id: str) -> TokenPack | None:
        pack = self._catalog_service.catalog.token_packs.get(pack_id)
        if pack is None:
            return None
        return TokenPack(
            id=pack.id,
            tokens=pack.tokens,
            amount_minor=pack.price.amount_minor,
            currency=pack.price.currency,
            name=pack.name,
        )

    async def assign_plan(
        self,
        session: AsyncSession,
        organization_id: str,
        plan_id: str,
        *,
        license_state: LicenseState,
        grace_ends_at: datetime | None,
    ) -> None:
        await self._plans_service.assign_plan(
            session,
            organization_id,
            plan_id,
            license_state=license_state,
            grace_ends_at=grace_ends_at,
        )

    async def assignment(
        self, session: AsyncSession, organization_id: str
    ) -> tuple[str, LicenseState, datetime | None]:
        found = await self._plans_service.plan_of(session, organization_id)
        return found.plan_id, found.license_state, found.grace_ends_at

    async def features(self, session: AsyncSession, organization_id: str) -> dict[str, bool]:
        assignment, effective = await self._plans_service.effective_plan(session, organization_id)
        catalog = self._catalog_service.catalog
        state = assignment.license_state
        enabled: dict[str, bool] = {}
        for feature_id in effective.features:
            feature = catalog.features.get(feature_id)
            policy = feature.degradation if feature is not None else "never"
            allowed = (
                policy == "never"
                or state == "active"
                or (state == "grace" and policy == "after_grace")
            )
            enabled[feature_id] = allowed
        return enabled

    async def usage(
        self,
        session: AsyncSession,
        organization_id: str,
        meter: str,
        *,
        period_start: datetime,
        period_end: datetime,
    ) -> int:
        """The meter's aggregate over the billing period [period_start, period_end)."""
        return await usage_counter_service.usage_between(
            session,
            organization_id=organization_id,
            meter_id=meter,
            start=period_start,
            end=period_end,
        )

    async def prepare_usage(
        self, session: AsyncSession, periods: list[tuple[str, str, datetime, datetime]]
    ) -> None:
        await usage_counter_service.read_usage_ahead(session, periods=periods)


class LedgerCredits:
    """:class:`~tollway.billing.ports.Credits` over ``tollway.ledger.service``."""

    def __init__(self) -> None:
        self._grants = grant_service
        self._holds = hold_service

    async def grant_allotment(
        self,
        session: AsyncSession,
        organization_id: str,
        *,
        amount: int,
        period_start: datetime,
        period_end: datetime,
        rollover_cap: int | None,
    ) -> None:
        await self._grants.grant_allotment(
            session,
            organization_id=organization_id,
            amount=amount,
            period_start=period_start,
            period_end=period_end,
            rollover_cap=rollover_cap,
        )

    async def prepare_allotments(
        self, session: AsyncSession, periods: list[tuple[str, datetime]]
    ) -> None:
        await self._grants.prepare_allotments(session, periods=periods)

    async def grant(
        self,
        session: AsyncSession,
        organization_id: str,
        *,
        amount: int,
        source: Literal["allotment", "purchase"],
        reference: str,
        expires_at: datetime | None,
        now: datetime,
        reason: str,
    ) -> None:
        await self._grants.grant(
            session,
            organization_id=organization_id,
            amount=amount,
            source=source,
            now=now,
            reason=reason,
            expires_at=expires_at,
            reference=reference,
        )

    async def release_open_holds(
        self, session: AsyncSession, organization_id: str, *, now: datetime
    ) -> int:
        return await self._holds.release_open_holds(
            session, organization_id=organization_id, now=now
        )

    async def reverse_allotments(
        self,
        session: AsyncSession,
        organization_id: str,
        *,
        granted_from: datetime,
        expiring_by: datetime,
        now: datetime,
        reason: str,
    ) -> int:
        return await self._grants.reverse_allotments(
            session,
            organization_id=organization_id,
            granted_from=granted_from,
            expiring_by=expiring_by,
            now=now,
            reason=reason,
        )

    async def reverse_unspent(
        self,
        session: AsyncSession,
        organization_id: str,
        *,
        reference: str,
        now: datetime,
        amount: int | None = None,
    ) -> int:
        return await self._grants.reverse_grant_remaining(
            session,
            organization_id=organization_id,
            now=now,
            reason="token pack refunded" if amount is None else "token pack partly refunded",
            reference=reference,
            amount=amount,
        )


_plans_catalog = PlansCatalog()
_ledger_credits = LedgerCredits()


def catalog() -> Catalog:
    """The catalog port in use: the one a test installed, else the plans adapter."""
    chosen = chosen_catalog()
    return _plans_catalog if chosen is None else chosen


def credits() -> Credits:
    """The credits port in use: the one a test installed, else the ledger adapter."""
    chosen = chosen_credits()
    return _ledger_credits if chosen is None else chosen
