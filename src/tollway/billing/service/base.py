"""What every billing service does to a subscription or an invoice it changes: read its
plan, stamp it, set its status, and publish the change."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from tollway.billing.adapters import catalog
from tollway.billing.errors import UnknownPlan
from tollway.billing.models import Invoice, Subscription
from tollway.billing.ports import PlanTerms
from tollway.kit.outbox import outbox
from tollway.payments.env import PaymentEnv

#: The payment purpose of every charge for an invoice (payments tells
#: :data:`~tollway.billing.service.collection.invoice_payments` about them).
INVOICE_PURPOSE = "invoice"
#: A subscription in these statuses owes an open invoice.
OWING_STATUSES = ("past_due", "unpaid", "incomplete")


def stable_reference(subscription_id: str, period_start: datetime, reason: str) -> str:
    """What a subscription invoice's charge pays, named without the invoice's own ID."""
    return f"{subscription_id}:{period_start:%Y%m%dT%H%M%S}:{reason}"


async def plan_terms(session: AsyncSession, plan_id: str, version: int | None = None) -> PlanTerms:
    plan = await catalog().get_plan(session, plan_id, version=version)
    if plan is None:
        raise UnknownPlan(f"the plan {plan_id!r} is no longer in the catalog")
    return plan


async def subscription_plan(session: AsyncSession, sub: Subscription) -> PlanTerms:
    """The subscription's plan at the prices of the catalog version it was priced at
    (a later catalog never re-prices it: base fee, trial, tokens and overage)."""
    return await plan_terms(session, sub.plan_id, sub.catalog_version)


def touch(env: PaymentEnv, sub: Subscription) -> None:
    # No flush: the row is written once, by the next query's autoflush or the commit.
    sub.updated_at = env.clock.now()


async def set_status(
    session: AsyncSession, env: PaymentEnv, sub: Subscription, status: str
) -> None:
    if sub.status == status:
        return
    previous, sub.status = sub.status, status
    touch(env, sub)
    await publish_subscription(
        session, env, sub, f"subscription.{status}", previous_status=previous
    )


async def publish_subscription(
    session: AsyncSession,
    env: PaymentEnv,
    sub: Subscription,
    event_type: str,
    **extra: Any,
) -> None:
    payload: dict[str, Any] = {
        "id": sub.id,
        "plan": sub.plan_id,
        "status": sub.status,
        "license_state": sub.license_state,
        "current_period_start": sub.current_period_start.isoformat(),
        "current_period_end": sub.current_period_end.isoformat(),
        **extra,
    }
    await outbox.publish(
        session,
        event_type,
        payload,
        organization_id=sub.organization_id,
        occurred_at=env.clock.now(),
    )


async def publish_invoice(
    session: AsyncSession, env: PaymentEnv, invoice: Invoice, event_type: str
) -> None:
    await outbox.publish(
        session,
        event_type,
        {
            "id": invoice.id,
            "number": invoice.number,
            "status": invoice.status,
            "total": invoice.total_minor,
            "currency": invoice.currency,
        },
        organization_id=invoice.organization_id,
        occurred_at=env.clock.now(),
    )
