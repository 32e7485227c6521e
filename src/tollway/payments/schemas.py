from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class PaymentMethodIn(BaseModel):
    """Sandbox card fields; only brand, last four digits and expiry are kept."""

    card_number: str = Field(min_length=1, max_length=30, examples=["4242424242424242"])
    exp_month: int = Field(ge=1, le=12, examples=[12])
    exp_year: int = Field(ge=2000, le=2200, examples=[2030])
    cvc: str = Field(min_length=3, max_length=4, examples=["123"])


class PaymentMethodOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    brand: str
    last4: str
    exp_month: int
    exp_year: int
    is_default: bool
    created_at: datetime


class SetupSessionOut(BaseModel):
    """Stripe: open ``setup_url`` (Checkout in ``setup`` mode) to enter the card."""

    setup_url: str


class PortalSessionOut(BaseModel):
    url: str


class PaymentMethodListOut(BaseModel):
    items: list[PaymentMethodOut]


class WebhookReceiptOut(BaseModel):
    received: bool
    duplicate: bool
    id: str


class WebhookEventOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    provider: str
    event_id: str
    event_type: str
    status: str
    attempts: int
    next_attempt_at: datetime | None
    last_error: str | None
    received_at: datetime
    processed_at: datetime | None


class DisputeOut(BaseModel):
    """A chargeback as the operator sees it; ``lost`` (and open ones) freeze access."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    organization_id: str
    provider: str
    provider_ref: str
    payment_id: str
    amount_minor: int
    currency: str
    reason: str
    status: str
    opened_at: datetime
    closed_at: datetime | None


class DisputeSettleIn(BaseModel):
    """Why the operator lifts the freeze of a lost dispute (kept in the audit log)."""

    note: str = Field(min_length=1, max_length=500)
