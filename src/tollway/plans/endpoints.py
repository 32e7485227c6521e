from __future__ import annotations

from fastapi import Path

from tollway.auth.dependencies import AdminPrincipal
from tollway.kit.routing import ClockDep, SessionDep, api_router
from tollway.plans.catalog import Plan, TokenPack
from tollway.plans.schemas import (
    MoneyOut,
    OverageOut,
    OverridesIn,
    OverridesOut,
    PlanAssignmentIn,
    PlanAssignmentOut,
    PlanFeatureOut,
    PlanOut,
    PriceOut,
    PricingOut,
    TokenPackListOut,
    TokenPackOut,
)
from tollway.plans.service.assignments import apply_overrides, plans_service
from tollway.plans.service.catalog import catalog_service

router = api_router(tags=["plans"])

OrganizationId = Path(min_length=1, max_length=40, description="the organization's id")


def _plan_out(plan: Plan) -> PlanOut:
    catalog = catalog_service.catalog
    effective = apply_overrides(plan, {})
    limits: dict[str, int | None] = {}
    features: dict[str, PlanFeatureOut] = {}
    for feature_id, granted in effective.features.items():
        feature = catalog.features[feature_id]
        meter = catalog.meters.get(feature.meter) if feature.meter else None
        features[feature_id] = PlanFeatureOut(
            meter=feature.meter,
            quota=granted.quota,
            enforcement=granted.enforcement if meter is not None else None,
            period=meter.period if meter is not None else None,
            rate_limit_per_minute=granted.rate_limit_per_minute,
            degradation=feature.degradation,
            overage=OverageOut(
                unit_amount=granted.overage.unit_amount_minor,
                per_units=granted.overage.per_units,
            )
            if granted.overage is not None
            else None,
        )
        if meter is not None:
            limits[meter.id] = granted.quota
    return PlanOut(
        id=plan.id,
        name=plan.name,
        price=PriceOut(
            amount=plan.price.amount_minor,
            currency=plan.price.currency,
            interval=plan.price.interval,
        ),
        trial_days=plan.trial_days,
        features=features,
        limits=limits,
        monthly_tokens=plan.monthly_tokens,
        token_rollover_cap=plan.token_rollover_cap,
        rate_limit_per_minute=plan.rate_limit_per_minute,
    )


@router.get("/api/v1/billing/pricing", response_model=PricingOut)
async def pricing(session: SessionDep, clock: ClockDep) -> PricingOut:
    """The public price list: every plan with its price, trial, features and limits
    (``null`` limits are unlimited; a feature's ``overage`` is the price of use above its
    soft quota, billed in arrears), and the token packs. Needs no credentials."""
    await catalog_service.refresh(session, now=clock.now())
    return PricingOut(
        catalog_version=catalog_service.current_version,
        plans=[_plan_out(plan) for plan in catalog_service.list_plans()],
        token_packs=[_pack_out(pack) for pack in catalog_service.token_packs()],
    )


def _pack_out(pack: TokenPack) -> TokenPackOut:
    return TokenPackOut(
        id=pack.id,
        name=pack.name,
        tokens=pack.tokens,
        price=MoneyOut(amount=pack.price.amount_minor, currency=pack.price.currency),
    )


@router.get("/api/v1/credits/packs", response_model=TokenPackListOut)
async def token_packs(session: SessionDep, clock: ClockDep) -> TokenPackListOut:
    """The token packs for sale (credits and price); buy one with
    ``POST /api/v1/credits/packs/{id}/purchase``. Needs no credentials."""
    await catalog_service.refresh(session, now=clock.now())
    return TokenPackListOut(items=[_pack_out(pack) for pack in catalog_service.token_packs()])


@router.get("/api/v1/admin/organizations/{organization_id}/overrides", response_model=OverridesOut)
async def get_overrides(
    _admin: AdminPrincipal, session: SessionDep, organization_id: str = OrganizationId
) -> OverridesOut:
    """An organization's custom limits (platform admins only)."""
    overrides = await plans_service.get_overrides(session, organization_id)
    return OverridesOut(organization_id=organization_id, overrides=overrides)


@router.put("/api/v1/admin/organizations/{organization_id}/overrides", response_model=OverridesOut)
async def put_overrides(
    body: OverridesIn,
    _admin: AdminPrincipal,
    session: SessionDep,
    clock: ClockDep,
    organization_id: str = OrganizationId,
) -> OverridesOut:
    """Replace an organization's custom limits (enterprise deals): per feature
    ``enabled``, ``quota`` (null: unlimited), ``enforcement``, ``rate_limit_per_minute``,
    the tier ``rate_limit_per_minute``, and ``abuse``: any of the plan's abuse battery
    thresholds (``max_credits_per_request``, ``min_interval_seconds`` ...), used by the
    reservation endpoint and ``/authorize``. Every process applies them within a second."""
    overrides = await plans_service.set_overrides(
        session, organization_id, body.document(), now=clock.now()
    )
    return OverridesOut(organization_id=organization_id, overrides=overrides)


@router.put("/api/v1/admin/organizations/{organization_id}/plan", response_model=PlanAssignmentOut)
async def put_plan(
    body: PlanAssignmentIn,
    _admin: AdminPrincipal,
    session: SessionDep,
    clock: ClockDep,
    organization_id: str = OrganizationId,
) -> PlanAssignmentOut:
    """Put an organization on a plan by hand, with a license state (platform admins
    only; subscriptions do this themselves). 404 ``unknown_plan`` for a plan the catalog
    does not have."""
    assignment = await plans_service.assign_plan(
        session,
        organization_id,
        body.plan,
        license_state=body.license_state,
        grace_ends_at=body.grace_ends_at,
        now=clock.now(),
    )
    return PlanAssignmentOut(
        organization_id=assignment.organization_id,
        plan=assignment.plan_id,
        license_state=assignment.license_state,
        grace_ends_at=assignment.grace_ends_at,
    )
