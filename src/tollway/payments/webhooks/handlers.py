"""What each provider event type changes, applied by the webhook queue's sweep.

Every handler *sets* state through the payments services, so a repeated or late event
changes nothing. Imported by the payments domain itself (``tollway.registry``), which
enters them with :func:`~tollway.payments.webhooks.queue.handles`.
"""

from __future__ import annotations

from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from tollway.audit.service import audit_service
from tollway.kit.ids import new_id
from tollway.kit.outbox import outbox
from tollway.payments import repository
from tollway.payments.env import PaymentEnv
from tollway.payments.models import Payment, PaymentMethod
from tollway.payments.providers.protocol import AttachedMethod, ProviderEvent
from tollway.payments.service.charges import charge_service
from tollway.payments.service.disputes import dispute_service
from tollway.payments.service.methods import payment_method_service
from tollway.payments.service.prepared import forget_prepared_cards
from tollway.payments.service.refunds import refund_service
from tollway.payments.webhooks.queue import handles

log = structlog.get_logger("tollway.payments")


def _intent_error(obj: dict[str, Any]) -> tuple[str | None, str | None]:
    error = obj.get("last_payment_error")
    if not isinstance(error, dict):
        return None, None
    code = error.get("decline_code") or error.get("code")
    message = error.get("message")
    return (str(code) if code else None), (str(message) if message else None)


def _ref(value: object) -> str | None:
    """An object's ID whether the event carries the ID or the expanded object."""
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) and value else None


async def _payment_of(
    session: AsyncSession, provider: str, event: ProviderEvent, intent_ref: str | None
) -> Payment | None:
    payment = await charge_service.find_payment(
        session, provider=provider, obj=event.object, intent_ref=intent_ref
    )
    if payment is None:
        log.warning("webhook.payment_unknown", event_id=event.id, intent=intent_ref)
    return payment


async def _money_without_payment(
    session: AsyncSession, env: PaymentEnv, provider: str, event: ProviderEvent
) -> None:
    """Money Tollway asked for (its IDs are in the metadata) but has no payment for: a
    request rolled back after the provider charged. An operator refunds or settles it."""
    metadata = event.object.get("metadata")
    if not isinstance(metadata, dict) or not (
        "tollway_idempotency_key" in metadata or "tollway_payment_id" in metadata
    ):
        return
    organization_id = metadata.get("organization_id")
    log.error("webhook.payment_unmatched", event_id=event.id, provider=provider)
    await outbox.publish(
        session,
        "payment.unmatched",
        {
            "provider": provider,
            "event_id": event.id,
            "provider_ref": _ref(event.object.get("id")),
            "amount": event.object.get("amount_received", event.object.get("amount")),
            "currency": event.object.get("currency"),
            "metadata": {str(k): str(v) for k, v in metadata.items()},
        },
        organization_id=organization_id if isinstance(organization_id, str) else None,
        occurred_at=env.clock.now(),
    )


@handles("payment_intent.succeeded")
async def _intent_succeeded(
    session: AsyncSession, env: PaymentEnv, provider: str, event: ProviderEvent
) -> None:
    intent_ref = _ref(event.object.get("id"))
    payment = await _payment_of(session, provider, event, intent_ref)
    if payment is None:
        await _money_without_payment(session, env, provider, event)
        return
    received = event.object.get("amount_received", event.object.get("amount"))
    await charge_service.succeed_if_amount_matches(
        session,
        env,
        payment,
        event=event,
        intent_ref=intent_ref,
        amount=received,
        currency=event.object.get("currency"),
    )


@handles("payment_intent.payment_failed")
async def _intent_failed(
    session: AsyncSession, env: PaymentEnv, provider: str, event: ProviderEvent
) -> None:
    intent_ref = _ref(event.object.get("id"))
    payment = await _payment_of(session, provider, event, intent_ref)
    if payment is None:
        return
    code, message = _intent_error(event.object)
    await charge_service.mark_failed(
        session, env, payment, intent_ref=intent_ref, failure_code=code, failure_message=message
    )


@handles("payment_intent.requires_action")
async def _intent_requires_action(
    session: AsyncSession, env: PaymentEnv, provider: str, event: ProviderEvent
) -> None:
    """An off-session charge the bank wants the customer to authenticate (3-D Secure):
    nobody is there to do it, so the attempt fails and dunning asks for another card.
    On a checkout page the customer is present and finishes it: nothing to do."""
    intent_ref = _ref(event.object.get("id"))
    payment = await _payment_of(session, provider, event, intent_ref)
    if payment is None or payment.payment_method_id is None:
        return
    await charge_service.mark_failed(
        session,
        env,
        payment,
        intent_ref=intent_ref,
        failure_code="authentication_required",
        failure_message="the bank asks the customer to authenticate this payment",
    )


