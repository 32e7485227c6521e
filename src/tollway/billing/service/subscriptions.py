"""What an organization does to its subscription: change plan (start a paid plan,
upgrade now with proration, downgrade at the period end), take a scheduled change
back, and cancel."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from tollway.audit.service import audit_service
from tollway.billing import repository
from tollway.billing.adapters import catalog
from tollway.billing.arithmetic import period_bounds, prorate
from tollway.billing.errors import (
    CurrencyMismatch,
    NotCancelable,
    PlanUnchanged,
    SubscriptionPastDue,
    UnknownPlan,
)
from tollway.billing.models import Subscription
from tollway.billing.ports import PlanTerms
from tollway.billing.service.allotments import allotment_service
from tollway.billing.service.base import (
    OWING_STATUSES,
    publish_subscription,
    subscription_plan,
    touch,
)
from tollway.billing.service.collection import collection_service
from tollway.billing.service.invoices import LineSpec, invoice_service
from tollway.billing.service.license import license_state_service
from tollway.billing.service.lifecycle import lifecycle_service
from tollway.kit.ids import new_id
from tollway.payments.env import PaymentEnv
from tollway.payments.errors import PaymentMethodRequired
from tollway.payments.service.methods import payment_method_service


def _yearly_cost(plan: PlanTerms) -> int:
    return plan.amount_minor * (1 if plan.interval == "year" else 12)


def _seconds(delta: timedelta) -> int:
    return int(delta.total_seconds())


class SubscriptionService:
    async def change_plan(
        self, session: AsyncSession, env: PaymentEnv, *, organization_id: str, plan_id: str
    ) -> Subscription:
        """Upgrade now (with proration), downgrade at the period end, or start a paid plan."""
        target = await catalog().get_plan(session, plan_id)
        if target is None:
            raise UnknownPlan(
                f"there is no plan {plan_id!r}; GET /api/v1/billing/pricing lists them"
            )
        sub = await lifecycle_service.current_for_update(
            session, env, organization_id=organization_id
        )
        now = env.clock.now()
        if target.id == sub.plan_id:
            if sub.pending_plan_id is not None or sub.cancel_at_period_end:
                # Choosing the current plan again takes back a scheduled change.
                return await self._resume(session, env, sub)
            raise PlanUnchanged(f"the organization is already on {target.id!r}")
        current_plan = await subscription_plan(session, sub)
        if not target.is_free:
            method = await payment_method_service.default_method(
                session, env, organization_id=organization_id
            )
            if method is None:
                raise PaymentMethodRequired(
                    f"the plan {target.id!r} needs a card: add one with "
                    "POST /api/v1/billing/payment-methods, then retry",
                    add_payment_method_url="/api/v1/billing/payment-methods",
                )
        if sub.status in OWING_STATUSES and not target.is_free:
            raise SubscriptionPastDue(
                "pay the open invoice first (add a working card to retry it at once)"
            )
        if current_plan.is_free or sub.status == "canceled":
            return await self._start_paid(session, env, sub, target)
        if not current_plan.is_free and target.currency != sub.currency and not target.is_free:
            raise CurrencyMismatch(f"the subscription is billed in {sub.currency}")
        if target.is_free or _yearly_cost(target) < _yearly_cost(current_plan):
            sub.pending_plan_id = target.id
            touch(env, sub)
            audit_service.record(
                session,
                action="subscription.downgrade_scheduled",
                target=sub.id,
                organization_id=organization_id,
                details={"plan": target.id},
            )
            await publish_subscription(
                session,
                env,
                sub,
                "subscription.downgrade_scheduled",
                plan=target.id,
                effective_at=sub.current_period_end.isoformat(),
            )
            return sub
        return await self._upgrade(session, env, sub, current_plan, target, now)

    async def _resume(
        self, session: AsyncSession, env: PaymentEnv, sub: Subscription
    ) -> Subscription:
        """Take back a scheduled downgrade or cancellation: the plan simply goes on."""
        sub.pending_plan_id = None
        sub.cancel_at_period_end = False
        sub.canceled_at = None
        touch(env, sub)
        await publish_subscription(session, env, sub, "subscription.updated")
        return sub

    async def _start_paid(
        self, session: AsyncSession, env: PaymentEnv, old: Subscription, plan: PlanTerms
    ) -> Subscription:
        now = env.clock.now()
        trial = plan.trial_days > 0 and not await repository.has_trialed(
            session, organization_id=old.organization_id
        )
        old.is_current = False
        if old.status != "canceled":
            old.status = "canceled"
            old.ended_at = now
        old.updated_at = now
        await session.flush()
        if trial:
            period_start, period_end = now, now + timedelta(days=plan.trial_days)
        else:
            period_start, period_end = period_bounds(now, 0, plan.interval)
        sub = Subscription(
            id=new_id("sub"),
            organization_id=old.organization_id,
            is_current=True,
            plan_id=plan.id,
            catalog_version=plan.catalog_version,
            status="trialing" if trial else "incomplete",
            currency=plan.currency,
            billing_anchor=period_end if trial else now,
            period_index=-1 if trial else 0,
            current_period_start=period_start,
            current_period_end=period_end,
            trial_end=period_end if trial else None,
            license_state="active",
            created_at=now,
            updated_at=now,
        )
        await repository.add(session, sub)
        audit_service.record(
            session,
            action="subscription.created",
            target=sub.id,
            organization_id=sub.organization_id,
            details={"plan": plan.id, "trial": trial},
        )
        await publish_subscription(session, env, sub, "subscription.created")
        if trial:
            await license_state_service.sync(session, sub)
            await allotment_service.grant_period(session, env, sub, plan)
            return sub
        invoice = await invoice_service.issue(
            session,
            env,
            sub=sub,
            organization_id=sub.organization_id,
            currency=plan.currency,
            reason="subscription_create",
            period=(period_start, period_end),
            lines=[invoice_service.base_line(plan, period_start, period_end)],
        )
        await collection_service.collect(session, env, invoice, attempt=1)
        return sub

    async def _upgrade(
        self,
        session: AsyncSession,
        env: PaymentEnv,
        sub: Subscription,
        old: PlanTerms,
        new: PlanTerms,
        now: datetime,
    ) -> Subscription:
        sub.pending_plan_id = None
        if sub.status == "trialing":
            # A plan change during the trial keeps the trial; the first invoice uses the new plan.
            sub.plan_id, sub.catalog_version = new.id, new.catalog_version
            touch(env, sub)
            await license_state_service.sync(session, sub)
            await allotment_service.grant_upgrade_difference(session, env, sub, old, new)
            await publish_subscription(
                session, env, sub, "subscription.plan_changed", previous_plan=old.id
            )
            return sub
        period = _seconds(sub.current_period_end - sub.current_period_start)
        remaining = _seconds(sub.current_period_end - now)
        credit = prorate(old.amount_minor, remaining_seconds=remaining, period_seconds=period)
        lines = [
            LineSpec(
                kind="proration_credit",
                description=f"Unused time on {old.name}",
                amount_minor=-credit,
                period_start=now,
                period_end=sub.current_period_end,
                reference=old.id,
            )
        ]
        if new.interval == old.interval:
            charge = prorate(new.amount_minor, remaining_seconds=remaining, period_seconds=period)
            lines.append(
                LineSpec(
                    kind="proration_charge",
                    description=f"Remaining time on {new.name}",
                    amount_minor=charge,
                    period_start=now,
                    period_end=sub.current_period_end,
                    reference=new.id,
                )
            )
        else:
            # Another interval starts a new period now, billed in full.
            sub.billing_anchor, sub.period_index = now, 0
            sub.current_period_start, sub.current_period_end = period_bounds(now, 0, new.interval)
            lines.append(
                invoice_service.base_line(new, sub.current_period_start, sub.current_period_end)
            )
        sub.plan_id, sub.catalog_version = new.id, new.catalog_version
        touch(env, sub)
        await license_state_service.sync(session, sub)
        audit_service.record(
            session,
            action="subscription.upgraded",
            target=sub.id,
            organization_id=sub.organization_id,
            details={"from": old.id, "to": new.id},
        )
        await publish_subscription(
            session, env, sub, "subscription.plan_changed", previous_plan=old.id
        )
        invoice = await invoice_service.issue(
            session,
            env,
            sub=sub,
            organization_id=sub.organization_id,
            currency=new.currency,
            reason="subscription_update",
            period=(now, sub.current_period_end),
            lines=lines,
        )
        if invoice.status == "open":
            await collection_service.collect(session, env, invoice, attempt=1)
        await allotment_service.grant_upgrade_difference(session, env, sub, old, new)
        return sub

    async def cancel(
        self, session: AsyncSession, env: PaymentEnv, *, organization_id: str, at_period_end: bool
    ) -> Subscription:
        """Cancel at the period end (default) or now; the organization then returns to Free."""
        sub = await lifecycle_service.current_for_update(
            session, env, organization_id=organization_id
        )
        plan = await subscription_plan(session, sub)
        if plan.is_free:
            raise NotCancelable("the free plan has nothing to cancel")
        now = env.clock.now()
        audit_service.record(
            session,
            action="subscription.cancel",
            target=sub.id,
            organization_id=organization_id,
            details={"at_period_end": at_period_end},
        )
        if at_period_end and sub.status not in ("incomplete", "unpaid"):
            sub.cancel_at_period_end = True
            sub.canceled_at = now
            touch(env, sub)
            await publish_subscription(
                session,
                env,
                sub,
                "subscription.cancel_scheduled",
                effective_at=sub.current_period_end.isoformat(),
            )
            return sub
        return await lifecycle_service.end(session, env, sub, at=now, void_open=True)


subscription_service = SubscriptionService()
