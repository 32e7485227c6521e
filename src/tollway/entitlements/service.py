"""The decision: may this organization use feature F for quantity Q now? (DESIGN.md §5)

Checks in order, the first failure wins:

1. the API key (``invalid_api_key``; done by authentication before we are called)
2. the license state allows the feature (``license_degraded``)
3. the plan includes the feature (``feature_not_in_plan``)
4. the rate limit of the feature or tier (``rate_limited``), then, when credits are
   asked for, the ledger's abuse battery (``too_frequent``, ``request_too_large``,
   ``temporarily_blocked``, its own ``rate_limited``)
5. the quota of the period (``quota_exceeded``), hard or soft per plan
6. credits: reserve ``credits`` if > 0 (``insufficient_credits``)
7. the usage event, idempotent on ``idempotency_key``

Steps 1-4 (rate limit) read only caches and the rate limiter. Steps 4 (abuse), 5, 6
and 7 write, so they run as one unit of a group-committed transaction
(:mod:`tollway.entitlements.writer`): the answer leaves only after its writes are
durable. A later step that says no takes back what the earlier steps wrote (the
quota consumed), so a denial never uses quota.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from tollway.db import Database
from tollway.entitlements.cache import EntitlementsCache, OrganizationEntitlements
from tollway.entitlements.ratelimit import RateLimiter, RateLimitStatus
from tollway.entitlements.seams import (
    AbuseBattery,
    CreditsReserver,
    LedgerAbuseBattery,
    LedgerCreditsReserver,
)
from tollway.entitlements.writer import GroupCommitter
from tollway.errors import Unprocessable
from tollway.kit.clock import Clock
from tollway.kit.ids import new_id
from tollway.kit.numbers import MAX_CREDITS, MAX_QUANTITY, is_whole
from tollway.ledger.service.transfers import DEFAULT_HOLD_TTL_SECONDS
from tollway.metering.service.counters import usage_counter_service
from tollway.metering.service.records import ConsumeRequest, Consumption, meter_limits
from tollway.plans.catalog import Degradation
from tollway.plans.errors import UnknownFeature
from tollway.plans.service.assignments import PlanAssignment
from tollway.plans.service.catalog import catalog_service

#: The feature every call to Tollway's own API with an API key goes through.
API_FEATURE = "api"


@dataclass
class EntitlementsRuntime:
    """The per-process machinery of the decision (one per application)."""

    database: Database
    clock: Clock
    limiter: RateLimiter
    cache: EntitlementsCache
    committer: GroupCommitter
    abuse: AbuseBattery = field(default_factory=LedgerAbuseBattery)
    credits: CreditsReserver = field(default_factory=LedgerCreditsReserver)

    async def close(self) -> None:
        await self.limiter.close()


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    code: str | None = None
    detail: str | None = None
    reservation_id: str | None = None
    remaining: dict[str, int | None] = field(default_factory=dict)
    reset_at: datetime | None = None
    rate_limit: RateLimitStatus | None = None
    retry_after: int | None = None
    duplicate: bool = False

    @property
    def headers(self) -> dict[str, str]:
        headers = dict(self.rate_limit.headers) if self.rate_limit is not None else {}
        if self.retry_after is not None:
            headers["Retry-After"] = str(max(1, self.retry_after))
        return headers


@dataclass(frozen=True, slots=True)
class FeatureEntitlement:
    feature: str
    enabled: bool
    reason: str | None
    degradation: Degradation
    meter: str | None
    quota: int | None
    enforcement: str | None
    rate_limit_per_minute: int | None


@dataclass(frozen=True, slots=True)
class EntitlementsView:
    plan: str
    plan_name: str
    license_state: str
    grace_ends_at: datetime | None
    features: list[FeatureEntitlement]
    limits: dict[str, int | None]
    rate_limit_per_minute: int | None


def license_allows(degradation: Degradation, assignment: PlanAssignment, now: datetime) -> bool:
    """DESIGN.md §6: ``immediate`` features stop at the first failed payment,
    ``after_grace`` ones when grace ends, ``never`` ones never."""
    if degradation == "never" or assignment.license_state == "active":
        return True
    if degradation == "immediate":
        return False
    if assignment.license_state == "grace":
        return assignment.grace_ends_at is None or now < assignment.grace_ends_at
    return False


class EntitlementsService:
    async def decide(
        self,
        runtime: EntitlementsRuntime,
        *,
        organization_id: str,
        subject: str,
        feature: str,
        quantity: int = 1,
        credits: int = 0,
        idempotency_key: str | None = None,
        properties: dict[str, Any] | None = None,
        tier_rate_limit: bool = False,
        source: str = "authorize",
        session: AsyncSession | None = None,
    ) -> Decision:
        """Run the checks of DESIGN.md §5 in order; a denial is an answer, not an error.

        ``subject`` is who the rate limits count (the API key); ``properties`` go with
        the usage event (a ``unique`` meter counts one of them). ``tier_rate_limit``
        applies the plan's per-minute limit (Tollway's own API) instead of the feature's.
        Bad input (unknown feature, quantity < 1, credits < 0) raises a 422.

        Without ``session`` the writes are group-committed before this returns. Another
        domain deciding inside its own transaction passes its ``session``: the writes
        then commit (or roll back) with the caller's work. Never call it without a
        session while holding a write transaction: on SQLite it would wait for itself.
        """
        feature_def = catalog_service.catalog.features.get(feature)
        if feature_def is None:
            raise UnknownFeature(f"there is no feature {feature!r}", feature=feature)
        if not is_whole(quantity) or not 1 <= quantity <= MAX_QUANTITY:
            raise Unprocessable(
                f"quantity must be a whole number from 1 to {MAX_QUANTITY:,}",
                code="invalid_quantity",
            )
        if not is_whole(credits) or not 0 <= credits <= MAX_CREDITS:
            raise Unprocessable(
                f"credits must be a whole number from 0 to {MAX_CREDITS:,}",
                code="invalid_credits",
            )
        now = runtime.clock.now()
        org: OrganizationEntitlements = await runtime.cache.get(organization_id)

        # 2. license state
        if not license_allows(feature_def.degradation, org.assignment, now):
            return Decision(
                allowed=False,
                code="license_degraded",
                detail=f"the license is {org.assignment.license_state}; "
                f"{feature} is off until the open invoice is paid",
            )
        # 3. plan
        plan_feature = org.effective.features.get(feature)
        if plan_feature is None:
            return Decision(
                allowed=False,
                code="feature_not_in_plan",
                detail=f"the {org.effective.plan.name} plan does not include {feature}",
            )
        # 4. rate limit (the abuse battery runs in the transaction below)
        per_minute = (
            org.effective.rate_limit_per_minute
            if tier_rate_limit
            else plan_feature.rate_limit_per_minute
        )
        rate_limit: RateLimitStatus | None = None
        if per_minute is not None:
            rate_limit = await runtime.limiter.hit(per_minute, organization_id, subject, feature)
            if not rate_limit.allowed:
                return Decision(
                    allowed=False,
                    code="rate_limited",
                    detail=f"at most {per_minute} requests a minute for {feature}",
                    rate_limit=rate_limit,
                    retry_after=max(1, rate_limit.reset_seconds),
                )
        if feature_def.meter is None and credits == 0:
            return Decision(allowed=True, rate_limit=rate_limit)
        meter = catalog_service.catalog.meters[feature_def.meter] if feature_def.meter else None
        if credits == 0 and meter is not None and meter.aggregation != "unique" and not properties:
            # The hot path: quota and usage event only, metered together with the
            # other decisions of the round in a few statements.
            request = ConsumeRequest(
                organization_id=organization_id,
                meter_id=meter.id,
                quantity=quantity,
                idempotency_key=idempotency_key or new_id("authz"),
                limit=plan_feature.quota,
                hard=plan_feature.enforcement == "hard",
                now=now,
                source=source,
            )
            consumption: Consumption = (
                (await usage_counter_service.consume_many(session, [request]))[0]
                if session is not None
                else await runtime.committer.run_batched(_consume_many, request)
            )
            return _decision_for(consumption, rate_limit=rate_limit)

        async def unit(shared: AsyncSession) -> Decision:
            return await self._write_steps(
                shared,
                runtime,
                org=org,
                organization_id=organization_id,
                subject=subject,
                feature=feature,
                meter=feature_def.meter,
                quantity=quantity,
                credits=credits,
                idempotency_key=idempotency_key,
                properties=properties,
                quota=plan_feature.quota,
                hard=plan_feature.enforcement == "hard",
                rate_limit=rate_limit,
                now=now,
                source=source,
            )

        if session is not None:
            return await unit(session)
        return await runtime.committer.run(unit)

    async def _write_steps(
        self,
        session: AsyncSession,
        runtime: EntitlementsRuntime,
        *,
        org: OrganizationEntitlements,
        organization_id: str,
        subject: str,
        feature: str,
        meter: str | None,
        quantity: int,
        credits: int,
        idempotency_key: str | None,
        properties: dict[str, Any] | None,
        quota: int | None,
        hard: bool,
        rate_limit: RateLimitStatus | None,
        now: datetime,
        source: str,
    ) -> Decision:
        if credits > 0 and idempotency_key is not None:
            # A retry is answered as the first time, before the battery could count it
            # as a new request (a retry at once would be ``too_frequent``).
            replayed = await self._replay(
                session,
                runtime,
                organization_id=organization_id,
                feature=feature,
                meter=meter,
                quantity=quantity,
                credits=credits,
                idempotency_key=idempotency_key,
                properties=properties,
                quota=quota,
                rate_limit=rate_limit,
                now=now,
            )
            if replayed is not None:
                return replayed
        # 4. the abuse battery (only for decisions that spend credits)
        if credits > 0:
            verdict = await runtime.abuse.evaluate(
                session,
                organization_id=organization_id,
                subject=subject,
                credits=credits,
                now=now,
                limits=org.effective.abuse,
            )
            if not verdict.allowed:
                return Decision(
                    allowed=False,
                    code=verdict.code or "rate_limited",
                    detail=verdict.detail,
                    rate_limit=rate_limit,
                    retry_after=verdict.retry_after,
                )
        # 5. quota, and 7. the usage event in the same statement pair
        consumption: Consumption | None = None
        if meter is not None:
            consumption = await usage_counter_service.consume(
                session,
                organization_id=organization_id,
                meter_id=meter,
                quantity=quantity,
                idempotency_key=idempotency_key or new_id("authz"),
                limit=quota,
                hard=hard,
                now=now,
                properties=properties,
                source=source,
                credits=credits,
            )
            if not consumption.allowed:
                return _decision_for(consumption, rate_limit=rate_limit)
        remaining: dict[str, int | None] = (
            {consumption.meter: consumption.remaining} if consumption is not None else {}
        )
        reset_at = consumption.reset_at if consumption is not None else None
        # 6. credits
        reservation_id: str | None = None
        if credits > 0 and not (consumption is not None and consumption.duplicate):
            hold = await runtime.credits.reserve(
                session,
                organization_id=organization_id,
                amount=credits,
                now=now,
                feature=feature,
                idempotency_key=idempotency_key,
                subject=subject,
            )
            if not hold.allowed:
                if consumption is not None:
                    await usage_counter_service.undo(
                        session, organization_id=organization_id, consumption=consumption
                    )
                return Decision(
                    allowed=False,
                    code=hold.code or "insufficient_credits",
                    detail=hold.detail,
                    remaining=remaining,
                    reset_at=reset_at,
                    rate_limit=rate_limit,
                )
            reservation_id = hold.reservation_id
        return Decision(
            allowed=True,
            reservation_id=reservation_id,
            remaining=remaining,
            reset_at=reset_at,
            rate_limit=rate_limit,
            duplicate=consumption.duplicate if consumption is not None else False,
        )

    async def _replay(
        self,
        session: AsyncSession,
        runtime: EntitlementsRuntime,
        *,
        organization_id: str,
        feature: str,
        meter: str | None,
        quantity: int,
        credits: int,
        idempotency_key: str,
        properties: dict[str, Any] | None,
        quota: int | None,
        rate_limit: RateLimitStatus | None,
        now: datetime,
    ) -> Decision | None:
        """The answer to a retry of an allowed decision that spent credits: its
        reservation and the meter as it is now, nothing counted or held again. None when
        the key is new (a denied decision kept nothing, so its retry is decided anew)."""
        hold = await runtime.credits.find(
            session,
            organization_id=organization_id,
            idempotency_key=idempotency_key,
            amount=credits,
            feature=feature,
            now=now,
        )
        consumption: Consumption | None = None
        if meter is not None:
            consumption = await usage_counter_service.replay(
                session,
                organization_id=organization_id,
                meter_id=meter,
                quantity=quantity,
                idempotency_key=idempotency_key,
                limit=quota,
                now=now,
                properties=properties,
                credits=credits,
            )
        if hold is None and consumption is None:
            return None
        return Decision(
            allowed=True,
            reservation_id=hold.reservation_id if hold is not None else None,
            remaining={consumption.meter: consumption.remaining} if consumption else {},
            reset_at=consumption.reset_at if consumption else None,
            rate_limit=rate_limit,
            duplicate=True,
        )

    async def describe(
        self, runtime: EntitlementsRuntime, *, organization_id: str
    ) -> EntitlementsView:
        """What the organization's plan and license allow now (GET /entitlements)."""
        org = await runtime.cache.get(organization_id)
        now = runtime.clock.now()
        catalog = catalog_service.catalog
        features: list[FeatureEntitlement] = []
        for feature in catalog.features.values():
            granted = org.effective.features.get(feature.id)
            reason: str | None = None
            if granted is None:
                reason = "feature_not_in_plan"
            elif not license_allows(feature.degradation, org.assignment, now):
                reason = "license_degraded"
            features.append(
                FeatureEntitlement(
                    feature=feature.id,
                    enabled=reason is None,
                    reason=reason,
                    degradation=feature.degradation,
                    meter=feature.meter,
                    quota=granted.quota if granted is not None else None,
                    enforcement=granted.enforcement if granted and feature.meter else None,
                    rate_limit_per_minute=granted.rate_limit_per_minute if granted else None,
                )
            )
        return EntitlementsView(
            plan=org.effective.plan.id,
            plan_name=org.effective.plan.name,
            license_state=org.assignment.license_state,
            grace_ends_at=org.assignment.grace_ends_at,
            features=features,
            limits=meter_limits(org.effective),
            rate_limit_per_minute=org.effective.rate_limit_per_minute,
        )


