from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, Field

from tollway.billing.models import CreditNote, Invoice, InvoiceLine, Subscription
from tollway.kit.numbers import AmountMinor


class SubscriptionChangeIn(BaseModel):
    plan: str = Field(min_length=1, max_length=40, examples=["pro"])


class SubscriptionOut(BaseModel):
    id: str | None = Field(
        description="null for an organization that never subscribed: a view of its plan"
    )
    plan: str
    status: str
    current_period_start: datetime
    current_period_end: datetime
    cancel_at_period_end: bool
    trial_end: datetime | None
    license_state: str
    grace_ends_at: datetime | None
    pending_plan: str | None
    next_retry_at: datetime | None

    @classmethod
    def of(cls, sub: Subscription) -> SubscriptionOut:
        return cls(
            id=sub.id,
            plan=sub.plan_id,
            status=sub.status,
            current_period_start=sub.current_period_start,
            current_period_end=sub.current_period_end,
            cancel_at_period_end=sub.cancel_at_period_end,
            trial_end=sub.trial_end,
            license_state=sub.license_state,
            grace_ends_at=sub.grace_ends_at,
            pending_plan=sub.pending_plan_id,
            next_retry_at=sub.next_retry_at,
        )


class InvoiceSummaryOut(BaseModel):
    id: str
    number: str | None
    status: str
    billing_reason: str
    subtotal: int
    tax: int
    total: int
    amount_paid: int
    amount_refunded: int
    currency: str
    period_start: datetime | None
    period_end: datetime | None
    issued_at: datetime | None
    paid_at: datetime | None

    @classmethod
    def of(cls, invoice: Invoice) -> InvoiceSummaryOut:
        return cls(
            id=invoice.id,
            number=invoice.number,
            status=invoice.status,
            billing_reason=invoice.billing_reason,
            subtotal=invoice.subtotal_minor,
            tax=invoice.tax_minor,
            total=invoice.total_minor,
            amount_paid=invoice.amount_paid_minor,
            amount_refunded=invoice.amount_refunded_minor,
            currency=invoice.currency,
            period_start=invoice.period_start,
            period_end=invoice.period_end,
            issued_at=invoice.issued_at,
            paid_at=invoice.paid_at,
        )


class InvoiceLineOut(BaseModel):
    kind: str
    description: str
    quantity: int
    unit_amount: int
    amount: int
    period_start: datetime | None
    period_end: datetime | None

    @classmethod
    def of(cls, line: InvoiceLine) -> InvoiceLineOut:
        return cls(
            kind=line.kind,
            description=line.description,
            quantity=line.quantity,
            unit_amount=line.unit_amount_minor,
            amount=line.amount_minor,
            period_start=line.period_start,
            period_end=line.period_end,
        )


class CreditNoteOut(BaseModel):
    id: str
    number: str
    invoice_id: str
    amount: int
    currency: str
    reason: str
    credits_reversed: int
    issued_at: datetime

    @classmethod
    def of(cls, note: CreditNote) -> CreditNoteOut:
        return cls(
            id=note.id,
            number=note.number,
            invoice_id=note.invoice_id,
            amount=note.amount_minor,
            currency=note.currency,
            reason=note.reason,
            credits_reversed=note.credits_reversed,
            issued_at=note.issued_at,
        )


class InvoiceDetailOut(InvoiceSummaryOut):
    tax_rate_bp: int
    tax_inclusive: bool
    tax_country: str | None
    lines: list[InvoiceLineOut]
    credit_notes: list[CreditNoteOut]


class RefundIn(BaseModel):
    amount: AmountMinor | None = Field(
        None, gt=0, description="minor units; the whole refundable rest if omitted"
    )
    reason: str = Field("requested_by_customer", min_length=1, max_length=300)


class PackPurchaseOut(BaseModel):
    order_id: str
    status: str
    invoice_id: str
    checkout_url: str | None = None


class BillingProfileIn(BaseModel):
    """Who invoices are made out to. PUT replaces the whole profile."""

    model_config = {"extra": "forbid"}

    name: str | None = Field(
        None, min_length=1, max_length=200, description="legal name (default: the org's name)"
    )
    country: str | None = Field(
        None, max_length=10, description="ISO 3166-1 alpha-2 code; selects the tax rate"
    )
    address_lines: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(
        default_factory=list, max_length=5, description="postal address, one line each"
    )
    tax_id: str | None = Field(
        None, min_length=1, max_length=50, description="VAT or other tax number"
    )


class BillingProfileOut(BaseModel):
    name: str | None
    country: str | None
    address_lines: list[str]
    tax_id: str | None
