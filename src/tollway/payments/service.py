"""Payments: payment methods, charges, checkout, refunds and the incoming event pipeline.

Incoming events: verify the signature on the raw body -> insert into
``webhook_events`` (unique per provider and event id; a duplicate changes nothing)
-> answer 2xx -> the ``payments.process_webhook_events`` sweep applies them. Handlers
*set* state (a succeeded payment never goes back to failed, refunds only grow), so
any order of delivery and any number of repeats end in the same state. A failing
handler is retried with exponential backoff and parked after :data:`MAX_ATTEMPTS`.

Owners of a payment's ``purpose`` (billing's invoices, marketplace sales) register a
:class:`PaymentListener` and are told once about each transition, and once about each
increase of ``refunded_minor`` (:meth:`PaymentService.record_refund`) - whether the
refund was asked for through Tollway or made at the provider and reported by
``charge.refunded``, whichever records the new total first. Every success
event is checked against our own payment: an amount or currency that differs is not
credited; the payment is ``flagged`` for an operator.

Disputes (chargebacks) freeze the organization's paid access while open or lost;
access listeners (billing) re-evaluate the license state when that changes.
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
from tollway.errors import Conflict, NotFound, PaymentRequired, Unprocessable
from tollway.kit.clock import Clock
from tollway.kit.ids import new_id
from tollway.kit.outbox import outbox
from tollway.kit.pagination import PageParams, PageResult
from tollway.payments import repository
from tollway.payments.models import (
    CheckoutSession,
    Payment,
    PaymentCustomer,
    PaymentDispute,
    PaymentMethod,
    WebhookEvent,
)
from tollway.payments.provider import (
    AttachedMethod,
    CardDeclined,
    CardInput,
    ChargeRequest,
    CheckoutRequest,
    PaymentProvider,
    ProviderEvent,
    RefundRequest,
    SetupRequest,
)
from tollway.payments.sandbox import SandboxProvider
from tollway.payments.stripe_provider import StripeProvider

log = structlog.get_logger("tollway.payments")

MAX_ATTEMPTS = 8
BACKOFF_BASE_SECONDS = 30
BACKOFF_CAP_SECONDS = 6 * 3600

#: Payment status order: an event may move a payment forward, never back. ``flagged``
#: (money whose amount or currency differs from ours) is final until an operator acts.
_STATUS_RANK = {"pending": 0, "failed": 1, "succeeded": 2, "flagged": 3}

#: session.info key: payments locked by :meth:`WebhookService.read_ahead`, by ID and key.
_READ_PAYMENTS = "tollway.payments.read_payments"
#: session.info key: default cards read ahead by :meth:`PaymentService.prepare_charges`.
_PREPARED_CHARGES = "tollway.payments.prepared_charges"


#: session.info key: events the sandbox sent during charge_many, stored after it.
_HELD_DELIVERIES = "tollway.payments.held_deliveries"
#: session.info key: payments per idempotency scope, read ahead the same way.
_PREPARED_SCOPES = "tollway.payments.prepared_scopes"


def _scope(purpose: str, reference: str) -> str:
    """The idempotency scope of a charge: what is paid (see PaymentService.charge)."""
    return f"{purpose}:{reference}"[:140]


def _forget_prepared_charges(session: AsyncSession) -> None:
    """A saved card or customer changed: charges read them again."""
    session.info.pop(_PREPARED_CHARGES, None)


class PaymentMethodRequired(PaymentRequired):
    code = "payment_method_required"
    title = "Payment method required"


class ProviderNotConfigured(NotFound):
    code = "provider_not_configured"
    title = "Payment provider not configured"


class CardNumbersNotAccepted(Unprocessable):
    code = "card_numbers_not_accepted"
    title = "Card numbers are not accepted"


@dataclass(frozen=True, slots=True)
class SetupStarted:
    """A hosted page where the customer saves a card (Stripe Checkout, ``setup`` mode)."""

    url: str


@dataclass(frozen=True, slots=True)
class OffSessionCharge:
    """One off-session charge of an organization's default card (see
    :meth:`PaymentService.charge`)."""

    organization_id: str
    amount_minor: int
    currency: str
    purpose: str
    reference_id: str
    description: str
    attempt: int = 1
    stable_reference: str | None = None


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

    async def payment_refunded(
        self,
        session: AsyncSession,
        env: PaymentEnv,
        payment: Payment,
        *,
        refunded_minor_before: int,
    ) -> None:
        """``payment.refunded_minor`` grew from ``refunded_minor_before``: called exactly
        once per increase (repeated or out-of-order events raise nothing twice)."""
        ...


#: Called after an organization got a new default payment method (billing retries
#: open invoices then).
MethodListener = Callable[[AsyncSession, PaymentEnv, str], Awaitable[None]]
EventHandler = Callable[[AsyncSession, PaymentEnv, str, ProviderEvent], Awaitable[None]]
#: Called when an organization's access was frozen by a dispute or restored.
AccessListener = Callable[[AsyncSession, PaymentEnv, str], Awaitable[None]]

_LISTENERS: dict[str, PaymentListener] = {}
_METHOD_LISTENERS: list[MethodListener] = []
_ACCESS_LISTENERS: list[AccessListener] = []
_HANDLERS: dict[str, EventHandler] = {}
#: Reads ahead, for a chunk of stored events, what a purpose's listener will need.
ReadAhead = Callable[[AsyncSession, "PaymentEnv", list[Payment]], Awaitable[None]]
_READ_AHEADS: dict[str, ReadAhead] = {}


def register_purpose(purpose: str, listener: PaymentListener) -> None:
    _LISTENERS[purpose] = listener


def register_read_ahead(purpose: str, read_ahead: ReadAhead) -> None:
    """``read_ahead`` reads, for a chunk of events about payments of ``purpose``, what
    their listener will need (optional: the listener reads it itself otherwise)."""
    _READ_AHEADS[purpose] = read_ahead


def register_method_listener(listener: MethodListener) -> None:
    if listener not in _METHOD_LISTENERS:
        _METHOD_LISTENERS.append(listener)


def register_access_listener(listener: AccessListener) -> None:
    if listener not in _ACCESS_LISTENERS:
        _ACCESS_LISTENERS.append(listener)


def handles(event_type: str) -> Callable[[EventHandler], EventHandler]:
    """Decorator: ``fn`` applies provider events of ``event_type``."""

    def decorator(fn: EventHandler) -> EventHandler:
        _HANDLERS[event_type] = fn
        return fn

    return decorator


def _pending_event_row(provider: str, event: ProviderEvent, now: datetime) -> dict[str, Any]:
    """A verified provider event as a ``webhook_events`` row, waiting to be applied."""
    return {
        "id": new_id("whe"),
        "provider": provider,
        "event_id": event.id,
        "event_type": event.type,
        "payload": event.payload,
        "status": "pending",
        "attempts": 0,
        "next_attempt_at": now,
        "received_at": now,
    }


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
        if chosen == "stripe" and env.settings.payment_provider == "stripe":
            return StripeProvider.from_settings(env.settings, env.clock)
        raise ProviderNotConfigured(f"the payment provider {chosen!r} is not configured here")

    def sandbox(self, session: AsyncSession, env: PaymentEnv) -> SandboxProvider:
        async def deliver(raw_body: bytes, header: str) -> None:
            held: list[tuple[bytes, str]] | None = session.info.get(_HELD_DELIVERIES)
            if held is not None:
                # charge_many stores its charges' events together when they are sent.
                held.append((raw_body, header))
                return
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
        _forget_prepared_charges(session)
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

    async def add_payment_method(
        self,
        session: AsyncSession,
        env: PaymentEnv,
        *,
        organization_id: str,
        card: CardInput | None,
    ) -> PaymentMethod | SetupStarted:
        """The sandbox saves ``card`` at once; Stripe answers a page that collects it."""
        provider = self.provider(session, env)
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
        customer_ref = await self.ensure_customer(session, env, organization_id=organization_id)
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
        customer_ref = await self.ensure_customer(session, env, organization_id=organization_id)
        provider = self.provider(session, env)
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
        _forget_prepared_charges(session)
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
        await self.forget_method(session, env, method)

    async def forget_method(
        self, session: AsyncSession, env: PaymentEnv, method: PaymentMethod
    ) -> None:
        """Mark a saved card detached; the newest remaining one becomes the default."""
        if method.detached_at is not None:
            return
        _forget_prepared_charges(session)
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

    async def portal_url(
        self, session: AsyncSession, env: PaymentEnv, *, organization_id: str
    ) -> str:
        """A session of the provider's customer portal (cards, receipts) for the organization."""
        provider = self.provider(session, env)
        customer_ref = await self.ensure_customer(session, env, organization_id=organization_id)
        return await provider.create_portal_session(
            customer_ref=customer_ref,
            return_url=f"{env.settings.base_url.rstrip('/')}/api/v1/payments/checkout/done",
        )

    async def prepare_charges(
        self,
        session: AsyncSession,
        env: PaymentEnv,
        *,
        organization_ids: list[str],
        purpose: str,
        stable_references: list[str],
    ) -> None:
        """Read, in two queries, what the off-session charges this transaction is about
        to make (a billing sweep's chunk) need: the organizations' default cards and
        customers, and how many payments the scopes of ``stable_references`` (see
        :meth:`charge`) already have.

        Each reading serves one :meth:`charge` in this transaction; any change of a
        saved card or customer in the transaction drops the cards read.
        """
        found = await repository.list_default_methods_and_customers(
            session, organization_ids=organization_ids, provider=env.settings.payment_provider
        )
        session.info[_PREPARED_CHARGES] = {
            organization_id: found.get(organization_id) for organization_id in organization_ids
        }
        scopes = [_scope(purpose, reference) for reference in stable_references]
        counted = await repository.count_payments_in_scopes(session, scopes=scopes)
        session.info[_PREPARED_SCOPES] = {scope: counted.get(scope, 0) for scope in scopes}

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
        stable_reference: str | None = None,
    ) -> Payment:
        """Charge the default payment method off-session; the outcome arrives as an event.

        ``stable_reference`` names what is paid when ``reference_id`` is not stable across
        a rolled-back transaction (a renewal's invoice is made again with another ID:
        billing passes the subscription and period). The idempotency key is built from
        it, and the charge's parameters leave out the unstable ID, so the retry is the
        same request to the provider and cannot charge twice.
        """
        (result,) = await self.charge_many(
            session,
            env,
            [
                OffSessionCharge(
                    organization_id=organization_id,
                    amount_minor=amount_minor,
                    currency=currency,
                    purpose=purpose,
                    reference_id=reference_id,
                    description=description,
                    attempt=attempt,
                    stable_reference=stable_reference,
                )
            ],
        )
        if isinstance(result, PaymentMethodRequired):
            raise result
        return result

    async def charge_many(
        self, session: AsyncSession, env: PaymentEnv, charges: list[OffSessionCharge]
    ) -> list[Payment | PaymentMethodRequired]:
        """:meth:`charge` each of ``charges``; an organization without a card gets its
        :class:`PaymentMethodRequired` in the answer, at the charge's place.

        Every payment row is written (its idempotency key taken) by one flush before
        the provider is asked for any of them: a billing sweep's chunk charges a hundred
        renewals with one write instead of one each.
        """
        provider = self.provider(session, env)
        results: list[Payment | PaymentMethodRequired] = []
        started: list[tuple[Payment, OffSessionCharge, PaymentMethod, str]] = []
        for charge in charges:
            try:
                payment, method, customer_ref = await self._new_payment(
                    session, env, provider, charge
                )
            except PaymentMethodRequired as required:
                results.append(required)
                continue
            results.append(payment)
            started.append((payment, charge, method, customer_ref))
        # Written (flushed) before the provider is called: the keys are taken.
        await session.flush()
        held: list[tuple[bytes, str]] = []
        session.info[_HELD_DELIVERIES] = held
        try:
            for payment, charge, method, customer_ref in started:
                await self._send_charge(
                    session, env, provider, payment, charge, method, customer_ref
                )
        finally:
            session.info.pop(_HELD_DELIVERIES, None)
        if held:
            await webhook_service.receive_many(
                session, env, provider_name=provider.name, deliveries=held
            )
        return results

    async def _new_payment(
        self,
        session: AsyncSession,
        env: PaymentEnv,
        provider: PaymentProvider,
        charge: OffSessionCharge,
    ) -> tuple[Payment, PaymentMethod, str]:
        """The pending payment of ``charge`` (added, not flushed), its card and customer."""
        organization_id = charge.organization_id
        prepared: dict[str, tuple[PaymentMethod, str | None] | None] | None = session.info.get(
            _PREPARED_CHARGES
        )
        if prepared is not None and organization_id in prepared:
            found = prepared.pop(organization_id)
        else:
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
        # The key names what is paid and the how-manieth payment of it this is, so a
        # retry after a rolled-back transaction sends the same key again and the
        # provider answers the intent it already made instead of charging twice.
        scope = _scope(charge.purpose, charge.stable_reference or charge.reference_id)
        counted: dict[str, int] | None = session.info.get(_PREPARED_SCOPES)
        if counted is not None and scope in counted:
            # Read ahead; used once: the payment made here counts from now on.
            sequence = counted.pop(scope)
        else:
            sequence = await repository.count_payments_in_scope(session, scope=scope)
        payment = Payment(
            id=new_id("pay"),
            organization_id=organization_id,
            provider=method.provider,
            purpose=charge.purpose,
            reference_id=charge.reference_id,
            attempt=charge.attempt,
            idempotency_key=f"{scope}:attempt:{sequence + 1}",
            idempotency_scope=scope,
            amount_minor=charge.amount_minor,
            currency=charge.currency,
            status="pending",
            refunded_minor=0,
            payment_method_id=method.id,
            created_at=env.clock.now(),
        )
        session.add(payment)
        return payment, method, customer_ref

    async def _send_charge(
        self,
        session: AsyncSession,
        env: PaymentEnv,
        provider: PaymentProvider,
        payment: Payment,
        charge: OffSessionCharge,
        method: PaymentMethod,
        customer_ref: str,
    ) -> None:
        assert payment.idempotency_key is not None
        try:
            started = await provider.charge_off_session(
                ChargeRequest(
                    amount_minor=charge.amount_minor,
                    currency=charge.currency,
                    customer_ref=customer_ref,
                    payment_method_ref=method.provider_ref,
                    description=charge.description,
                    idempotency_key=payment.idempotency_key,
                    metadata=self._metadata(
                        payment,
                        with_payment_id=False,
                        with_reference=charge.stable_reference is None,
                    ),
                )
            )
        except CardDeclined as declined:
            # Stripe answers a declined off-session charge with a card error; the
            # failure is certain, so it is applied now (the event will change nothing).
            intent_ref = declined.extra.get("payment_intent")
            await self.mark_failed(
                session,
                env,
                payment,
                intent_ref=intent_ref if isinstance(intent_ref, str) else None,
                failure_code=str(declined.extra.get("decline_code") or declined.code),
                failure_message=declined.detail,
            )
            return
        if payment.provider_ref is None:
            # Written by the transaction's next flush.
            payment.provider_ref = started.provider_ref

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
        available = payment.amount_minor - payment.refunded_minor
        if amount_minor <= 0 or amount_minor > available:
            raise Unprocessable(
                f"at most {available} {payment.currency} of this payment can still be refunded",
                code="refund_exceeds_paid",
                refundable=available,
            )
        started = await self.provider(session, env, name=payment.provider).refund(
            RefundRequest(
                payment_ref=payment.provider_ref,
                amount_minor=amount_minor,
                idempotency_key=f"refund:{payment.id}:{payment.refunded_minor + amount_minor}",
                already_refunded_minor=payment.refunded_minor,
                payment_amount_minor=payment.amount_minor,
                currency=payment.currency,
                metadata=self._metadata(payment),
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
        await outbox.publish(
            session,
            "payment.refunded",
            {
                "id": payment.id,
                "amount": payment.amount_minor,
                "refunded": target,
                "refunded_now": target - before,
                "currency": payment.currency,
                "purpose": payment.purpose,
                "reference_id": payment.reference_id,
            },
            organization_id=payment.organization_id,
            occurred_at=env.clock.now(),
        )
        listener = _LISTENERS.get(payment.purpose)
        if listener is not None:
            await listener.payment_refunded(session, env, payment, refunded_minor_before=before)
        return target - before

    async def get_payment(
        self, session: AsyncSession, payment_id: str, *, for_update: bool = False
    ) -> Payment | None:
        return await repository.get_payment(session, payment_id, for_update=for_update)

    async def list_payments_for(
        self, session: AsyncSession, *, purpose: str, reference_id: str
    ) -> list[Payment]:
        return await repository.list_payments_for(
            session, purpose=purpose, reference_id=reference_id
        )

    def _metadata(
        self, payment: Payment, *, with_payment_id: bool = True, with_reference: bool = True
    ) -> dict[str, str]:
        """Tollway's IDs for the provider's object. An off-session charge leaves out the
        IDs a rolled-back transaction would not make again (the payment's own, a renewal
        invoice's): the retry must send exactly the same parameters with its key, and
        the key finds the payment."""
        metadata = {"organization_id": payment.organization_id, "purpose": payment.purpose}
        if with_reference:
            metadata["reference_id"] = payment.reference_id
        if with_payment_id:
            metadata["tollway_payment_id"] = payment.id
        if payment.idempotency_key:
            metadata["tollway_idempotency_key"] = payment.idempotency_key
        return metadata

    # -- applying provider events (the webhook handlers call these) --------------

    async def find_payment(
        self, session: AsyncSession, *, provider: str, obj: dict[str, Any], intent_ref: str | None
    ) -> Payment | None:
        metadata = obj.get("metadata")
        read: dict[str, Payment] = session.info.get(_READ_PAYMENTS, {})
        payment_id = metadata.get("tollway_payment_id") if isinstance(metadata, dict) else None
        if isinstance(payment_id, str):
            payment = read.get(payment_id) or await repository.get_payment(
                session, payment_id, for_update=True
            )
            if payment is not None and payment.provider == provider:
                return payment
        key = metadata.get("tollway_idempotency_key") if isinstance(metadata, dict) else None
        if isinstance(key, str):
            # The payment row of a rolled-back first try is gone; its retry has the key.
            payment = read.get(key) or await repository.get_payment_by_key(session, key)
            if payment is not None and payment.provider == provider:
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

    async def succeed_if_amount_matches(
        self,
        session: AsyncSession,
        env: PaymentEnv,
        payment: Payment,
        *,
        event: ProviderEvent,
        intent_ref: str | None,
        amount: object,
        currency: object,
    ) -> None:
        """Credit the payment only when the provider's amount and currency are ours."""
        if _STATUS_RANK[payment.status] >= _STATUS_RANK["succeeded"]:
            if intent_ref and payment.provider_ref is None:
                payment.provider_ref = intent_ref
            return
        if (
            isinstance(amount, int)
            and not isinstance(amount, bool)
            and amount == payment.amount_minor
            and isinstance(currency, str)
            and currency.lower() == payment.currency.lower()
        ):
            await self.mark_succeeded(session, env, payment, intent_ref=intent_ref)
            return
        await self.mark_flagged(
            session,
            env,
            payment,
            intent_ref=intent_ref,
            reason=(
                f"event {event.id} ({event.type}) reports {amount!r} {currency!r}, "
                f"the payment is {payment.amount_minor} {payment.currency}"
            ),
        )

    async def mark_flagged(
        self,
        session: AsyncSession,
        env: PaymentEnv,
        payment: Payment,
        *,
        intent_ref: str | None,
        reason: str,
    ) -> None:
        if intent_ref and payment.provider_ref is None:
            payment.provider_ref = intent_ref
        if payment.status == "flagged":
            return
        log.error("payment.amount_mismatch", payment=payment.id, reason=reason)
        payment.status = "flagged"
        payment.failure_code = "amount_mismatch"
        payment.failure_message = reason[:300]
        await session.flush()
        audit_service.record(
            session,
            action="payment.flagged",
            target=payment.id,
            organization_id=payment.organization_id,
            details={"reason": reason[:300]},
        )
        await outbox.publish(
            session,
            "payment.flagged",
            {
                "id": payment.id,
                "amount": payment.amount_minor,
                "currency": payment.currency,
                "purpose": payment.purpose,
                "reference_id": payment.reference_id,
                "reason": reason[:300],
            },
            organization_id=payment.organization_id,
            occurred_at=env.clock.now(),
        )

    async def access_frozen(self, session: AsyncSession, *, organization_id: str) -> bool:
        """True while a dispute of the organization is open or was lost."""
        return await repository.has_freezing_dispute(session, organization_id=organization_id)

    async def record_dispute(
        self,
        session: AsyncSession,
        env: PaymentEnv,
        *,
        provider: str,
        obj: dict[str, Any],
        closed: bool,
    ) -> None:
        """Set a dispute's state from an event; tell the access listeners when the
        organization's freeze changes. A ``created`` after a ``closed`` changes nothing."""
        dispute_ref = str(obj.get("id") or "")
        status = str(obj.get("status") or ("lost" if closed else "needs_response"))[:30]
        dispute = await repository.get_dispute_by_ref(
            session, provider=provider, provider_ref=dispute_ref
        )
        if dispute is None:
            intent_ref = obj.get("payment_intent")
            payment = await self.find_payment(
                session,
                provider=provider,
                obj=obj,
                intent_ref=intent_ref if isinstance(intent_ref, str) else None,
            )
            if payment is None:
                log.warning("webhook.dispute_payment_unknown", dispute=dispute_ref)
                return
            amount = obj.get("amount")
            dispute = PaymentDispute(
                id=new_id("dsp"),
                organization_id=payment.organization_id,
                provider=provider,
                provider_ref=dispute_ref,
                payment_id=payment.id,
                amount_minor=amount if isinstance(amount, int) else payment.amount_minor,
                currency=str(obj.get("currency") or payment.currency)[:3],
                reason=str(obj.get("reason") or "unknown")[:60],
                status=status,
                opened_at=env.clock.now(),
                created_at=env.clock.now(),
            )
            frozen_before = await self.access_frozen(
                session, organization_id=payment.organization_id
            )
            await repository.add(session, dispute)
        else:
            if dispute.closed_at is not None:
                return
            frozen_before = await self.access_frozen(
                session, organization_id=dispute.organization_id
            )
            dispute.status = status
        if closed and dispute.closed_at is None:
            dispute.closed_at = env.clock.now()
        await self._announce_dispute(
            session,
            env,
            dispute,
            audit_action="dispute.closed" if closed else "dispute.opened",
            event_type="dispute.closed" if closed else "dispute.created",
            frozen_before=frozen_before,
        )

    async def settle_dispute(
        self, session: AsyncSession, env: PaymentEnv, *, dispute_id: str, note: str
    ) -> PaymentDispute:
        """An operator's word that a lost dispute is settled (the customer paid the
        amount back another way): it stops freezing the organization's access, which
        comes back unless another dispute still freezes it. Open disputes are decided by
        the provider, so only a lost one can be settled (409 ``dispute_not_lost``)."""
        dispute = await repository.get_dispute(session, dispute_id)
        if dispute is None:
            raise NotFound("no such dispute", code="dispute_not_found")
        if dispute.status != "lost" or dispute.closed_at is None:
            raise Conflict(
                f"only a lost dispute can be settled; this one is {dispute.status}",
                code="dispute_not_lost",
            )
        frozen_before = await self.access_frozen(session, organization_id=dispute.organization_id)
        dispute.status = "settled"
        await self._announce_dispute(
            session,
            env,
            dispute,
            audit_action="dispute.settled",
            event_type="dispute.settled",
            frozen_before=frozen_before,
            note=note,
        )
        return dispute

    async def _announce_dispute(
        self,
        session: AsyncSession,
        env: PaymentEnv,
        dispute: PaymentDispute,
        *,
        audit_action: str,
        event_type: str,
        frozen_before: bool,
        note: str | None = None,
    ) -> None:
        """Audit and publish a dispute's change; tell the access listeners when the
        organization's freeze changed with it."""
        await session.flush()
        organization_id = dispute.organization_id
        frozen = await self.access_frozen(session, organization_id=organization_id)
        noted = {"note": note} if note is not None else {}
        audit_service.record(
            session,
            action=audit_action,
            target=dispute.id,
            organization_id=organization_id,
            details={"status": dispute.status, "amount": dispute.amount_minor, **noted},
        )
        await outbox.publish(
            session,
            event_type,
            {
                "id": dispute.id,
                "payment_id": dispute.payment_id,
                "amount": dispute.amount_minor,
                "currency": dispute.currency,
                "reason": dispute.reason,
                "status": dispute.status,
                "access_frozen": frozen,
                **noted,
            },
            organization_id=organization_id,
            occurred_at=env.clock.now(),
        )
        if frozen != frozen_before:
            log.warning(
                "payments.access_frozen" if frozen else "payments.access_restored",
                organization=organization_id,
                dispute=dispute.provider_ref,
            )
            for listener in _ACCESS_LISTENERS:
                await listener(session, env, organization_id)

    async def list_disputes(
        self,
        session: AsyncSession,
        *,
        params: PageParams,
        status: str | None = None,
        organization_id: str | None = None,
    ) -> PageResult[PaymentDispute]:
        return await repository.list_disputes(
            session, params=params, status=status, organization_id=organization_id
        )

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
        """Verify and store one incoming event; returns (stored row id, duplicate).

        Only the configured provider's events are taken: with Stripe configured, the
        sandbox endpoint answers 404 (its secret must not be able to pay Stripe's bills).
        """
        if provider_name != env.settings.payment_provider:
            raise ProviderNotConfigured(
                f"the payment provider {provider_name!r} is not configured here"
            )
        provider = payment_service.provider(session, env, name=provider_name)
        event = provider.parse_event(raw_body=raw_body, signature_header=signature_header)
        now = env.clock.now()
        row = _pending_event_row(provider_name, event, now)
        row_id = row["id"]
        inserted = await repository.insert_event(session, row)
        if inserted:
            log.debug(
                "webhook.received", provider=provider_name, event_id=event.id, type=event.type
            )
            return row_id, False
        existing = await repository.get_event(session, provider=provider_name, event_id=event.id)
        assert existing is not None
        log.info("webhook.duplicate", provider=provider_name, event_id=event.id)
        return existing.id, True

    async def read_ahead(
        self, session: AsyncSession, env: PaymentEnv, rows: list[WebhookEvent]
    ) -> None:
        """Lock the payments a chunk of stored events names (by Tollway ID or idempotency
        key) in one query, and let their purposes' listeners read what they will need:
        the handlers then find them without a query per event."""
        payment_ids: set[str] = set()
        keys: set[str] = set()
        for row in rows:
            data = row.payload.get("data")
            obj = data.get("object") if isinstance(data, dict) else None
            metadata = obj.get("metadata") if isinstance(obj, dict) else None
            if not isinstance(metadata, dict):
                continue
            if isinstance(metadata.get("tollway_payment_id"), str):
                payment_ids.add(metadata["tollway_payment_id"])
            if isinstance(metadata.get("tollway_idempotency_key"), str):
                keys.add(metadata["tollway_idempotency_key"])
        if not payment_ids and not keys:
            return
        payments = await repository.list_payments_by_ids_or_keys(
            session, payment_ids=sorted(payment_ids), keys=sorted(keys)
        )
        read: dict[str, Payment] = session.info.setdefault(_READ_PAYMENTS, {})
        for payment in payments:
            read[payment.id] = payment
            if payment.idempotency_key is not None:
                read[payment.idempotency_key] = payment
        for purpose, read_ahead in _READ_AHEADS.items():
            of_purpose = [payment for payment in payments if payment.purpose == purpose]
            if of_purpose:
                await read_ahead(session, env, of_purpose)

    async def receive_many(
        self,
        session: AsyncSession,
        env: PaymentEnv,
        *,
        provider_name: str,
        deliveries: list[tuple[bytes, str]],
    ) -> None:
        """:meth:`receive` of many (raw body, signature header), stored by one statement
        (duplicates change nothing, as there)."""
        if provider_name != env.settings.payment_provider:
            raise ProviderNotConfigured(
                f"the payment provider {provider_name!r} is not configured here"
            )
        provider = payment_service.provider(session, env, name=provider_name)
        now = env.clock.now()
        rows = [
            _pending_event_row(
                provider_name,
                provider.parse_event(raw_body=raw_body, signature_header=signature_header),
                now,
            )
            for raw_body, signature_header in deliveries
        ]
        await repository.insert_events(session, rows)

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


def _ref(value: object) -> str | None:
    """An object's ID whether the event carries the ID or the expanded object."""
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) and value else None


async def _payment_of(
    session: AsyncSession, provider: str, event: ProviderEvent, intent_ref: str | None
) -> Payment | None:
    payment = await payment_service.find_payment(
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
    await payment_service.succeed_if_amount_matches(
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
    await payment_service.mark_failed(
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
    await payment_service.mark_failed(
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
    payment = await payment_service.find_payment(
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
    await payment_service.succeed_if_amount_matches(
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
    await payment_service.mark_failed(
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
    await payment_service.mark_failed(
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
    await payment_service.succeed_if_amount_matches(
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
        await payment_service.record_refund(session, env, payment, refunded_total=refunded)


@handles("charge.dispute.created")
async def _dispute_created(
    session: AsyncSession, env: PaymentEnv, provider: str, event: ProviderEvent
) -> None:
    await payment_service.record_dispute(
        session, env, provider=provider, obj=event.object, closed=False
    )


@handles("charge.dispute.closed")
async def _dispute_closed(
    session: AsyncSession, env: PaymentEnv, provider: str, event: ProviderEvent
) -> None:
    await payment_service.record_dispute(
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
    await payment_service.save_method(
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
    await payment_service.save_method(
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
    await payment_service.forget_method(session, env, method)


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
        await payment_service.forget_method(session, env, method)
    _forget_prepared_charges(session)
    await repository.delete_customer(session, customer.id)
    audit_service.record(
        session,
        action="payment_customer.deleted",
        target=customer.id,
        organization_id=customer.organization_id,
    )


def event_body(payload: dict[str, Any]) -> bytes:
    """The canonical bytes of an event payload (what the sandbox signs)."""
    return json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()


payment_service = PaymentService()
webhook_service = WebhookService()
