"""Tables of the billing engine: subscriptions, invoices and their lines, the per-year
invoice counters, credit notes and token-pack orders."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    ColumnElement,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
    and_,
)
from sqlalchemy.orm import InstrumentedAttribute, Mapped, mapped_column

from tollway.kit.models import Base, TimestampMixin, id_column


class Subscription(TimestampMixin, Base):
    """An organization's subscription; one live row per organization (older rows are history).

    ``status``: incomplete, trialing, active, past_due, unpaid, canceled.
    ``license_state`` follows it: active, grace, restricted, canceled.
    """

    __tablename__ = "subscriptions"
    __table_args__ = (
        Index("ix_subscriptions_period_end", "status", "current_period_end"),
        Index("ix_subscriptions_retry", "status", "next_retry_at"),
    )

    id: Mapped[str] = id_column()
    organization_id: Mapped[str] = mapped_column(String(40), nullable=False, index=True)
    #: True for the organization's current subscription, False for ended ones.
    is_current: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    plan_id: Mapped[str] = mapped_column(String(40), nullable=False)
    #: The catalog version whose prices (base fee, overage) this subscription pays: set
    #: when the plan is chosen, so a later catalog never re-prices it (None: the active).
    catalog_version: Mapped[int | None] = mapped_column(Integer)
    #: A downgrade waiting for the period end.
    pending_plan_id: Mapped[str | None] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(20), nullable=False)
    currency: Mapped[str] = mapped_column(String(3), nullable=False)
    #: Periods are whole months (or years) from this moment; days clamp to month ends.
    billing_anchor: Mapped[datetime] = mapped_column(nullable=False)
    period_index: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    current_period_start: Mapped[datetime] = mapped_column(nullable=False)
    current_period_end: Mapped[datetime] = mapped_column(nullable=False)
    trial_end: Mapped[datetime | None] = mapped_column()
    cancel_at_period_end: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    canceled_at: Mapped[datetime | None] = mapped_column()
    ended_at: Mapped[datetime | None] = mapped_column()
    license_state: Mapped[str] = mapped_column(String(20), nullable=False)
    grace_ends_at: Mapped[datetime | None] = mapped_column()
    #: Dunning: when the first collection failed, how many attempts failed, the next one.
    past_due_since: Mapped[datetime | None] = mapped_column()
    failed_attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    next_retry_at: Mapped[datetime | None] = mapped_column()
    #: The period start whose monthly allotment was granted (grant once per period).
    allotment_granted_for: Mapped[datetime | None] = mapped_column()
    updated_at: Mapped[datetime | None] = mapped_column()


@dataclass(frozen=True, slots=True)
class DueRule:
    """Work on a current subscription that falls due at a moment ("is it due?").

    One definition answers in SQL (:meth:`where`, the sweeps' selection; :meth:`waiting`
    and :attr:`moment`, the next moment the clock must stop at) and in Python
    (:meth:`is_due`, the re-check on the claimed row), so the two cannot disagree.
    """

    #: the column holding the moment the work is measured from
    moment: InstrumentedAttribute[datetime | None]
    #: the column whose value says whether the work waits at all, and those values
    state: InstrumentedAttribute[str]
    states: tuple[str, ...]
    #: the work is due this long after :attr:`moment`
    delay: timedelta = timedelta(0)

    def waiting(self) -> ColumnElement[bool]:
        """The subscriptions for which this work waits, due or not yet."""
        return and_(Subscription.is_current, self.state.in_(self.states))

    def where(self, now: datetime) -> ColumnElement[bool]:
        """The subscriptions for which this work is due at ``now``."""
        return and_(self.waiting(), self.moment <= now - self.delay)

    def due_at(self, sub: Subscription) -> datetime | None:
        """When the work is due for ``sub`` (None: it does not wait)."""
        moment: datetime | None = getattr(sub, self.moment.key)
        if not sub.is_current or getattr(sub, self.state.key) not in self.states:
            return None
        return None if moment is None else moment + self.delay

    def is_due(self, sub: Subscription, now: datetime) -> bool:
        due_at = self.due_at(sub)
        return due_at is not None and due_at <= now


#: A first invoice that is not paid within this time ends the attempt (Stripe: 23 h).
INCOMPLETE_EXPIRY = timedelta(hours=23)
#: The period ended: close it (cancel, downgrade, or invoice the next one).
RENEWAL_DUE = DueRule(
    moment=Subscription.current_period_end,
    state=Subscription.status,
    states=("trialing", "active", "past_due"),
)
#: The next dunning attempt of a past-due subscription.
RETRY_DUE = DueRule(
    moment=Subscription.next_retry_at, state=Subscription.status, states=("past_due",)
)
#: Grace is over: the license becomes restricted.
GRACE_OVER = DueRule(
    moment=Subscription.grace_ends_at, state=Subscription.license_state, states=("grace",)
)
#: The first invoice of a paid plan went unpaid for :data:`INCOMPLETE_EXPIRY`.
INCOMPLETE_EXPIRED = DueRule(
    moment=Subscription.current_period_start,
    state=Subscription.status,
    states=("incomplete",),
    delay=INCOMPLETE_EXPIRY,
)
#: Every rule a billing sweep works by (the clock stops at the earliest of them).
DUE_RULES = (RENEWAL_DUE, RETRY_DUE, GRACE_OVER, INCOMPLETE_EXPIRED)


class InvoiceCounter(Base):
    """The last number given in a series (``TW-2026``); locked while numbering."""

    __tablename__ = "invoice_counters"

    series: Mapped[str] = mapped_column(String(20), primary_key=True)
    last_number: Mapped[int] = mapped_column(Integer, nullable=False, default=0)


class Invoice(TimestampMixin, Base):
    """draft -> open -> paid | void | uncollectible. Numbered when finalized (open)."""

    __tablename__ = "invoices"
    __table_args__ = (Index("ix_invoices_org_status", "organization_id", "status"),)

    id: Mapped[str] = id_column()
    organization_id: Mapped[str] = mapped_column(String(40), nullable=False, index=True)
    subscription_id: Mapped[str | None] = mapped_column(String(40), index=True)
    number: Mapped[str | None] = mapped_column(String(30), unique=True)
    status: Mapped[str] = mapped_column(String(20), nullable=False)
    #: subscription_create, subscription_cycle, subscription_update, token_pack
    billing_reason: Mapped[str] = mapped_column(String(30), nullable=False)
    currency: Mapped[str] = mapped_column(String(3), nullable=False)
    subtotal_minor: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    tax_minor: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    total_minor: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    amount_paid_minor: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    amount_refunded_minor: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    tax_rate_bp: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    tax_inclusive: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    tax_country: Mapped[str | None] = mapped_column(String(2))
    period_start: Mapped[datetime | None] = mapped_column()
    period_end: Mapped[datetime | None] = mapped_column()
    issued_at: Mapped[datetime | None] = mapped_column()
    paid_at: Mapped[datetime | None] = mapped_column()
    voided_at: Mapped[datetime | None] = mapped_column()
    #: Seller and buyer as they were when the invoice was issued.
    parties: Mapped[dict[str, Any]] = mapped_column(nullable=False)


class InvoiceLine(Base):
    __tablename__ = "invoice_lines"

    id: Mapped[str] = id_column()
    invoice_id: Mapped[str] = mapped_column(
        ForeignKey("invoices.id", ondelete="CASCADE"), nullable=False, index=True
    )
    position: Mapped[int] = mapped_column(Integer, nullable=False)
    #: base, proration_credit, proration_charge, overage, token_pack
    kind: Mapped[str] = mapped_column(String(30), nullable=False)
    description: Mapped[str] = mapped_column(String(300), nullable=False)
    quantity: Mapped[int] = mapped_column(BigInteger, nullable=False, default=1)
    unit_amount_minor: Mapped[int] = mapped_column(BigInteger, nullable=False)
    amount_minor: Mapped[int] = mapped_column(BigInteger, nullable=False)
    period_start: Mapped[datetime | None] = mapped_column()
    period_end: Mapped[datetime | None] = mapped_column()
    #: What the line sells (a plan id, a meter, a pack order id).
    reference: Mapped[str | None] = mapped_column(String(60))


class CreditNote(TimestampMixin, Base):
    """A refund, documented: numbered in its own gapless series (``CN-2026-000001``)."""

    __tablename__ = "credit_notes"

    id: Mapped[str] = id_column()
    number: Mapped[str] = mapped_column(String(30), nullable=False, unique=True)
    invoice_id: Mapped[str] = mapped_column(
        ForeignKey("invoices.id", ondelete="RESTRICT"), nullable=False, index=True
    )
    organization_id: Mapped[str] = mapped_column(String(40), nullable=False, index=True)
    amount_minor: Mapped[int] = mapped_column(BigInteger, nullable=False)
    currency: Mapped[str] = mapped_column(String(3), nullable=False)
    reason: Mapped[str] = mapped_column(String(300), nullable=False)
    refund_ref: Mapped[str | None] = mapped_column(String(100))
    credits_reversed: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    issued_at: Mapped[datetime] = mapped_column(nullable=False)


class PackOrder(TimestampMixin, Base):
    """A token-pack purchase: pending until its invoice is paid, then the credits land."""

    __tablename__ = "pack_orders"
    __table_args__ = (UniqueConstraint("invoice_id"),)

    id: Mapped[str] = id_column()
    organization_id: Mapped[str] = mapped_column(String(40), nullable=False, index=True)
    pack_id: Mapped[str] = mapped_column(String(40), nullable=False)
    tokens: Mapped[int] = mapped_column(BigInteger, nullable=False)
    invoice_id: Mapped[str] = mapped_column(String(40), nullable=False)
    #: pending, paid, failed, refunded
    status: Mapped[str] = mapped_column(String(20), nullable=False)
    checkout_url: Mapped[str | None] = mapped_column(String(500))
    granted_at: Mapped[datetime | None] = mapped_column()
