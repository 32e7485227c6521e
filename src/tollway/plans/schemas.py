from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from tollway.kit.clock import UtcDatetime
from tollway.kit.numbers import Count, Credits, Quantity, UsageTotal


class MoneyOut(BaseModel):
    amount: int = Field(description="minor units (cents)")
    currency: str


class PriceOut(MoneyOut):
    interval: str


class OverageOut(BaseModel):
    unit_amount: int = Field(description="minor units per started block, in the plan's currency")
    per_units: int = Field(description="units of the meter in one block")


class PlanFeatureOut(BaseModel):
    enabled: bool = True
    meter: str | None = None
    quota: int | None = Field(None, description="per period; null means unlimited")
    enforcement: str | None = None
    period: str | None = None
    rate_limit_per_minute: int | None = None
    degradation: str
    overage: OverageOut | None = Field(
        None, description="price of use above a soft quota, billed in arrears"
    )


class PlanOut(BaseModel):
    id: str
    name: str
    price: PriceOut
    trial_days: int
    features: dict[str, PlanFeatureOut]
    limits: dict[str, int | None] = Field(description="per meter; null means unlimited")
    monthly_tokens: int
    token_rollover_cap: int
    rate_limit_per_minute: int | None


class TokenPackOut(BaseModel):
    id: str
    name: str
    tokens: int
    price: MoneyOut


class TokenPackListOut(BaseModel):
    items: list[TokenPackOut]


class PricingOut(BaseModel):
    catalog_version: int | None
    plans: list[PlanOut]
    token_packs: list[TokenPackOut]


class FeatureOverrideIn(BaseModel):
    model_config = {"extra": "forbid"}

    enabled: bool | None = None
    quota: UsageTotal | None = Field(None, ge=0)
    enforcement: Literal["hard", "soft"] | None = None
    rate_limit_per_minute: Count | None = Field(None, ge=1)


class AbuseOverrideIn(BaseModel):
    """The abuse battery's thresholds to change for one organization (omitted: the plan's)."""

    model_config = {"extra": "forbid"}

    requests_per_minute: Count | None = Field(None, ge=0)
    min_interval_seconds: Count | None = Field(None, ge=0)
    max_credits_per_request: Credits | None = Field(None, ge=0)
    max_output_units: Quantity | None = Field(None, ge=0)
    fraud_credits_per_hour: Credits | None = Field(None, ge=0)
    max_failures: Count | None = Field(None, ge=0)
    failure_window_seconds: Count | None = Field(None, ge=0)
    block_seconds: Count | None = Field(None, ge=0)


class OverridesIn(BaseModel):
    """Custom limits for one organization; omitted keys keep the plan's values, a
    ``quota`` of null (given explicitly) means unlimited."""

    model_config = {"extra": "forbid"}

    features: dict[str, FeatureOverrideIn] = Field(default_factory=dict)
    rate_limit_per_minute: Count | None = Field(None, ge=1)
    abuse: AbuseOverrideIn | None = None

    def document(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "features": {
                name: body.model_dump(exclude_unset=True) for name, body in self.features.items()
            }
        }
        if "rate_limit_per_minute" in self.model_fields_set:
            document["rate_limit_per_minute"] = self.rate_limit_per_minute
        if self.abuse is not None:
            document["abuse"] = self.abuse.model_dump(exclude_none=True)
        return document


class OverridesOut(BaseModel):
    organization_id: str
    overrides: dict[str, Any]


class PlanAssignmentIn(BaseModel):
    model_config = {"extra": "forbid"}

    plan: str = Field(min_length=1, max_length=64)
    license_state: Literal["active", "grace", "restricted", "canceled"] = "active"
    grace_ends_at: UtcDatetime | None = None


class PlanAssignmentOut(BaseModel):
    organization_id: str
    plan: str
    license_state: str
    grace_ends_at: datetime | None
