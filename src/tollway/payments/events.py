"""The ``payment.*`` outbox events: one payload for every change of a payment."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from tollway.kit.outbox import outbox
from tollway.payments.env import PaymentEnv
from tollway.payments.models import Payment


def payment_payload(payment: Payment, **extra: Any) -> dict[str, Any]:
    """What every ``payment.*`` event says about the payment, then ``extra``."""
    return {
        "id": payment.id,
        "amount": payment.amount_minor,
        "currency": payment.currency,
        "purpose": payment.purpose,
        "reference_id": payment.reference_id,
        **extra,
    }


async def publish_payment_event(
    session: AsyncSession, env: PaymentEnv, event_type: str, payment: Payment, **extra: Any
) -> None:
    """Publish ``event_type`` (``payment.succeeded``, ...) about ``payment`` in this
    transaction, to the payment's organization."""
    await outbox.publish(
        session,
        event_type,
        payment_payload(payment, **extra),
        organization_id=payment.organization_id,
        occurred_at=env.clock.now(),
    )
