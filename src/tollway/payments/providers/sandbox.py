"""The offline ``sandbox`` provider: Stripe's test cards, signed events, no network.

Test cards mirror Stripe's: ``4242 4242 4242 4242`` succeeds, ``4000 0000 0000 0002``
is declined when it is attached, ``4000 0000 0000 0341`` attaches but every charge
fails. Any other number that passes the Luhn check behaves like 4242.

The sandbox keeps no state of its own: a payment method's behaviour is part of its
reference, and references of intents, refunds and events derive from the caller's
idempotency key, so a repeated call gives the same objects and the same event IDs
(a redelivered event is a duplicate the pipeline ignores). Outcomes are sent as
events signed exactly like Stripe's to the ``deliver`` callback, which feeds them to
the same webhook pipeline as ``POST /api/v1/webhooks/sandbox``.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from tollway.kit.clock import Clock
from tollway.payments.errors import (
    CardDeclined,
    InvalidCard,
    InvalidWebhookPayload,
    NotOfferedByProvider,
)
from tollway.payments.providers import signature
from tollway.payments.providers.protocol import (
    AttachedMethod,
    CardInput,
    ChargeRequest,
    ChargeStarted,
    CheckoutRequest,
    CheckoutStarted,
    ProviderEvent,
    RefundRequest,
    RefundStarted,
    SetupRequest,
)

DECLINED_AT_ATTACH = "4000000000000002"
FAILS_EVERY_CHARGE = "4000000000000341"
CHECKOUT_PATH = "/api/v1/payments/sandbox/checkout/"

#: (raw body, Stripe-Signature header) -> stored in webhook_events
Deliver = Callable[[bytes, str], Awaitable[None]]


def luhn_ok(number: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(number)):
        digit = int(char)
        if index % 2 == 1:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total % 10 == 0


def card_brand(number: str) -> str:
    if number.startswith("4"):
        return "visa"
    if number[:2] in {"34", "37"}:
        return "amex"
    if number[:2] in {"51", "52", "53", "54", "55"} or "2221" <= number[:4] <= "2720":
        return "mastercard"
    if number.startswith(("6011", "65")):
        return "discover"
    return "unknown"


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:24]


class SandboxProvider:
    """A :class:`~tollway.payments.providers.protocol.PaymentProvider` that needs no network."""

    name = "sandbox"
    accepts_card_numbers = True

    def __init__(
        self, *, secret: str, clock: Clock, base_url: str, deliver: Deliver | None = None
    ) -> None:
        self._secret = secret
        self._clock = clock
        self._base_url = base_url.rstrip("/")
        self._deliver = deliver

    def validate_card(self, card: CardInput) -> str:
        """The card number without spaces, or 422 ``invalid_card`` saying which field is wrong."""
        number = card.number.replace(" ", "").replace("-", "")
        if not number.isdigit() or not 12 <= len(number) <= 19 or not luhn_ok(number):
            raise InvalidCard("card_number is not a valid card number", field="card_number")
        if not 1 <= card.exp_month <= 12:
            raise InvalidCard("exp_month must be 1-12", field="exp_month")
        now = self._clock.now()
        if (card.exp_year, card.exp_month) < (now.year, now.month) or card.exp_year > now.year + 50:
            raise InvalidCard("the card has expired or exp_year is not plausible", field="exp_year")
        if not card.cvc.isdigit() or len(card.cvc) not in (3, 4):
            raise InvalidCard("cvc must be 3 or 4 digits", field="cvc")
        return number

    async def create_customer(self, *, organization_id: str, email: str | None, name: str) -> str:
        return f"cus_sbx_{_digest('customer', organization_id)}"

    async def attach_card(self, *, customer_ref: str, card: CardInput) -> AttachedMethod:
        number = self.validate_card(card)
        if number == DECLINED_AT_ATTACH:
            raise CardDeclined(
                "the card was declined (sandbox test card 4000 0000 0000 0002)",
                decline_code="generic_decline",
            )
        behaviour = "chargefail" if number == FAILS_EVERY_CHARGE else "ok"
        return AttachedMethod(
            provider_ref=f"pm_sbx_{behaviour}_{secrets.token_hex(8)}",
            brand=card_brand(number),
            last4=number[-4:],
            exp_month=card.exp_month,
            exp_year=card.exp_year,
        )

    async def create_setup_session(self, request: SetupRequest) -> CheckoutStarted:
        raise NotOfferedByProvider(
            "the sandbox takes card numbers: POST card_number, exp_month, exp_year and cvc"
        )

    async def create_portal_session(self, *, customer_ref: str, return_url: str) -> str:
        raise NotOfferedByProvider("the sandbox has no customer portal; it is Stripe's")

    async def detach_payment_method(self, *, payment_method_ref: str) -> None:
        return None

    async def charge_off_session(self, request: ChargeRequest) -> ChargeStarted:
        intent_ref = f"pi_sbx_{_digest('intent', request.idempotency_key)}"
        fails = "_chargefail_" in request.payment_method_ref
        await self._emit_intent_outcome(
            intent_ref,
            succeeded=not fails,
            amount_minor=request.amount_minor,
            currency=request.currency,
            customer_ref=request.customer_ref,
            payment_method_ref=request.payment_method_ref,
            metadata=request.metadata,
        )
        return ChargeStarted(provider_ref=intent_ref, status="processing")

    async def create_checkout(self, request: CheckoutRequest) -> CheckoutStarted:
        session_ref = f"cs_sbx_{_digest('checkout', request.idempotency_key)}"
        return CheckoutStarted(
            provider_ref=session_ref, url=f"{self._base_url}{CHECKOUT_PATH}{session_ref}"
        )

    async def complete_checkout(
        self,
        *,
        session_ref: str,
        card: CardInput,
        amount_minor: int,
        currency: str,
        metadata: dict[str, str],
    ) -> str:
        """The hosted page's pay button: charge ``card`` for the session, emit the outcome."""
        method = await self.attach_card(customer_ref="", card=card)
        intent_ref = f"pi_sbx_{_digest('checkout-intent', session_ref)}"
        await self._emit(
            "checkout.session.completed",
            key=session_ref,
            obj={
                "id": session_ref,
                "object": "checkout.session",
                "mode": "payment",
                "payment_intent": intent_ref,
                "payment_status": "unpaid" if "_chargefail_" in method.provider_ref else "paid",
                "amount_total": amount_minor,
                "currency": currency,
                "metadata": metadata,
            },
        )
        await self._emit_intent_outcome(
            intent_ref,
            succeeded="_chargefail_" not in method.provider_ref,
            amount_minor=amount_minor,
            currency=currency,
            customer_ref=None,
            payment_method_ref=method.provider_ref,
            metadata=metadata,
        )
        return intent_ref

    async def refund(self, request: RefundRequest) -> RefundStarted:
        refund_ref = f"re_sbx_{_digest('refund', request.idempotency_key)}"
        await self._emit(
            "charge.refunded",
            key=refund_ref,
            obj={
                "id": f"ch_sbx_{_digest('charge', request.payment_ref)}",
                "object": "charge",
                "payment_intent": request.payment_ref,
                "amount": request.payment_amount_minor,
                "amount_refunded": request.already_refunded_minor + request.amount_minor,
                "currency": request.currency,
                "refunded": request.already_refunded_minor + request.amount_minor
                >= request.payment_amount_minor,
                "metadata": request.metadata,
                "refunds": {"data": [{"id": refund_ref, "amount": request.amount_minor}]},
            },
        )
        return RefundStarted(provider_ref=refund_ref, status="succeeded")

    def parse_event(self, *, raw_body: bytes, signature_header: str | None) -> ProviderEvent:
        signature.verify(
            secret=self._secret, raw_body=raw_body, header=signature_header, now=self._clock.now()
        )
        return parse_stripe_shaped_event(raw_body)

    def sign(self, raw_body: bytes) -> str:
        return signature.sign([self._secret], int(self._clock.now().timestamp()), raw_body)

    async def _emit_intent_outcome(
        self,
        intent_ref: str,
        *,
        succeeded: bool,
        amount_minor: int,
        currency: str,
        customer_ref: str | None,
        payment_method_ref: str,
        metadata: dict[str, str],
    ) -> None:
        obj: dict[str, Any] = {
            "id": intent_ref,
            "object": "payment_intent",
            "amount": amount_minor,
            "amount_received": amount_minor if succeeded else 0,
            "currency": currency,
            "customer": customer_ref,
            "payment_method": payment_method_ref,
            "status": "succeeded" if succeeded else "requires_payment_method",
            "metadata": metadata,
            "last_payment_error": None
            if succeeded
            else {
                "code": "card_declined",
                "decline_code": "generic_decline",
                "message": "Your card was declined.",
            },
        }
        event_type = "payment_intent.succeeded" if succeeded else "payment_intent.payment_failed"
        await self._emit(event_type, key=intent_ref, obj=obj)

    async def _emit(self, event_type: str, *, key: str, obj: dict[str, Any]) -> None:
        if self._deliver is None:
            return
        event = {
            "id": f"evt_sbx_{_digest(event_type, key)}",
            "object": "event",
            "type": event_type,
            "created": int(self._clock.now().timestamp()),
            "livemode": False,
            "data": {"object": obj},
        }
        raw_body = json.dumps(event, separators=(",", ":"), sort_keys=True).encode()
        await self._deliver(raw_body, self.sign(raw_body))


def parse_stripe_shaped_event(raw_body: bytes) -> ProviderEvent:
    """Parse ``{"id", "type", "created", "data": {"object": ...}}``, else 400."""
    try:
        payload = json.loads(raw_body)
    except ValueError as error:
        raise InvalidWebhookPayload("the event body is not JSON") from error
    if not isinstance(payload, dict):
        raise InvalidWebhookPayload("the event body is not a JSON object")
    event_id = payload.get("id")
    event_type = payload.get("type")
    created = payload.get("created")
    data = payload.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    if (
        not isinstance(event_id, str)
        or not 1 <= len(event_id) <= 100
        or not isinstance(event_type, str)
        or not 1 <= len(event_type) <= 100
        or not isinstance(created, int)
        or not isinstance(obj, dict)
    ):
        raise InvalidWebhookPayload("an event needs id, type, created and data.object")
    return ProviderEvent(id=event_id, type=event_type, created=created, object=obj, payload=payload)
