"""Tables of the payments domain: provider customers, payment methods, payments,
checkout sessions and the incoming provider events (``webhook_events``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from tollway.kit.models import Base, TimestampMixin, id_column


class PaymentCustomer(TimestampMixin, Base):
    """The provider's customer object for one organization."""

    __tablename__ = "payment_customers"
    __table_args__ = (UniqueConstraint("organization_id", "provider"),)

    id: Mapped[str] = id_column()
    organization_id: Mapped[str] = mapped_column(String(40), nullable=False)
    provider: Mapped[str] = mapped_column(String(20), nullable=False)
    provider_ref: Mapped[str] = mapped_column(String(100), nullable=False)


class PaymentMethod(TimestampMixin, Base):
    """A saved card. Only what a receipt shows is kept: brand, last four digits, expiry."""

    __tablename__ = "payment_methods"

    id: Mapped[str] = id_column()
    organization_id: Mapped[str] = mapped_column(String(40), nullable=False, index=True)
    provider: Mapped[str] = mapped_column(String(20), nullable=False)
    provider_ref: Mapped[str] = mapped_column(String(100), nullable=False, unique=True)
    brand: Mapped[str] = mapped_column(String(20), nullable=False)
    last4: Mapped[str] = mapped_column(String(4), nullable=False)
    exp_month: Mapped[int] = mapped_column(Integer, nullable=False)
    exp_year: Mapped[int] = mapped_column(Integer, nullable=False)
    is_default: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    detached_at: Mapped[datetime | None] = mapped_column()


class Payment(TimestampMixin, Base):
    """One attempt to collect money (a PaymentIntent at Stripe).

    ``purpose`` and ``reference_id`` name what it pays for (an invoice); the owner of
    that purpose is told about the outcome. ``status`` only moves forward:
    pending -> failed | succeeded | flagged (a success event whose amount or currency
    does not match: not credited, an operator looks); refunds accumulate in
    ``refunded_minor``. ``idempotency_key`` (``invoice:{id}:attempt:{n}``) is written
    before the provider is called and sent with the call.
    """

    __tablename__ = "payments"
    __table_args__ = (Index("ix_payments_reference", "purpose", "reference_id"),)

    id: Mapped[str] = id_column()
    organization_id: Mapped[str] = mapped_column(String(40), nullable=False, index=True)
    provider: Mapped[str] = mapped_column(String(20), nullable=False)
    provider_ref: Mapped[str | None] = mapped_column(String(100), unique=True)
    purpose: Mapped[str] = mapped_column(String(30), nullable=False)
    reference_id: Mapped[str] = mapped_column(String(40), nullable=False)
    attempt: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    idempotency_key: Mapped[str | None] = mapped_column(String(150), unique=True)
    #: The key without its attempt number: what is paid (counts the attempts).
    idempotency_scope: Mapped[str | None] = mapped_column(String(140), index=True)
    amount_minor: Mapped[int] = mapped_column(BigInteger, nullable=False)
    currency: Mapped[str] = mapped_column(String(3), nullable=False)
    status: Mapped[str] = mapped_column(String(20), nullable=False)
    payment_method_id: Mapped[str | None] = mapped_column(String(40))
    failure_code: Mapped[str | None] = mapped_column(String(60))
    failure_message: Mapped[str | None] = mapped_column(String(300))
    refunded_minor: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    succeeded_at: Mapped[datetime | None] = mapped_column()
    failed_at: Mapped[datetime | None] = mapped_column()


class CheckoutSession(TimestampMixin, Base):
    """A hosted payment page for a one-off purchase (a token pack, a package)."""

    __tablename__ = "checkout_sessions"

    id: Mapped[str] = id_column()
    organization_id: Mapped[str] = mapped_column(String(40), nullable=False, index=True)
    provider: Mapped[str] = mapped_column(String(20), nullable=False)
    provider_ref: Mapped[str] = mapped_column(String(100), nullable=False, unique=True)
    payment_id: Mapped[str] = mapped_column(String(40), nullable=False)
    description: Mapped[str] = mapped_column(String(200), nullable=False)
    amount_minor: Mapped[int] = mapped_column(BigInteger, nullable=False)
    currency: Mapped[str] = mapped_column(String(3), nullable=False)
    url: Mapped[str] = mapped_column(String(500), nullable=False)
    status: Mapped[str] = mapped_column(String(20), nullable=False)


class PaymentDispute(TimestampMixin, Base):
    """A chargeback. While one is open (or was lost) the organization's paid access is
    frozen; a dispute closed in our favour restores it."""

    __tablename__ = "payment_disputes"

    id: Mapped[str] = id_column()
    organization_id: Mapped[str] = mapped_column(String(40), nullable=False, index=True)
    provider: Mapped[str] = mapped_column(String(20), nullable=False)
    provider_ref: Mapped[str] = mapped_column(String(100), nullable=False, unique=True)
    payment_id: Mapped[str] = mapped_column(String(40), nullable=False)
    amount_minor: Mapped[int] = mapped_column(BigInteger, nullable=False)
    currency: Mapped[str] = mapped_column(String(3), nullable=False)
    reason: Mapped[str] = mapped_column(String(60), nullable=False)
    #: Stripe's dispute status (needs_response, under_review, won, lost, ...).
    status: Mapped[str] = mapped_column(String(30), nullable=False)
    opened_at: Mapped[datetime] = mapped_column(nullable=False)
    closed_at: Mapped[datetime | None] = mapped_column()


class WebhookEvent(Base):
    """An event a payment provider sent, stored before it is processed.

    Unique per (provider, event_id): a redelivery finds the row and changes nothing.
    The processing sweep retries failures with backoff and parks the event after
    :data:`~tollway.payments.service.MAX_ATTEMPTS` attempts.
    """

    __tablename__ = "webhook_events"
    __table_args__ = (
        UniqueConstraint("provider", "event_id"),
        Index("ix_webhook_events_due", "status", "next_attempt_at"),
    )

    id: Mapped[str] = id_column()
    provider: Mapped[str] = mapped_column(String(20), nullable=False)
    event_id: Mapped[str] = mapped_column(String(100), nullable=False)
    event_type: Mapped[str] = mapped_column(String(100), nullable=False)
    payload: Mapped[dict[str, Any]] = mapped_column(nullable=False)
    #: pending (due at next_attempt_at), processed, ignored (unknown type), parked.
    status: Mapped[str] = mapped_column(String(20), nullable=False)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column()
    last_error: Mapped[str | None] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(nullable=False)
    processed_at: Mapped[datetime | None] = mapped_column()
