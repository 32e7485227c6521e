from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from tollway.kit.numbers import Credits, Quantity


class AuthorizeIn(BaseModel):
    model_config = {"extra": "forbid"}

    feature: str = Field(min_length=1, max_length=64, examples=["ai.generate"])
    quantity: Quantity = Field(1, description="units of the feature's meter (default 1)")
    credits: Credits = Field(0, description="credits to reserve (0: none)")
    idempotency_key: str | None = Field(
        None,
        min_length=1,
        max_length=255,
        description="a retry with the same key is answered without counting again",
    )
    properties: dict[str, Any] | None = Field(
        None,
        description="stored with the usage event; a unique meter (templates) counts "
        "distinct values of its property",
    )


class AuthorizeOut(BaseModel):
    allowed: bool
    code: str | None = Field(description="why not, when allowed is false")
    detail: str | None = None
    reservation_id: str | None
    remaining: dict[str, int | None] = Field(
        description="per meter, what is left this period (null: unlimited)"
    )
    reset_at: datetime | None = Field(description="when the quota period ends")
    duplicate: bool = False


class FeatureOut(BaseModel):
    enabled: bool
    reason: str | None
    degradation: str
    meter: str | None
    quota: int | None
    enforcement: str | None
    rate_limit_per_minute: int | None


class EntitlementsOut(BaseModel):
    plan: str
    plan_name: str
    license_state: str
    grace_ends_at: datetime | None
    features: dict[str, FeatureOut]
    limits: dict[str, int | None]
    rate_limit_per_minute: int | None
