"""The provider's customer of each organization, made when first needed."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from tollway.kit.ids import new_id
from tollway.payments import repository
from tollway.payments.env import PaymentEnv
from tollway.payments.models import PaymentCustomer
from tollway.payments.service.prepared import forget_prepared_cards
from tollway.payments.webhooks.intake import webhook_intake


class CustomerService:
    async def ensure_customer(
        self, session: AsyncSession, env: PaymentEnv, *, organization_id: str, name: str = ""
    ) -> str:
        provider = webhook_intake.provider(session, env)
        customer = await repository.get_customer(
            session, organization_id=organization_id, provider=provider.name
        )
        if customer is not None:
            return customer.provider_ref
        ref = await provider.create_customer(
            organization_id=organization_id, email=None, name=name or organization_id
        )
        forget_prepared_cards(session)
        await repository.add(
            session,
            PaymentCustomer(
                id=new_id("cus"),
                organization_id=organization_id,
                provider=provider.name,
                provider_ref=ref,
            ),
        )
        return ref

    async def portal_url(
        self, session: AsyncSession, env: PaymentEnv, *, organization_id: str
    ) -> str:
        """A session of the provider's customer portal (cards, receipts) for the organization."""
        provider = webhook_intake.provider(session, env)
        customer_ref = await self.ensure_customer(session, env, organization_id=organization_id)
        return await provider.create_portal_session(
            customer_ref=customer_ref,
            return_url=f"{env.settings.base_url.rstrip('/')}/api/v1/payments/checkout/done",
        )


customer_service = CustomerService()