async def _checkout_payment(
    session: AsyncSession, provider: str, event: ProviderEvent, *, status: str | None
) -> Payment | None:
    """The checkout session's row (its status set) and its payment; None for set-up mode."""
    if event.object.get("mode") == "setup":
        return None
    session_ref = str(event.object.get("id") or "")
    checkout = await repository.get_checkout_by_ref(
        session, provider=provider, provider_ref=session_ref
    )
    if checkout is not None and status is not None and checkout.status == "open":
        checkout.status = status
    intent_ref = _ref(event.object.get("payment_intent"))
    payment = await charge_service.find_payment(
        session, provider=provider, obj=event.object, intent_ref=intent_ref
    )
    if payment is None and checkout is not None:
        payment = await repository.get_payment(session, checkout.payment_id, for_update=True)
    if payment is not None and intent_ref and payment.provider_ref is None:
        payment.provider_ref = intent_ref
    await session.flush()
    return payment


@handles("checkout.session.completed")
@handles("checkout.session.async_payment_succeeded")
async def _checkout_succeeded(
    session: AsyncSession, env: PaymentEnv, provider: str, event: ProviderEvent
) -> None:
    payment = await _checkout_payment(session, provider, event, status="complete")
    if payment is None:
        return
    if event.type == "checkout.session.completed" and event.object.get("payment_status") != "paid":
        # Unpaid: an asynchronous method (a bank debit) reports later.
        return
    await charge_service.succeed_if_amount_matches(
        session,
        env,
        payment,
        event=event,
        intent_ref=_ref(event.object.get("payment_intent")),
        amount=event.object.get("amount_total"),
        currency=event.object.get("currency"),
    )


@handles("checkout.session.async_payment_failed")
async def _checkout_async_failed(
    session: AsyncSession, env: PaymentEnv, provider: str, event: ProviderEvent
) -> None:
    payment = await _checkout_payment(session, provider, event, status="complete")
    if payment is None:
        return
    await charge_service.mark_failed(
        session,
        env,
        payment,
        intent_ref=_ref(event.object.get("payment_intent")),
        failure_code="async_payment_failed",
        failure_message="the delayed payment method failed",
    )


@handles("checkout.session.expired")
async def _checkout_expired(
    session: AsyncSession, env: PaymentEnv, provider: str, event: ProviderEvent
) -> None:
    payment = await _checkout_payment(session, provider, event, status="expired")
    if payment is None:
        return
    await charge_service.mark_failed(
        session,
        env,
        payment,
        intent_ref=None,
        failure_code="checkout_expired",
        failure_message="the checkout page expired unpaid",
    )


@handles("charge.refunded")
async def _charge_refunded(
    session: AsyncSession, env: PaymentEnv, provider: str, event: ProviderEvent
) -> None:
    intent_ref = _ref(event.object.get("payment_intent"))
    payment = await _payment_of(session, provider, event, intent_ref)
    if payment is None:
        return
    # A refund proves the charge succeeded, whatever order the events came in.
    await charge_service.succeed_if_amount_matches(
        session,
        env,
        payment,
        event=event,
        intent_ref=intent_ref,
        amount=event.object.get("amount"),
        currency=event.object.get("currency"),
    )
    refunded = event.object.get("amount_refunded")
    if isinstance(refunded, int) and not isinstance(refunded, bool):
        # Cumulative: a repeated or older event carries a total already recorded.
        await refund_service.record_refund(session, env, payment, refunded_total=refunded)


@handles("charge.dispute.created")
async def _dispute_created(
    session: AsyncSession, env: PaymentEnv, provider: str, event: ProviderEvent
) -> None:
    await dispute_service.record_dispute(
        session, env, provider=provider, obj=event.object, closed=False
    )


@handles("charge.dispute.closed")
async def _dispute_closed(
    session: AsyncSession, env: PaymentEnv, provider: str, event: ProviderEvent
) -> None:
    await dispute_service.record_dispute(
        session, env, provider=provider, obj=event.object, closed=True
    )


