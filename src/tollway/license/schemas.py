from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel


class LicenseTokenOut(BaseModel):
    token: str
    expires_at: datetime


class PublicKeysOut(BaseModel):
    keys: list[dict[str, Any]]
