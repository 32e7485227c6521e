"""Token-pack orders: pending until their invoice is paid (the credits land) or its
collection fails."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from tollway.billing import repository
from tollway.billing.adapters import credits
from tollway.billing.models import Invoice, PackOrder
from tollway.kit.outbox import outbox
from tollway.payments.env import PaymentEnv


class PackOrderService:
    async def for_invoice(self, session: AsyncSession, invoice: Invoice) -> PackOrder | None:
        """The order a token-pack invoice sells (locked); None for any other invoice."""
        if invoice.billing_reason != "token_pack":
            return None
        return await repository.get_pack_order_by_invoice(session, invoice_id=invoice.id)

    async def fulfil(self, session: AsyncSession, env: PaymentEnv, order: PackOrder) -> None:
        """Its invoice is paid: grant the pack's credits (once)."""
        if order.granted_at is not None:
            return
        now = env.clock.now()
        await credits().grant(
            session,
            order.organization_id,
            amount=order.tokens,
            source="purchase",
            reference=f"pack:{order.id}",
            expires_at=None,
            now=now,
            reason=f"token pack {order.pack_id} ({order.id})",
        )
        order.status = "paid"
        order.granted_at = now
        await session.flush()
        await outbox.publish(
            session,
            "pack_order.paid",
            {"id": order.id, "tokens": order.tokens},
            organization_id=order.organization_id,
            occurred_at=now,
        )

    async def fail(self, session: AsyncSession, env: PaymentEnv, order: PackOrder) -> None:
        """The charge for its invoice failed: a pending order fails (nothing was granted)."""
        if order.status != "pending":
            return
        order.status = "failed"
        await outbox.publish(
            session,
            "pack_order.failed",
            {"id": order.id, "invoice_id": order.invoice_id},
            organization_id=order.organization_id,
            occurred_at=env.clock.now(),
        )


pack_order_service = PackOrderService()
