from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, Discriminator, Field, Tag

from tollway.kit.numbers import Quantity


class UsageEventIn(BaseModel):
    model_config = {"extra": "forbid"}

    meter: str = Field(min_length=1, max_length=64)
    quantity: Quantity = Field(
        1, description="a positive integer (422 invalid_quantity otherwise), at most 10^12"
    )
    idempotency_key: str = Field(min_length=1, max_length=255)
    timestamp: str | None = Field(
        None,
        max_length=64,
        description="ISO 8601 with an offset; default now. Future times are refused, "
        "late ones are taken while their period is open",
    )
    properties: dict[str, Any] | None = None


class UsageBatchIn(BaseModel):
    model_config = {"extra": "forbid"}

    events: list[UsageEventIn] = Field(description="up to 1,000 events")


def _body_form(value: Any) -> str:
    return "batch" if isinstance(value, dict) and "events" in value else "event"


#: ``POST /api/v1/billing/usage`` takes a batch (``{"events": [...]}``) or one event; the
#: presence of ``events`` says which, so a bad body is reported against its own form only.
UsageIn = Annotated[
    Annotated[UsageBatchIn, Tag("batch")] | Annotated[UsageEventIn, Tag("event")],
    Discriminator(_body_form),
]


class IngestOut(BaseModel):
    accepted: int = Field(description="events recorded now")
    duplicates: int = Field(description="events already recorded earlier (not counted again)")
    duplicate_keys: list[str]


class MeterUsageOut(BaseModel):
    meter: str
    used: int
    limit: int | None
    remaining: int | None
    percent: float | None
    period_start: datetime
    period_end: datetime


class UsageOut(BaseModel):
    period_start: datetime
    period_end: datetime
    meters: list[MeterUsageOut]
