"""Renewals: closing a subscription's ended period (the ``billing.renew`` sweep), one
chunk of subscriptions per transaction.

A chunk is read ahead (:meth:`RenewalService.prepare`), renewed one subscription at a
time (:meth:`RenewalService.renew`), and its invoices are charged together at the end
(:meth:`RenewalService.finish`): between the first two and the last, the chunk's
charges wait in :data:`_CHUNK_CHARGES`, this transaction's named state. A renewal made
outside a chunk charges its invoice at once.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from tollway.billing.adapters import catalog
from tollway.billing.arithmetic import period_bounds
from tollway.billing.models import RENEWAL_DUE, Subscription
from tollway.billing.service.allotments import allotment_service
from tollway.billing.service.base import (
    INVOICE_PURPOSE,
    plan_terms,
    publish_subscription,
    set_status,
    stable_reference,
    subscription_plan,
    touch,
)
from tollway.billing.service.collection import InvoiceAttempt, collection_service
from tollway.billing.service.invoices import LineSpec, invoice_service
from tollway.billing.service.license import license_state_service
from tollway.billing.service.lifecycle import lifecycle_service
from tollway.kit.session_state import SessionKey
from tollway.payments.env import PaymentEnv
from tollway.payments.service.charges import charge_service

#: The invoices of a renewal chunk waiting for their charge (set by prepare, charged
#: by finish); absent outside a chunk.
_CHUNK_CHARGES: SessionKey[list[InvoiceAttempt]] = SessionKey("tollway.billing.deferred_charges")


class RenewalService:
    async def prepare(
        self, session: AsyncSession, env: PaymentEnv, subscriptions: list[Subscription]
    ) -> None:
        """Read what the renewals of a sweep's chunk need in one query each instead of
        one per renewal: the organizations (the invoices' buyer and tax country) and
        their default cards (the charges). Only a reading ahead: :meth:`renew` decides
        as before, and reads anything not read here itself."""
        organization_ids = [sub.organization_id for sub in subscriptions]
        if not organization_ids:
            return
        # The chunk's charges are made together by finish, once every renewal of the
        # chunk has its invoice.
        _CHUNK_CHARGES.set(session, [])
        await invoice_service.prepare_buyers(session, organization_ids)
        # The ended periods' usage, for their overage lines (see renew).
        periods: list[tuple[str, str, datetime, datetime]] = []
        for sub in subscriptions:
            if sub.current_period_start >= sub.current_period_end:
                continue
            plan = await catalog().get_plan(session, sub.plan_id, version=sub.catalog_version)
            if plan is None:
                continue  # renew says what is wrong, for this subscription alone
            periods += [
                (sub.organization_id, price.meter, sub.current_period_start, sub.current_period_end)
                for price in plan.meter_prices
            ]
        await catalog().prepare_usage(session, periods)
        # A renewal's period starts where the ended one ends; its invoice's charge is
        # named after that (see CollectionService.charge).
        await charge_service.prepare_charges(
            session,
            env,
            organization_ids=organization_ids,
            purpose=INVOICE_PURPOSE,
            stable_references=[
                stable_reference(sub.id, sub.current_period_end, "subscription_cycle")
                for sub in subscriptions
            ],
        )

    async def renew(self, session: AsyncSession, env: PaymentEnv, *, subscription_id: str) -> bool:
        """Close the ended period of one subscription; False when it was not due.

        The caller holds the row (the sweep claims it with ``claim_due``). In a chunk
        (after :meth:`prepare`) the invoice's charge waits for :meth:`finish`.
        """
        sub = await session.get(Subscription, subscription_id)
        if sub is None or not RENEWAL_DUE.is_due(sub, env.clock.now()):
            return False
        ended_start, ended_end = sub.current_period_start, sub.current_period_end
        if not sub.cancel_at_period_end:
            await allotment_service.take_back_trial_credits(session, env, sub, why="ended")
        if sub.cancel_at_period_end:
            await lifecycle_service.end(session, env, sub, at=ended_end, void_open=False)
            return True
        # The ended period's plan at the prices the subscription pays (its overage too).
        old_plan = await subscription_plan(session, sub)
        if sub.pending_plan_id is not None:
            target = await plan_terms(session, sub.pending_plan_id)
            sub.pending_plan_id = None
            if target.is_free:
                await lifecycle_service.end(session, env, sub, at=ended_end, void_open=False)
                return True
            sub.plan_id, sub.catalog_version = target.id, target.catalog_version
            await license_state_service.sync(session, sub)
            await publish_subscription(
                session, env, sub, "subscription.plan_changed", previous_plan=old_plan.id
            )
        plan = await subscription_plan(session, sub)
        sub.period_index += 1
        sub.current_period_start, sub.current_period_end = period_bounds(
            sub.billing_anchor, sub.period_index, plan.interval
        )
        if sub.status == "trialing":
            await set_status(session, env, sub, "active")
        touch(env, sub)
        await publish_subscription(session, env, sub, "subscription.renewed")
        lines: list[LineSpec] = []
        if not plan.is_free:
            lines.append(
                invoice_service.base_line(plan, sub.current_period_start, sub.current_period_end)
            )
        if ended_start < ended_end and sub.trial_end != ended_end:
            lines += await invoice_service.overage_lines(
                session, sub, old_plan, ended_start, ended_end
            )
        if not lines:
            await allotment_service.grant_period(session, env, sub, plan)
            return True
        invoice = await invoice_service.issue(
            session,
            env,
            sub=sub,
            organization_id=sub.organization_id,
            currency=plan.currency,
            reason="subscription_cycle",
            period=(sub.current_period_start, sub.current_period_end),
            lines=lines,
        )
        if invoice.status == "open":
            chunk = _CHUNK_CHARGES.get(session)
            if chunk is not None:
                chunk.append((invoice, 1))
            else:
                await collection_service.collect(session, env, invoice, attempt=1)
        return True

    async def finish(self, session: AsyncSession, env: PaymentEnv) -> None:
        """Make the charges of a renewal chunk's invoices (see :meth:`prepare`)."""
        waiting = _CHUNK_CHARGES.pop(session)
        if waiting:
            await collection_service.charge(session, env, waiting)


renewal_service = RenewalService()