def _decision_for(consumption: Consumption, *, rate_limit: RateLimitStatus | None) -> Decision:
    remaining = {consumption.meter: consumption.remaining}
    if not consumption.allowed:
        return Decision(
            allowed=False,
            code="quota_exceeded",
            detail=f"the {consumption.meter} quota of {consumption.limit} "
            + ("is used up" if consumption.lifetime else "for this period is used up"),
            remaining=remaining,
            reset_at=consumption.reset_at,
            rate_limit=rate_limit,
        )
    return Decision(
        allowed=True,
        remaining=remaining,
        reset_at=consumption.reset_at,
        rate_limit=rate_limit,
        duplicate=consumption.duplicate,
    )


async def _consume_many(session: AsyncSession, requests: list[Any]) -> list[Any]:
    """The group committer's batch handler for the hot path."""
    return list(await usage_counter_service.consume_many(session, requests))


entitlements_service = EntitlementsService()


def build_runtime(
    *,
    database: Database,
    clock: Clock,
    redis_url: str | None = None,
    hold_ttl_seconds: int = DEFAULT_HOLD_TTL_SECONDS,
) -> EntitlementsRuntime:
    return EntitlementsRuntime(
        database=database,
        clock=clock,
        limiter=RateLimiter(redis_url),
        cache=EntitlementsCache(database, clock),
        committer=GroupCommitter(database),
        credits=LedgerCreditsReserver(hold_ttl_seconds),
    )
