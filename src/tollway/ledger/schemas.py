from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from tollway.kit.clock import UtcDatetime
from tollway.kit.numbers import Count, Credits, Quantity


class GrantOut(BaseModel):
    id: str
    amount: int
    remaining: int
    expires_at: datetime | None
    source: str
    priority: int


class BalanceOut(BaseModel):
    balance: int = Field(description="granted - spent - expired - reversed (includes reserved)")
    reserved: int = Field(description="credits held by open reservations")
    available: int = Field(description="credits that can be reserved now")
    grants: list[GrantOut] = Field(description="live lots in spending order")


class LedgerEntryOut(BaseModel):
    id: str
    transfer_id: str
    account: str = Field(
        description="wallet, holds, issuance, purchases, spending, expiry, refunds"
    )
    kind: str = Field(description="grant, reserve, commit, release, expire, reverse")
    amount: int = Field(description="signed; the entries of one transfer sum to zero")
    occurred_at: datetime


class ReservationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount: Credits = Field(gt=0, description="credits to hold")
    feature: str | None = Field(None, min_length=1, max_length=100)
    ttl_seconds: Count | None = Field(
        None, ge=1, description="hold lifetime (default 30 s, at most the configured maximum)"
    )


class ReservationOut(BaseModel):
    id: str
    amount: int
    status: str = Field(description="held, committed, released or expired")
    expires_at: datetime
    feature: str | None = None
    committed: int | None = Field(None, description="credits spent, once committed")
    released: int | None = Field(None, description="credits given back, once settled")
    created_at: datetime | None = None
    settled_at: datetime | None = Field(
        None, description="when it was committed, released or expired"
    )


class ReservationCommitIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount: Credits | None = Field(None, ge=0, description="credits spent (<= held; default all)")
    output_units: Quantity | None = Field(
        None, ge=0, description="size of the output produced, checked against the abuse policy"
    )


class ReservationCommittedOut(BaseModel):
    id: str
    status: str
    committed: int
    released: int


class ReservationReleasedOut(BaseModel):
    id: str
    status: str
    released: int


class AdminGrantIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    organization_id: str = Field(min_length=1, max_length=40)
    amount: Credits = Field(gt=0)
    reason: str = Field(min_length=1, max_length=500)
    expires_at: UtcDatetime | None = None
    source: Literal["admin", "promo"] = "admin"


class AdminGrantOut(BaseModel):
    id: str
    organization_id: str
    amount: int
    source: str
    expires_at: datetime | None
    reason: str


class FraudFlagOut(BaseModel):
    id: str
    organization_id: str
    subject: str
    credits_in_window: int
    threshold: int
    window_started_at: datetime
    created_at: datetime
