"""A subscription's life: what an organization is on (Free until it chooses a plan),
the Free subscription booked on first write, and the end of a subscription (back to
Free)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from tollway.accounts.service.organizations import organization_service
from tollway.billing import repository
from tollway.billing.adapters import catalog
from tollway.billing.arithmetic import period_bounds
from tollway.billing.models import INCOMPLETE_EXPIRED, Subscription
from tollway.billing.service.allotments import allotment_service
from tollway.billing.service.base import (
    plan_terms,
    publish_invoice,
    publish_subscription,
    touch,
)
from tollway.billing.service.license import license_state_service
from tollway.kit.ids import new_id
from tollway.payments.env import PaymentEnv


class LifecycleService:
    async def current(
        self, session: AsyncSession, env: PaymentEnv, *, organization_id: str
    ) -> Subscription:
        """The organization's subscription, read only: reads never write.

        An organization that never subscribed has no row; it is answered with an unsaved
        view (``id`` None, status ``active``) of what entitlements enforce for it: the
        plan and license state of its assignment - the default plan, or one an operator
        assigned (``PUT /api/v1/admin/organizations/{id}/plan``) - in monthly periods
        counted from the organization's creation.
        """
        sub = await repository.get_current_subscription(session, organization_id=organization_id)
        if sub is not None:
            return sub
        plan_id, license_state, grace_ends_at = await catalog().assignment(session, organization_id)
        plan = await catalog().get_plan(session, plan_id)
        interval = plan.interval if plan is not None else "month"
        now = env.clock.now()
        organization = await organization_service.get_organization(session, organization_id)
        anchor = min(organization.created_at, now)
        index = 0
        period_start, period_end = period_bounds(anchor, index, interval)
        while period_end <= now:
            index += 1
            period_start, period_end = period_bounds(anchor, index, interval)
        return Subscription(
            id=None,
            organization_id=organization_id,
            is_current=True,
            plan_id=plan_id,
            catalog_version=plan.catalog_version if plan is not None else None,
            status="active",
            currency=plan.currency if plan is not None else "usd",
            billing_anchor=anchor,
            period_index=index,
            current_period_start=period_start,
            current_period_end=period_end,
            cancel_at_period_end=False,
            license_state=license_state,
            grace_ends_at=grace_ends_at,
            created_at=anchor,
            updated_at=now,
        )

    async def current_for_update(
        self, session: AsyncSession, env: PaymentEnv, *, organization_id: str
    ) -> Subscription:
        """The subscription a write changes, locked; a first-time organization's Free
        subscription is booked here (in the write, never in a read)."""
        sub = await repository.get_current_subscription(
            session, organization_id=organization_id, for_update=True
        )
        if sub is None:
            sub = await self.start_free(session, env, organization_id=organization_id)
        return sub

    async def start_free(
        self,
        session: AsyncSession,
        env: PaymentEnv,
        *,
        organization_id: str,
        at: datetime | None = None,
    ) -> Subscription:
        free_id = catalog().default_plan_id
        plan = await plan_terms(session, free_id)
        start = at or env.clock.now()
        period_start, period_end = period_bounds(start, 0, plan.interval)
        sub = Subscription(
            id=new_id("sub"),
            organization_id=organization_id,
            is_current=True,
            plan_id=plan.id,
            catalog_version=plan.catalog_version,
            status="active",
            currency=plan.currency,
            billing_anchor=start,
            period_index=0,
            current_period_start=period_start,
            current_period_end=period_end,
            license_state="active",
            created_at=env.clock.now(),
            updated_at=env.clock.now(),
        )
        await repository.add(session, sub)
        await license_state_service.sync(session, sub)
        await allotment_service.grant_period(session, env, sub, plan)
        await publish_subscription(session, env, sub, "subscription.created")
        return sub

    async def end(
        self,
        session: AsyncSession,
        env: PaymentEnv,
        sub: Subscription,
        *,
        at: datetime,
        void_open: bool,
        uncollectible: bool = False,
    ) -> Subscription:
        """End ``sub`` and start the organization's Free subscription at ``at``; its open
        invoices are voided (``void_open``), marked uncollectible, or left open."""
        await allotment_service.take_back_trial_credits(session, env, sub, why="canceled")
        for invoice in await repository.list_open_invoices(session, subscription_id=sub.id):
            if uncollectible:
                invoice.status = "uncollectible"
                await publish_invoice(session, env, invoice, "invoice.marked_uncollectible")
            elif void_open:
                invoice.status = "void"
                invoice.voided_at = env.clock.now()
                await publish_invoice(session, env, invoice, "invoice.voided")
        sub.status = "canceled"
        sub.license_state = "canceled"
        sub.ended_at = at
        sub.canceled_at = sub.canceled_at or at
        sub.is_current = False
        sub.next_retry_at = None
        touch(env, sub)
        await publish_subscription(session, env, sub, "subscription.canceled")
        await publish_subscription(session, env, sub, "license.state_changed", state="canceled")
        return await self.start_free(session, env, organization_id=sub.organization_id, at=at)

    async def expire_incomplete(
        self, session: AsyncSession, env: PaymentEnv, *, subscription_id: str
    ) -> bool:
        """A first invoice unpaid for :data:`~tollway.billing.models.INCOMPLETE_EXPIRY`:
        void it, back to Free (row claimed by the caller)."""
        sub = await session.get(Subscription, subscription_id)
        if sub is None or not INCOMPLETE_EXPIRED.is_due(sub, env.clock.now()):
            return False
        await self.end(session, env, sub, at=env.clock.now(), void_open=True)
        return True


lifecycle_service = LifecycleService()
