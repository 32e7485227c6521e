"""The catalog and credits ports over the ``plans`` and ``ledger`` domains.

Those domains are built alongside billing; until both are installed the ports
answer 503 ``billing_unavailable``. They are looked up by name so that billing
imports (and type-checks) without them; once they are on main these adapters become
plain imports.
"""

from __future__ import annotations

import importlib
import importlib.util
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import AsyncSession

from tollway.billing.ports import (
    DunningPolicy,
    LicenseState,
    PlanTerms,
    TaxRate,
    TokenPack,
)


def _module(name: str) -> Any | None:
    if importlib.util.find_spec(name.rsplit(".", 1)[0]) is None:
        return None
    if importlib.util.find_spec(name) is None:
        return None
    return importlib.import_module(name)


class PlansCatalog:
    """:class:`~tollway.billing.ports.Catalog` over ``tollway.plans.service``."""

    def __init__(self, plans: Any) -> None:
        self._catalog_service = plans.catalog_service
        self._plans_service = plans.plans_service

    @property
    def default_plan_id(self) -> str:
        return str(self._catalog_service.catalog.default_plan)

    async def get_plan(self, session: AsyncSession, plan_id: str) -> PlanTerms | None:
        catalog = self._catalog_service.catalog
        plan = catalog.plans.get(plan_id)
        if plan is None:
            return None
        return PlanTerms(
            id=plan.id,
            name=plan.name,
            amount_minor=int(plan.price.amount_minor),
            currency=str(plan.price.currency),
            interval="year" if plan.price.interval == "year" else "month",
            trial_days=int(plan.trial_days),
            monthly_tokens=int(plan.monthly_tokens),
            features={
                feature_id: catalog.features[feature_id].degradation
                for feature_id in plan.features
                if feature_id in catalog.features
            },
            rollover_cap=int(plan.token_rollover_cap or 0),
        )

    async def tax_rate(self, session: AsyncSession, country: str | None) -> TaxRate | None:
        rate = self._catalog_service.tax_rate(country)
        if rate is None:
            return None
        return TaxRate(
            country=str(rate.country),
            rate_bp=int(Decimal(rate.percent) * 100),
            inclusive=bool(rate.inclusive),
            name=str(rate.name),
        )

    async def dunning_policy(self, session: AsyncSession) -> DunningPolicy:
        final: Literal["unpaid", "canceled"] = (
            "canceled" if self._catalog_service.final_dunning_policy() == "canceled" else "unpaid"
        )
        return DunningPolicy(
            retry_days=tuple(int(days) for days in self._catalog_service.dunning_schedule()),
            grace_days=int(self._catalog_service.grace_days()),
            final_status=final,
        )

    async def get_token_pack(self, session: AsyncSession, pack_id: str) -> TokenPack | None:
        pack = self._catalog_service.catalog.token_packs.get(pack_id)
        if pack is None:
            return None
        return TokenPack(
            id=pack.id,
            tokens=int(pack.tokens),
            amount_minor=int(pack.price.amount_minor),
            currency=str(pack.price.currency),
            name=str(pack.name),
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
        # The plans repository expires every object of the session after its upsert;
        # reload what billing holds, so that reading an attribute never needs I/O.
        for instance in list(session.identity_map.values()):
            if inspect(instance).expired_attributes:
                await session.refresh(instance)

    async def features(self, session: AsyncSession, organization_id: str) -> dict[str, bool]:
        assignment, effective = await self._plans_service.effective_plan(session, organization_id)
        catalog = self._catalog_service.catalog
        state = assignment.license_state
        enabled: dict[str, bool] = {}
        for feature_id, plan_feature in effective.features.items():
            feature = catalog.features.get(feature_id)
            policy = feature.degradation if feature is not None else "never"
            allowed = (
                policy == "never"
                or state == "active"
                or (state == "grace" and policy == "after_grace")
            )
            enabled[feature_id] = bool(getattr(plan_feature, "enabled", True)) and allowed
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
        # The catalog prices no overage yet (plans carry no meter prices), so billing
        # never asks; metering answers here once it does.
        return 0


class LedgerCredits:
    """:class:`~tollway.billing.ports.Credits` over ``tollway.ledger.service``."""

    def __init__(self, ledger: Any) -> None:
        self._ledger = ledger.ledger_service

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
        await self._ledger.grant_allotment(
            session,
            organization_id=organization_id,
            amount=amount,
            period_start=period_start,
            period_end=period_end,
            rollover_cap=rollover_cap,
        )

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
        await self._ledger.grant(
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
        return int(
            await self._ledger.release_open_holds(session, organization_id=organization_id, now=now)
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
        return int(
            await self._ledger.reverse_grant_remaining(
                session,
                organization_id=organization_id,
                now=now,
                reason="token pack refunded" if amount is None else "token pack partly refunded",
                reference=reference,
                amount=amount,
            )
        )


def installed_catalog() -> PlansCatalog | None:
    plans = _module("tollway.plans.service")
    return PlansCatalog(plans) if plans is not None else None


def installed_credits() -> LedgerCredits | None:
    ledger = _module("tollway.ledger.service")
    return LedgerCredits(ledger) if ledger is not None else None
