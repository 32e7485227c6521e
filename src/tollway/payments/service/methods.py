"""Saved payment methods (cards): the default one pays off-session charges."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from tollway.audit.service import audit_service
from tollway.errors import NotFound, Unprocessable
from tollway.kit.ids import new_id
from tollway.kit.outbox import outbox
from tollway.payments import repository
from tollway.payments.env import PaymentEnv
from tollway.payments.errors import CardNumbersNotAccepted
from tollway.payments.listeners import method_listeners
from tollway.payments.models import PaymentMethod
from tollway.payments.providers.protocol import AttachedMethod, CardInput, SetupRequest
from tollway.payments.service.customers import customer_service
from tollway.payments.service.prepared import forget_prepared_cards
from tollway.payments.webhooks.intake import webhook_intake


@dataclass(frozen=True, slots=True)
class SetupStarted:
    """A hosted page where the customer saves a card (Stripe Checkout, ``setup`` mode)."""

    url: str


class PaymentMethodService:
    async def add_payment_method(
        self,
        session: AsyncSession,
        env: PaymentEnv,
        *,
        organization_id: str,
        card: CardInput | None,
    ) -> PaymentMethod | SetupStarted:
        """The sandbox saves ``card`` at once; Stripe answers a page that collects it."""
        provider = webhook_intake.provider(session, env)
        if provider.accepts_card_numbers:
            if card is None:
                raise Unprocessable(
                    "card_number, exp_month, exp_year and cvc are required", field="card_number"
                )
            return await self.add_card(session, env, organization_id=organization_id, card=card)
        if card is not None:
            raise CardNumbersNotAccepted(
                f"the {provider.name} provider collects cards on its own page: "
                "POST without a body and open the setup_url"
            )
        customer_ref = await customer_service.ensure_customer(
            session, env, organization_id=organization_id
        )
        base = env.settings.base_url.rstrip("/")
        started = await provider.create_setup_session(
            SetupRequest(
                customer_ref=customer_ref,
                success_url=f"{base}/api/v1/payments/checkout/done",
                cancel_url=f"{base}/api/v1/payments/checkout/done",
                idempotency_key=f"setup:{organization_id}:{new_id('set')}",
                metadata={"organization_id": organization_id, "purpose": "payment_method"},
            )
        )
        return SetupStarted(url=started.url)

    async def add_card(
        self, session: AsyncSession, env: PaymentEnv, *, organization_id: str, card: CardInput
    ) -> PaymentMethod:
        """Attach a card and make it the default (the newest card pays from now on)."""
        customer_ref = await customer_service.ensure_customer(
            session, env, organization_id=organization_id
        )
        provider = webhook_intake.provider(session, env)
        attached = await provider.attach_card(customer_ref=customer_ref, card=card)
        method = await self.save_method(
            session,
            env,
            organization_id=organization_id,
            provider=provider.name,
            attached=attached,
            make_default=True,
        )
        assert method is not None
        return method

    async def save_method(
        self,
        session: AsyncSession,
        env: PaymentEnv,
        *,
        organization_id: str,
        provider: str,
        attached: AttachedMethod | None,
        provider_ref: str | None = None,
        make_default: bool,
    ) -> PaymentMethod | None:
        """Record (or complete) a saved card; ``make_default`` makes it the one that pays.

        Safe in any order and when repeated: a card removed before is never revived,
        card details fill in whenever they arrive, and the listeners are told only
        when the default actually changes.
        """
        ref = attached.provider_ref if attached is not None else provider_ref
        assert ref is not None
        forget_prepared_cards(session)
        method = await repository.get_method_by_ref(session, provider=provider, provider_ref=ref)
        if method is not None and method.detached_at is not None:
            return None
        created = method is None
        if method is None:
            method = PaymentMethod(
                id=new_id("pm"),
                organization_id=organization_id,
                provider=provider,
                provider_ref=ref,
                brand="card",
                last4="",
                exp_month=0,
                exp_year=0,
                is_default=False,
                created_at=env.clock.now(),
            )
        if attached is not None:
            method.brand = attached.brand[:20]
            method.last4 = attached.last4[-4:]
            method.exp_month = attached.exp_month
            method.exp_year = attached.exp_year
        if created:
            await repository.add(session, method)
            audit_service.record(
                session,
                action="payment_method.attached",
                target=method.id,
                organization_id=organization_id,
                details={"brand": method.brand, "last4": method.last4},
            )
        becomes_default = make_default and not method.is_default
        if becomes_default:
            await repository.clear_default(session, organization_id=organization_id)
            method.is_default = True
        await session.flush()
        if created or becomes_default:
            await outbox.publish(
                session,
                "payment_method.attached",
                {
                    "id": method.id,
                    "brand": method.brand,
                    "last4": method.last4,
                    "default": method.is_default,
                },
                organization_id=organization_id,
                occurred_at=env.clock.now(),
            )
        if becomes_default:
            for listener in method_listeners():
                await listener(session, env, organization_id)
        return method

    async def list_methods(
        self, session: AsyncSession, env: PaymentEnv, *, organization_id: str
    ) -> list[PaymentMethod]:
        return await repository.list_methods(
            session, organization_id=organization_id, provider=env.settings.payment_provider
        )

    async def default_method(
        self, session: AsyncSession, env: PaymentEnv, *, organization_id: str
    ) -> PaymentMethod | None:
        methods = await self.list_methods(session, env, organization_id=organization_id)
        return next((method for method in methods if method.is_default), None)

    async def remove_method(
        self, session: AsyncSession, env: PaymentEnv, *, organization_id: str, method_id: str
    ) -> None:
        method = await repository.get_method(
            session, method_id=method_id, organization_id=organization_id
        )
        if method is None:
            raise NotFound("no such payment method", code="payment_method_not_found")
        await webhook_intake.provider(session, env).detach_payment_method(
            payment_method_ref=method.provider_ref
        )
        await self.forget_method(session, env, method)

    async def forget_method(
        self, session: AsyncSession, env: PaymentEnv, method: PaymentMethod
    ) -> None:
        """Mark a saved card detached; the newest remaining one becomes the default."""
        if method.detached_at is not None:
            return
        forget_prepared_cards(session)
        organization_id = method.organization_id
        was_default = method.is_default
        method.detached_at = env.clock.now()
        method.is_default = False
        await session.flush()
        if was_default:
            remaining = await repository.list_methods(
                session, organization_id=organization_id, provider=method.provider
            )
            if remaining:
                remaining[0].is_default = True
                await session.flush()
        audit_service.record(
            session,
            action="payment_method.detached",
            target=method.id,
            organization_id=organization_id,
        )
        await outbox.publish(
            session,
            "payment_method.detached",
            {"id": method.id},
            organization_id=organization_id,
            occurred_at=env.clock.now(),
        )


payment_method_service = PaymentMethodService()
