from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from tollway.kit.clock import UtcDatetime


class ApiKeyIn(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    scopes: list[str] | None = Field(
        None, description="scopes the key grants; default: use the product, not administer it"
    )
    expires_at: UtcDatetime | None = None
    environment: Literal["live", "test"] = "live"


class ApiKeyOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    prefix: str
    environment: str
    scopes: list[str]
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


class ApiKeyCreatedOut(ApiKeyOut):
    key: str = Field(description="the key itself; shown only in this answer")


class ApiKeyRollIn(BaseModel):
    grace_seconds: int = Field(
        86_400,
        ge=0,
        le=30 * 86_400,
        description="how long the old key keeps working (0: revoked at once; at most 30 days)",
    )


class ApiKeyRolledOut(ApiKeyCreatedOut):
    replaced_key: ApiKeyOut = Field(description="the old key, with its new expiry")


class ApiKeyListOut(BaseModel):
    items: list[ApiKeyOut]
