"""The ``PaymentProvider`` protocol: everything Tollway asks of a payment provider.

Tollway is the billing engine; a provider only collects money. The protocol is
shaped after Stripe (customers, SetupIntents/PaymentMethods, Checkout Sessions,
off-session PaymentIntents, Refunds, signed webhook events) so that the Stripe
adapter is a thin translation. Outcomes of charges are *not* trusted from the call's
answer: they arrive as signed events through the webhook pipeline, which is the
only place that changes the state of a payment.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class CardInput:
    """Raw card fields, as the sandbox accepts them; never stored."""

    number: str
    exp_month: int
    exp_year: int
    cvc: str


@dataclass(frozen=True, slots=True)
class AttachedMethod:
    provider_ref: str
    brand: str
    last4: str
    exp_month: int
    exp_year: int


@dataclass(frozen=True, slots=True)
class ChargeRequest:
    amount_minor: int
    currency: str
    customer_ref: str
    payment_method_ref: str
    description: str
    #: Derived from Tollway IDs (``pay_...``): a retried call never charges twice.
    idempotency_key: str
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ChargeStarted:
    """The provider accepted the request; the outcome arrives as an event."""

    provider_ref: str
    status: str


@dataclass(frozen=True, slots=True)
class CheckoutRequest:
    amount_minor: int
    currency: str
    description: str
    customer_ref: str
    success_url: str
    cancel_url: str
    idempotency_key: str
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CheckoutStarted:
    provider_ref: str
    url: str


@dataclass(frozen=True, slots=True)
class SetupRequest:
    """A hosted page where the customer saves a card for later off-session charges."""

    customer_ref: str
    success_url: str
    cancel_url: str
    idempotency_key: str
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RefundRequest:
    payment_ref: str
    amount_minor: int
    idempotency_key: str
    #: Sum refunded before this refund, so cumulative figures can be reported.
    already_refunded_minor: int = 0
    payment_amount_minor: int = 0
    currency: str = "usd"
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RefundStarted:
    provider_ref: str
    status: str


@dataclass(frozen=True, slots=True)
class ProviderEvent:
    """A verified event: ``{"id", "type", "created", "data": {"object": {...}}}``."""

    id: str
    type: str
    created: int
    object: dict[str, Any]
    payload: dict[str, Any]


class PaymentProvider(Protocol):
    """A payment provider (``sandbox`` offline, ``stripe`` through the official SDK)."""

    name: str
    #: True when Tollway takes card numbers itself (the sandbox); False when the
    #: provider's hosted page collects them (Stripe Checkout in ``setup`` mode).
    accepts_card_numbers: bool

    async def create_customer(self, *, organization_id: str, email: str | None, name: str) -> str:
        """Create the provider's customer for an organization; returns its reference."""
        ...

    async def attach_card(self, *, customer_ref: str, card: CardInput) -> AttachedMethod:
        """Save a card on the customer (raises ``card_declined`` when refused)."""
        ...

    async def create_setup_session(self, request: SetupRequest) -> CheckoutStarted:
        """A hosted page that saves a card on the customer (its outcome arrives as events)."""
        ...

    async def create_portal_session(self, *, customer_ref: str, return_url: str) -> str:
        """The provider's customer portal for ``customer_ref``; returns its URL."""
        ...

    async def detach_payment_method(self, *, payment_method_ref: str) -> None:
        """Remove a saved payment method at the provider."""
        ...

    async def charge_off_session(self, request: ChargeRequest) -> ChargeStarted:
        """Charge a saved method without the customer present (renewals, retries)."""
        ...

    async def create_checkout(self, request: CheckoutRequest) -> CheckoutStarted:
        """A hosted page where the customer pays a one-off amount."""
        ...

    async def refund(self, request: RefundRequest) -> RefundStarted:
        """Refund part or all of a succeeded payment."""
        ...

    def parse_event(self, *, raw_body: bytes, signature_header: str | None) -> ProviderEvent:
        """Verify the signature on the raw body and parse the event (400 when bad)."""
        ...
