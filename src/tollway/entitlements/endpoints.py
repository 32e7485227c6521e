from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import Depends, Request, Response
from fastapi.routing import APIRoute

from tollway.entitlements.auth import AuthorizeKey, EntitlementsReader
from tollway.entitlements.schemas import AuthorizeIn, AuthorizeOut, EntitlementsOut, FeatureOut
from tollway.entitlements.service import EntitlementsRuntime, entitlements_service
from tollway.kit.routing import api_router
from tollway.ledger.auth import spending_subject

router = api_router(tags=["entitlements"])


def get_runtime(request: Request) -> EntitlementsRuntime:
    runtime: EntitlementsRuntime = request.app.state.entitlements
    return runtime


RuntimeDep = Annotated[EntitlementsRuntime, Depends(get_runtime)]


async def authorize(body: AuthorizeIn, principal: AuthorizeKey, request: Request) -> Response:
    """May this customer use ``feature`` for ``quantity`` now? The checks of DESIGN.md
    §5 run in order and the first failure answers ``allowed: false`` with its ``code``:
    ``license_degraded``, ``feature_not_in_plan``, ``rate_limited`` (``Retry-After``),
    ``too_frequent``, ``request_too_large``, ``temporarily_blocked``, ``quota_exceeded``,
    ``insufficient_credits``. An allowed decision has recorded
    its usage event (and reserved ``credits``) durably before it is answered; a retry
    with the same ``idempotency_key`` is answered again without counting twice.
    ``RateLimit-*`` headers come with every answer of a rate-limited feature. An
    invalid, revoked or expired key is 401 ``invalid_api_key``; an unknown feature,
    a quantity below 1 or negative credits are 422."""
    decision = await entitlements_service.decide(
        get_runtime(request),
        organization_id=principal.organization_id,
        subject=spending_subject(principal),
        feature=body.feature,
        quantity=body.quantity,
        credits=body.credits,
        idempotency_key=body.idempotency_key,
        properties=body.properties,
    )
    # Serialised here rather than through the response model: this is the hot path,
    # and the document is exactly AuthorizeOut (which the OpenAPI schema shows).
    content = orjson.dumps(
        {
            "allowed": decision.allowed,
            "code": decision.code,
            "detail": decision.detail,
            "reservation_id": decision.reservation_id,
            "remaining": decision.remaining,
            "reset_at": decision.reset_at.isoformat().replace("+00:00", "Z")
            if decision.reset_at is not None
            else None,
            "duplicate": decision.duplicate,
        }
    )
    return Response(content, media_type="application/json", headers=decision.headers)


# The decision commits its own (group-committed) transaction; a request transaction
# opened around it (as an Idempotency-Key header would make TransactionalRoute do) would
# hold SQLite's writer while waiting for it. The body's idempotency_key is /authorize's
# retry mechanism, so the route is a plain one.
router.add_api_route(
    "/api/v1/authorize",
    authorize,
    methods=["POST"],
    response_model=AuthorizeOut,
    route_class_override=APIRoute,
)


@router.get("/api/v1/entitlements", response_model=EntitlementsOut)
async def entitlements(
    principal: EntitlementsReader,
    runtime: RuntimeDep,
) -> EntitlementsOut:
    """The organization's plan, license state and, per feature, whether it is enabled
    now (``reason`` says why not) with its quota and rate limit; ``limits`` per meter
    (``null``: unlimited)."""
    view = await entitlements_service.describe(runtime, organization_id=principal.organization_id)
    return EntitlementsOut(
        plan=view.plan,
        plan_name=view.plan_name,
        license_state=view.license_state,
        grace_ends_at=view.grace_ends_at,
        features={
            feature.feature: FeatureOut(
                enabled=feature.enabled,
                reason=feature.reason,
                degradation=feature.degradation,
                meter=feature.meter,
                quota=feature.quota,
                enforcement=feature.enforcement,
                rate_limit_per_minute=feature.rate_limit_per_minute,
            )
            for feature in view.features
        },
        limits=view.limits,
        rate_limit_per_minute=view.rate_limit_per_minute,
    )
