"""Payments: payment methods, charges, checkout, refunds and the incoming event pipeline.

Incoming events: verify the signature on the raw body -> insert into
``webhook_events`` (unique per provider and event id; a duplicate changes nothing)
-> answer 2xx -> the ``payments.process_webhook_events`` sweep applies them. Handlers
*set* state (a succeeded payment never goes back to failed, refunds only grow), so
any order of delivery and any number of repeats end in the same state. A failing
handler is retried with exponential backoff and parked after :data:`MAX_ATTEMPTS`.

Owners of a payment's ``purpose`` (billing's invoices) register a
:class:`PaymentListener` and are told once about each transition.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from tollway.audit.service import audit_service
from tollway.config import Settings
from tollway.errors import Conflict, NotFound, PaymentRequired
from tollway.kit.clock import Clock
from tollway.kit.ids import new_id
from tollway.kit.outbox import outbox
from tollway.kit.pagination import PageParams, PageResult
from tollway.payments import repository
from tollway.payments.models import (
    CheckoutSession,
    Payment,
    PaymentCustomer,
    PaymentMethod,
    WebhookEvent,
)
from tollway.payments.provider import (
    CardInput,
    ChargeRequest,
    CheckoutRequest,
    PaymentProvider,
    ProviderEvent,
    RefundRequest,
)
from tollway.payments.sandbox import SandboxProvider

log = structlog.get_logger("tollway.payments")

MAX_ATTEMPTS = 8
BACKOFF_BASE_SECONDS = 30
BACKOFF_CAP_SECONDS = 6 * 3600

#: Payment status order: an event may move a payment forward, never back.
_STATUS_RANK = {"pending": 0, "failed": 1, "succeeded": 2}


class PaymentMethodRequired(PaymentRequired):
    code = "payment_method_required"
    title = "Payment method required"


class ProviderUnavailable(NotFound):
    code = "provider_not_configured"
    title = "Payment provider not configured"


@dataclass(frozen=True, slots=True)
class PaymentEnv:
    """What a payment operation needs besides the session: settings and the clock."""

    settings: Settings
    clock: Clock


class PaymentListener(Protocol):
    """The owner of a payment purpose, told once about each state transition."""

    async def payment_succeeded(
        self, session: AsyncSession, env: PaymentEnv, payment: Payment
    ) -> None: ...

    async def payment_failed(
        self, session: AsyncSession, env: PaymentEnv, payment: Payment
    ) -> None: ...


#: Called after an organization got a new default payment method (billing retries
#: open invoices then).
MethodListener = Callable[[AsyncSession, PaymentEnv, str], Awaitable[None]]
EventHandler = Callable[[AsyncSession, PaymentEnv, str, ProviderEvent], Awaitable[None]]

_LISTENERS: dict[str, PaymentListener] = {}
_METHOD_LISTENERS: list[MethodListener] = []
_HANDLERS: dict[str, EventHandler] = {}


def register_purpose(purpose: str, listener: PaymentListener) -> None:
    _LISTENERS[purpose] = listener


def register_method_listener(listener: MethodListener) -> None:
    if listener not in _METHOD_LISTENERS:
        _METHOD_LISTENERS.append(listener)


def handles(event_type: str) -> Callable[[EventHandler], EventHandler]:
    """Decorator: ``fn`` applies provider events of ``event_type``."""

    def decorator(fn: EventHandler) -> EventHandler:
        _HANDLERS[event_type] = fn
        return fn

    return decorator


def backoff_seconds(attempts: int) -> int:
    """30 s, 60 s, 120 s, ... capped at six hours."""
    return int(min(BACKOFF_BASE_SECONDS * 2 ** max(0, attempts - 1), BACKOFF_CAP_SECONDS))


class PaymentService:
    def provider(
        self, session: AsyncSession, env: PaymentEnv, *, name: str | None = None
    ) -> PaymentProvider:
        """The configured provider; the sandbox delivers its events into this transaction."""
        chosen = name or env.settings.payment_provider
        if chosen == "sandbox":
            return self.sandbox(session, env)
        raise ProviderUnavailable(f"the payment provider {chosen!r} is not available here")

    def sandbox(self, session: AsyncSession, env: PaymentEnv) -> SandboxProvider:
        async def deliver(raw_body: bytes, header: str) -> None:
            # The same entry point as POST /api/v1/webhooks/sandbox: signature checked,
            # event stored, processed later by the sweep.
            await webhook_service.receive(
                session, env, provider_name="sandbox", raw_body=raw_body, signature_header=header
            )

        return SandboxProvider(
            secret=env.settings.secret("webhook_secret"),
            clock=env.clock,
            base_url=env.settings.base_url,
            deliver=deliver,
        )

    async def ensure_customer(
        self, session: AsyncSession, env: PaymentEnv, *, organization_id: str, name: str = ""
    ) -> str:
        provider = self.provider(session, env)
        customer = await repository.get_customer(
            session, organization_id=organization_id, provider=provider.name
        )
        if customer is not None:
            return customer.provider_ref
        ref = await provider.create_customer(
            organization_id=organization_id, email=None, name=name or organization_id
        )
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

    async def add_card(
        self, session: AsyncSession, env: PaymentEnv, *, organization_id: str, card: CardInput
    ) -> PaymentMethod:
        """Attach a card and make it the default (the newest card pays from now on)."""
        customer_ref = await self.ensure_customer(session, env, organization_id=organization_id)
        provider = self.provider(session, env)
        attached = await provider.attach_card(customer_ref=customer_ref, card=card)
        await repository.clear_default(session, organization_id=organization_id)
        method = PaymentMethod(
            id=new_id("pm"),
            organization_id=organization_id,
            provider=provider.name,
            provider_ref=attached.provider_ref,
            brand=attached.brand,
            last4=attached.last4,
            exp_month=attached.exp_month,
            exp_year=attached.exp_year,
            is_default=True,
            created_at=env.clock.now(),
        )
        await repository.add(session, method)
        audit_service.record(
            session,
            action="payment_method.attached",
            target=method.id,
            organization_id=organization_id,
            details={"brand": method.brand, "last4": method.last4},
        )
        await outbox.publish(
            session,
            "payment_method.attached",
            {"id": method.id, "brand": method.brand, "last4": method.last4, "default": True},
            organization_id=organization_id,
            occurred_at=env.clock.now(),
        )
        for listener in _METHOD_LISTENERS:
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
        await self.provider(session, env).detach_payment_method(
            payment_method_ref=method.provider_ref
        )
        was_default = method.is_default
        method.detached_at = env.clock.now()
        method.is_default = False
        await session.flush()
        if was_default:
            remaining = await self.list_methods(session, env, organization_id=organization_id)
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

    async def charge(
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
        attempt: int = 1,
    ) -> Payment:
        """Charge the default payment method off-session; the outcome arrives as an event."""
        provider = self.provider(session, env)
        found = await repository.get_default_method_and_customer(
            session, organization_id=organization_id, provider=provider.name
        )
        if found is None:
            raise PaymentMethodRequired(
                "add a card first: POST /api/v1/billing/payment-methods",
                add_payment_method_url="/api/v1/billing/payment-methods",
            )
        method, customer_ref = found
        if customer_ref is None:
            customer_ref = await self.ensure_customer(session, env, organization_id=organization_id)
        payment = Payment(
            id=new_id("pay"),
            organization_id=organization_id,
            provider=method.provider,
            purpose=purpose,
            reference_id=reference_id,
            attempt=attempt,
            amount_minor=amount_minor,
            currency=currency,
            status="pending",
            payment_method_id=method.id,
            created_at=env.clock.now(),
        )
        # The provider is called before the row is written, so the row is inserted once,
        # with its reference; the idempotency key (the payment's ID) makes a retried call
        # return the same intent.
        started = await provider.charge_off_session(
            ChargeRequest(
                amount_minor=amount_minor,
                currency=currency,
                customer_ref=customer_ref,
                payment_method_ref=method.provider_ref,
                description=description,
                idempotency_key=payment.id,
                metadata=self._metadata(payment),
            )
        )
        payment.provider_ref = started.provider_ref
        session.add(payment)
        return payment

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
        customer_ref = await self.ensure_customer(session, env, organization_id=organization_id)
        provider = self.provider(session, env)
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
                idempotency_key=payment.id,
                metadata=self._metadata(payment),
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
        await self.sandbox(session, env).complete_checkout(
            session_ref=session_ref,
            card=card,
            amount_minor=checkout.amount_minor,
            currency=checkout.currency,
            metadata=self._metadata(payment),
        )
        checkout.status = "complete"
        await session.flush()
        return checkout

    async def refund(
        self, session: AsyncSession, env: PaymentEnv, *, payment: Payment, amount_minor: int
    ) -> str:
        """Ask the provider to refund part of a succeeded payment; returns the refund ref."""
        if payment.status != "succeeded" or payment.provider_ref is None:
            raise Conflict(
                "only a succeeded payment can be refunded", code="payment_not_refundable"
            )
        started = await self.provider(session, env, name=payment.provider).refund(
            RefundRequest(
                payment_ref=payment.provider_ref,
                amount_minor=amount_minor,
                idempotency_key=f"{payment.id}:{payment.refunded_minor + amount_minor}",
                already_refunded_minor=payment.refunded_minor,
                payment_amount_minor=payment.amount_minor,
                currency=payment.currency,
                metadata=self._metadata(payment),
            )
        )
        return started.provider_ref

    async def list_payments_for(
        self, session: AsyncSession, *, purpose: str, reference_id: str
    ) -> list[Payment]:
        return await repository.list_payments_for(
            session, purpose=purpose, reference_id=reference_id
        )

    def _metadata(self, payment: Payment) -> dict[str, str]:
        return {
            "tollway_payment_id": payment.id,
            "organization_id": payment.organization_id,
            "purpose": payment.purpose,
            "reference_id": payment.reference_id,
        }

    # -- applying provider events (the webhook handlers call these) --------------

    async def find_payment(
        self, session: AsyncSession, *, provider: str, obj: dict[str, Any], intent_ref: str | None
    ) -> Payment | None:
        metadata = obj.get("metadata")
        payment_id = metadata.get("tollway_payment_id") if isinstance(metadata, dict) else None
        if isinstance(payment_id, str):
            payment = await repository.get_payment(session, payment_id, for_update=True)
            if payment is not None:
                return payment
        if intent_ref:
            return await repository.get_payment_by_provider_ref(
                session, provider=provider, provider_ref=intent_ref
            )
        return None

    async def mark_succeeded(
        self, session: AsyncSession, env: PaymentEnv, payment: Payment, *, intent_ref: str | None
    ) -> None:
        if intent_ref and payment.provider_ref is None:
            payment.provider_ref = intent_ref
        if _STATUS_RANK[payment.status] >= _STATUS_RANK["succeeded"]:
            return
        payment.status = "succeeded"
        payment.succeeded_at = env.clock.now()
        payment.failure_code = None
        await session.flush()
        await outbox.publish(
            session,
            "payment.succeeded",
            {
                "id": payment.id,
                "amount": payment.amount_minor,
                "currency": payment.currency,
                "purpose": payment.purpose,
                "reference_id": payment.reference_id,
            },
            organization_id=payment.organization_id,
            occurred_at=env.clock.now(),
        )
        listener = _LISTENERS.get(payment.purpose)
        if listener is not None:
            await listener.payment_succeeded(session, env, payment)

    async def mark_failed(
        self,
        session: AsyncSession,
        env: PaymentEnv,
        payment: Payment,
        *,
        intent_ref: str | None,
        failure_code: str | None,
        failure_message: str | None,
    ) -> None:
        if intent_ref and payment.provider_ref is None:
            payment.provider_ref = intent_ref
        if _STATUS_RANK[payment.status] >= _STATUS_RANK["failed"]:
            return
        payment.status = "failed"
        payment.failed_at = env.clock.now()
        payment.failure_code = (failure_code or "failed")[:60]
        payment.failure_message = (failure_message or "")[:300] or None
        await session.flush()
        await outbox.publish(
            session,
            "payment.failed",
            {
                "id": payment.id,
                "amount": payment.amount_minor,
                "currency": payment.currency,
                "purpose": payment.purpose,
                "reference_id": payment.reference_id,
                "failure_code": payment.failure_code,
            },
            organization_id=payment.organization_id,
            occurred_at=env.clock.now(),
        )
        listener = _LISTENERS.get(payment.purpose)
        if listener is not None:
            await listener.payment_failed(session, env, payment)


class WebhookService:
    async def receive(
        self,
        session: AsyncSession,
        env: PaymentEnv,
        *,
        provider_name: str,
        raw_body: bytes,
        signature_header: str | None,
    ) -> tuple[str, bool]:
        """Verify and store one incoming event; returns (stored row id, duplicate)."""
        provider = payment_service.provider(session, env, name=provider_name)
        event = provider.parse_event(raw_body=raw_body, signature_header=signature_header)
        now = env.clock.now()
        row_id = new_id("whe")
        inserted = await repository.insert_event(
            session,
            {
                "id": row_id,
                "provider": provider_name,
                "event_id": event.id,
                "event_type": event.type,
                "payload": event.payload,
                "status": "pending",
                "attempts": 0,
                "next_attempt_at": now,
                "received_at": now,
            },
        )
        if inserted:
            log.debug(
                "webhook.received", provider=provider_name, event_id=event.id, type=event.type
            )
            return row_id, False
        existing = await repository.get_event(session, provider=provider_name, event_id=event.id)
        assert existing is not None
        log.info("webhook.duplicate", provider=provider_name, event_id=event.id)
        return existing.id, True

    async def apply(self, session: AsyncSession, env: PaymentEnv, row: WebhookEvent) -> str:
        """Run the handler of one stored event; returns the new status (processed/ignored)."""
        handler = _HANDLERS.get(row.event_type)
        if handler is None:
            log.info("webhook.unknown_type", provider=row.provider, type=row.event_type)
            return "ignored"
        payload = row.payload
        event = ProviderEvent(
            id=row.event_id,
            type=row.event_type,
            created=int(payload.get("created", 0)),
            object=dict(payload.get("data", {}).get("object", {})),
            payload=payload,
        )
        await handler(session, env, row.provider, event)
        return "processed"

    async def record_failure(
        self, session: AsyncSession, *, row_id: str, error: str, now: datetime
    ) -> WebhookEvent | None:
        row = await repository.get_event_by_id(session, row_id)
        if row is None or row.status != "pending":
            return row
        row.attempts += 1
        row.last_error = error[:2000]
        if row.attempts >= MAX_ATTEMPTS:
            row.status = "parked"
            row.next_attempt_at = None
            log.error("webhook.parked", event_id=row.event_id, attempts=row.attempts)
            await outbox.publish(
                session,
                "webhook_event.parked",
                {
                    "id": row.id,
                    "provider": row.provider,
                    "event_id": row.event_id,
                    "type": row.event_type,
                    "error": row.last_error,
                },
                occurred_at=now,
            )
        else:
            row.next_attempt_at = now + timedelta(seconds=backoff_seconds(row.attempts))
        await session.flush()
        return row

    async def list_events(
        self, session: AsyncSession, *, params: PageParams, status: str | None
    ) -> PageResult[WebhookEvent]:
        return await repository.list_events(session, params=params, status=status)

    async def requeue(self, session: AsyncSession, *, row_id: str, now: datetime) -> WebhookEvent:
        """Give a parked event another round of attempts (an operator fixed the cause)."""
        row = await repository.get_event_by_id(session, row_id)
        if row is None:
            raise NotFound("no such webhook event", code="webhook_event_not_found")
        if row.status != "parked":
            raise Conflict("only a parked event can be retried", code="webhook_event_not_parked")
        row.status = "pending"
        row.attempts = 0
        row.next_attempt_at = now
        await session.flush()
        audit_service.record(session, action="webhook_event.requeued", target=row.id)
        return row


def _intent_error(obj: dict[str, Any]) -> tuple[str | None, str | None]:
    error = obj.get("last_payment_error")
    if not isinstance(error, dict):
        return None, None
    code = error.get("decline_code") or error.get("code")
    message = error.get("message")
    return (str(code) if code else None), (str(message) if message else None)


@handles("payment_intent.succeeded")
async def _intent_succeeded(
    session: AsyncSession, env: PaymentEnv, provider: str, event: ProviderEvent
) -> None:
    intent_ref = str(event.object.get("id") or "") or None
    payment = await payment_service.find_payment(
        session, provider=provider, obj=event.object, intent_ref=intent_ref
    )
    if payment is None:
        log.warning("webhook.payment_unknown", event_id=event.id, intent=intent_ref)
        return
    await payment_service.mark_succeeded(session, env, payment, intent_ref=intent_ref)


@handles("payment_intent.payment_failed")
async def _intent_failed(
    session: AsyncSession, env: PaymentEnv, provider: str, event: ProviderEvent
) -> None:
    intent_ref = str(event.object.get("id") or "") or None
    payment = await payment_service.find_payment(
        session, provider=provider, obj=event.object, intent_ref=intent_ref
    )
    if payment is None:
        log.warning("webhook.payment_unknown", event_id=event.id, intent=intent_ref)
        return
    code, message = _intent_error(event.object)
    await payment_service.mark_failed(
        session, env, payment, intent_ref=intent_ref, failure_code=code, failure_message=message
    )


@handles("checkout.session.completed")
async def _checkout_completed(
    session: AsyncSession, env: PaymentEnv, provider: str, event: ProviderEvent
) -> None:
    session_ref = str(event.object.get("id") or "")
    checkout = await repository.get_checkout_by_ref(
        session, provider=provider, provider_ref=session_ref
    )
    if checkout is not None and checkout.status != "complete":
        checkout.status = "complete"
    intent_ref = event.object.get("payment_intent")
    payment = await payment_service.find_payment(
        session, provider=provider, obj=event.object, intent_ref=None
    )
    if payment is not None and isinstance(intent_ref, str) and payment.provider_ref is None:
        payment.provider_ref = intent_ref
    await session.flush()


@handles("charge.refunded")
async def _charge_refunded(
    session: AsyncSession, env: PaymentEnv, provider: str, event: ProviderEvent
) -> None:
    intent_ref = event.object.get("payment_intent")
    payment = await payment_service.find_payment(
        session,
        provider=provider,
        obj=event.object,
        intent_ref=intent_ref if isinstance(intent_ref, str) else None,
    )
    if payment is None:
        log.warning("webhook.payment_unknown", event_id=event.id, intent=intent_ref)
        return
    # A refund proves the charge succeeded, whatever order the events came in.
    await payment_service.mark_succeeded(
        session, env, payment, intent_ref=intent_ref if isinstance(intent_ref, str) else None
    )
    refunded = event.object.get("amount_refunded")
    if isinstance(refunded, int) and refunded > payment.refunded_minor:
        payment.refunded_minor = min(refunded, payment.amount_minor)
        await session.flush()


def event_body(payload: dict[str, Any]) -> bytes:
    """The canonical bytes of an event payload (what the sandbox signs)."""
    return json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()


payment_service = PaymentService()
webhook_service = WebhookService()
