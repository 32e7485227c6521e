from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, EmailStr, Field

from tollway.accounts.schemas import OrganizationOut, UserOut


class LoginIn(BaseModel):
    email: EmailStr
    password: str = Field(min_length=1, max_length=1024)
    totp_code: str | None = Field(None, max_length=32)
    organization_id: str | None = Field(None, description="log into this organization")


class RefreshIn(BaseModel):
    refresh_token: str = Field(min_length=1, max_length=200)


class ValidateIn(BaseModel):
    token: str = Field(min_length=1, max_length=4096)


class Session(BaseModel):
    """What register, login and refresh answer."""

    user: UserOut
    organization: OrganizationOut
    role: str
    access_token: str
    refresh_token: str
    token_type: str = "bearer"  # noqa: S105 - the OAuth token type, not a secret
    expires_in: int


class Validation(BaseModel):
    valid: bool
    kind: str | None = None
    user_id: str | None = None
    organization_id: str | None = None
    tier: str | None = None
    scopes: list[str] = []
    expires_at: datetime | None = None
    code: str | None = Field(None, description="why the token is not valid")


class Me(BaseModel):
    user: UserOut | None
    organization: OrganizationOut
    role: str
    tier: str
    scopes: list[str]
    api_key_id: str | None = None
