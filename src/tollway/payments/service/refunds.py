"""Refunds: asked for through Tollway or made at the provider, counted once.

The purpose's listener is told once about each increase of ``refunded_minor``
(:meth:`RefundService.record_refund`), whether the refund was asked for here or made
at the provider and reported by ``charge.refunded``, whichever records the new total
first.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from tollway.errors import Conflict
from tollway.payments.env import PaymentEnv
from tollway.payments.errors import RefundExceedsPaid
from tollway.payments.events import publish_payment_event
from tollway.payments.listeners import purpose_listener
from tollway.payments.models import Payment
from tollway.payments.providers.protocol import RefundRequest
from tollway.payments.service.charges import provider_metadata
from tollway.payments.webhooks.intake import webhook_intake


def refundable_minor(payment: Payment) -> int:
    """What of ``payment`` can still be refunded: paid and not refunded yet."""
    return payment.amount_minor - payment.refunded_minor


class RefundService:
    async def refund(
        self, session: AsyncSession, env: PaymentEnv, *, payment: Payment, amount_minor: int
    ) -> str:
        """Ask the provider to refund part of a succeeded payment; returns the refund ref."""
        if payment.status != "succeeded" or payment.provider_ref is None:
            raise Conflict(
                "only a succeeded payment can be refunded", code="payment_not_refundable"
            )
        available = refundable_minor(payment)
        if amount_minor <= 0 or amount_minor > available:
            raise RefundExceedsPaid(
                f"at most {available} {payment.currency} of this payment can still be refunded",
                refundable=available,
            )
        started = await webhook_intake.provider(session, env, name=payment.provider).refund(
            RefundRequest(
                payment_ref=payment.provider_ref,
                amount_minor=amount_minor,
                idempotency_key=f"refund:{payment.id}:{payment.refunded_minor + amount_minor}",
                already_refunded_minor=payment.refunded_minor,
                payment_amount_minor=payment.amount_minor,
                currency=payment.currency,
                metadata=provider_metadata(payment),
            )
        )
        # Counted at once, so that a second refund before the provider's event arrives
        # cannot exceed the payment; the event then finds nothing new to record.
        await self.record_refund(
            session, env, payment, refunded_total=payment.refunded_minor + amount_minor
        )
        return started.provider_ref

    async def record_refund(
        self, session: AsyncSession, env: PaymentEnv, payment: Payment, *, refunded_total: int
    ) -> int:
        """Raise ``refunded_minor`` to ``refunded_total`` (capped at the amount) and tell
        the purpose's listener about the increase. A total at or below the recorded one
        (a repeated or late ``charge.refunded``) changes nothing. Returns the increase."""
        target = min(refunded_total, payment.amount_minor)
        before = payment.refunded_minor
        if target <= before:
            return 0
        payment.refunded_minor = target
        await session.flush()
        await publish_payment_event(
            session, env, "payment.refunded", payment, refunded=target, refunded_now=target - before
        )
        listener = purpose_listener(payment.purpose)
        if listener is not None:
            await listener.payment_refunded(session, env, payment, refunded_minor_before=before)
        return target - before


refund_service = RefundService()
