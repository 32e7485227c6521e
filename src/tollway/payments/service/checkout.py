"""Hosted payment pages for one-off purchases, and the sandbox's own page."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from tollway.errors import Conflict, NotFound
from tollway.kit.ids import new_id
from tollway.payments import repository
from tollway.payments.env import PaymentEnv
from tollway.payments.models import CheckoutSession, Payment
from tollway.payments.providers.protocol import CardInput, CheckoutRequest
from tollway.payments.service.charges import provider_metadata
from tollway.payments.service.customers import customer_service
from tollway.payments.webhooks.intake import webhook_intake


class CheckoutService:
    async def start_checkout(
        self,
        session: AsyncSession,
        env: PaymentEnv,
        *,
        organization_id: str,
        amount_minor: int,
        currency: str,
        purpose: str,
        reference_id: str,
        description: str,
    ) -> CheckoutSession:
        """A hosted payment page for a one-off purchase."""
        customer_ref = await customer_service.ensure_customer(
            session, env, organization_id=organization_id
        )
        provider = webhook_intake.provider(session, env)
        payment = Payment(
            id=new_id("pay"),
            organization_id=organization_id,
            provider=provider.name,
            purpose=purpose,
            reference_id=reference_id,
            amount_minor=amount_minor,
            currency=currency,
            status="pending",
            created_at=env.clock.now(),
        )
        payment.idempotency_key = f"checkout:{payment.id}"
        await repository.add(session, payment)
        base = env.settings.base_url.rstrip("/")
        started = await provider.create_checkout(
            CheckoutRequest(
                amount_minor=amount_minor,
                currency=currency,
                description=description,
                customer_ref=customer_ref,
                success_url=f"{base}/api/v1/payments/checkout/done",
                cancel_url=f"{base}/api/v1/payments/checkout/done",
                idempotency_key=payment.idempotency_key,
                metadata=provider_metadata(payment),
            )
        )
        checkout = CheckoutSession(
            id=new_id("cs"),
            organization_id=organization_id,
            provider=provider.name,
            provider_ref=started.provider_ref,
            payment_id=payment.id,
            description=description,
            amount_minor=amount_minor,
            currency=currency,
            url=started.url,
            status="open",
            created_at=env.clock.now(),
        )
        await repository.add(session, checkout)
        return checkout

    async def get_sandbox_checkout(
        self, session: AsyncSession, *, session_ref: str
    ) -> CheckoutSession:
        checkout = await repository.get_checkout_by_ref(
            session, provider="sandbox", provider_ref=session_ref
        )
        if checkout is None:
            raise NotFound("no such checkout session", code="checkout_not_found")
        return checkout

    async def pay_sandbox_checkout(
        self, session: AsyncSession, env: PaymentEnv, *, session_ref: str, card: CardInput
    ) -> CheckoutSession:
        """The sandbox checkout page's pay button: the outcome arrives as signed events."""
        if env.settings.payment_provider != "sandbox":
            raise NotFound("the sandbox is not the configured provider", code="not_found")
        checkout = await self.get_sandbox_checkout(session, session_ref=session_ref)
        if checkout.status != "open":
            raise Conflict("this checkout session is already completed", code="checkout_closed")
        payment = await repository.get_payment(session, checkout.payment_id)
        assert payment is not None
        await webhook_intake.sandbox(session, env).complete_checkout(
            session_ref=session_ref,
            card=card,
            amount_minor=checkout.amount_minor,
            currency=checkout.currency,
            metadata=provider_metadata(payment),
        )
        checkout.status = "complete"
        await session.flush()
        return checkout


checkout_service = CheckoutService()
