"""Buying a token pack: its invoice, charged to the default card at once or paid on a
checkout page; the order's credits land when it is paid (:mod:`.orders`)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from tollway.audit.service import audit_service
from tollway.billing import repository
from tollway.billing.adapters import catalog
from tollway.billing.errors import TokenPackNotFound
from tollway.billing.models import PackOrder
from tollway.billing.service.base import INVOICE_PURPOSE
from tollway.billing.service.collection import collection_service
from tollway.billing.service.invoices import LineSpec, invoice_service
from tollway.billing.service.orders import pack_order_service
from tollway.kit.ids import new_id
from tollway.payments.env import PaymentEnv
from tollway.payments.service.checkout import checkout_service
from tollway.payments.service.methods import payment_method_service


class PackService:
    async def purchase(
        self, session: AsyncSession, env: PaymentEnv, *, organization_id: str, pack_id: str
    ) -> PackOrder:
        """Invoice a token pack; charge the default card at once, or open a checkout page."""
        pack = await catalog().get_token_pack(session, pack_id)
        if pack is None:
            raise TokenPackNotFound(f"there is no token pack {pack_id!r}")
        now = env.clock.now()
        order_id = new_id("ord")
        invoice = await invoice_service.issue(
            session,
            env,
            sub=None,
            organization_id=organization_id,
            currency=pack.currency,
            reason="token_pack",
            period=None,
            lines=[
                LineSpec(
                    kind="token_pack",
                    description=f"{pack.name or pack.id}: {pack.tokens} tokens",
                    amount_minor=pack.amount_minor,
                    reference=order_id,
                )
            ],
        )
        order = PackOrder(
            id=order_id,
            organization_id=organization_id,
            pack_id=pack.id,
            tokens=pack.tokens,
            invoice_id=invoice.id,
            status="pending",
            created_at=now,
        )
        await repository.add(session, order)
        audit_service.record(
            session,
            action="pack_order.created",
            target=order.id,
            organization_id=organization_id,
            details={"pack": pack.id, "invoice": invoice.number},
        )
        if invoice.status == "paid":
            await pack_order_service.fulfil(session, env, order)
            return order
        method = await payment_method_service.default_method(
            session, env, organization_id=organization_id
        )
        if method is not None:
            await collection_service.collect(session, env, invoice, attempt=1)
            return order
        checkout = await checkout_service.start_checkout(
            session,
            env,
            organization_id=organization_id,
            amount_minor=invoice.total_minor,
            currency=invoice.currency,
            purpose=INVOICE_PURPOSE,
            reference_id=invoice.id,
            description=f"{pack.tokens} tokens ({invoice.number})",
        )
        order.checkout_url = checkout.url
        await session.flush()
        return order


pack_service = PackService()