async def _organization_of_customer(
    session: AsyncSession, provider: str, obj: dict[str, Any]
) -> str | None:
    metadata = obj.get("metadata")
    organization_id = metadata.get("organization_id") if isinstance(metadata, dict) else None
    if isinstance(organization_id, str) and organization_id:
        return organization_id
    customer_ref = _ref(obj.get("customer"))
    if customer_ref is None:
        return None
    customer = await repository.get_customer_by_ref(
        session, provider=provider, provider_ref=customer_ref
    )
    return customer.organization_id if customer is not None else None


def _attached(obj: dict[str, Any]) -> AttachedMethod | None:
    """Brand, last four and expiry of a PaymentMethod object (None without card details)."""
    card = obj.get("card")
    ref = _ref(obj.get("id"))
    if not isinstance(card, dict) or ref is None:
        return None
    exp_month, exp_year = card.get("exp_month"), card.get("exp_year")
    return AttachedMethod(
        provider_ref=ref,
        brand=str(card.get("brand") or "card"),
        last4=str(card.get("last4") or ""),
        exp_month=exp_month if isinstance(exp_month, int) else 0,
        exp_year=exp_year if isinstance(exp_year, int) else 0,
    )


@handles("setup_intent.succeeded")
async def _setup_succeeded(
    session: AsyncSession, env: PaymentEnv, provider: str, event: ProviderEvent
) -> None:
    """A card saved on the provider's page becomes the organization's default."""
    method_ref = _ref(event.object.get("payment_method"))
    organization_id = await _organization_of_customer(session, provider, event.object)
    if method_ref is None or organization_id is None:
        log.warning("webhook.setup_unknown", event_id=event.id)
        return
    expanded = event.object.get("payment_method")
    await payment_method_service.save_method(
        session,
        env,
        organization_id=organization_id,
        provider=provider,
        attached=_attached(expanded) if isinstance(expanded, dict) else None,
        provider_ref=method_ref,
        make_default=True,
    )


@handles("payment_method.attached")
async def _method_attached(
    session: AsyncSession, env: PaymentEnv, provider: str, event: ProviderEvent
) -> None:
    """Card details of a saved card; it pays when the organization has no default yet."""
    attached = _attached(event.object)
    organization_id = await _organization_of_customer(session, provider, event.object)
    if attached is None or organization_id is None:
        log.warning("webhook.method_unknown", event_id=event.id)
        return
    has_default = any(
        method.is_default
        for method in await repository.list_methods(
            session, organization_id=organization_id, provider=provider
        )
    )
    await payment_method_service.save_method(
        session,
        env,
        organization_id=organization_id,
        provider=provider,
        attached=attached,
        make_default=not has_default,
    )


@handles("payment_method.detached")
async def _method_detached(
    session: AsyncSession, env: PaymentEnv, provider: str, event: ProviderEvent
) -> None:
    """A card removed at the provider (the portal): never charged again. Arriving before
    its ``attached`` event, it leaves a removed row so the card is not revived."""
    method_ref = _ref(event.object.get("id"))
    if method_ref is None:
        return
    method = await repository.get_method_by_ref(session, provider=provider, provider_ref=method_ref)
    if method is None:
        attached = _attached(event.object)
        method = PaymentMethod(
            id=new_id("pm"),
            organization_id="",
            provider=provider,
            provider_ref=method_ref,
            brand=attached.brand[:20] if attached else "card",
            last4=attached.last4[-4:] if attached else "",
            exp_month=attached.exp_month if attached else 0,
            exp_year=attached.exp_year if attached else 0,
            is_default=False,
            detached_at=env.clock.now(),
            created_at=env.clock.now(),
        )
        await repository.add(session, method)
        return
    await payment_method_service.forget_method(session, env, method)


@handles("customer.deleted")
async def _customer_deleted(
    session: AsyncSession, env: PaymentEnv, provider: str, event: ProviderEvent
) -> None:
    """The provider's customer is gone: its cards cannot pay; the next card makes a new one."""
    customer_ref = _ref(event.object.get("id"))
    if customer_ref is None:
        return
    customer = await repository.get_customer_by_ref(
        session, provider=provider, provider_ref=customer_ref
    )
    if customer is None:
        return
    for method in await repository.list_methods(
        session, organization_id=customer.organization_id, provider=provider
    ):
        await payment_method_service.forget_method(session, env, method)
    forget_prepared_cards(session)
    await repository.delete_customer(session, customer.id)
    audit_service.record(
        session,
        action="payment_customer.deleted",
        target=customer.id,
        organization_id=customer.organization_id,
    )
