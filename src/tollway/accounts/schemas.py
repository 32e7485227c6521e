from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, EmailStr, Field


class UserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    email: str
    name: str | None
    email_verified: bool
    totp_enabled: bool
    is_platform_admin: bool
    created_at: datetime


class OrganizationOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    billing_country: str | None
    billing_email: str | None
    created_at: datetime


class RegistrationIn(BaseModel):
    email: EmailStr
    password: str = Field(min_length=1, max_length=1024)
    name: str | None = Field(None, max_length=200)
    organization_name: str | None = Field(None, min_length=1, max_length=200)
