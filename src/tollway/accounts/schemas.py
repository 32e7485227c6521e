from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, EmailStr, Field

RoleName = Literal["owner", "admin", "billing", "member"]


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


class MemberOut(BaseModel):
    user_id: str
    email: str
    name: str | None
    role: str
    joined_at: datetime


class InvitationOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    email: str
    role: str
    created_at: datetime
    expires_at: datetime


class InvitationIssuedOut(InvitationOut):
    """A new invitation as the inviter sees it once: with its accept token."""

    token: str = Field(
        description="the accept token (shown only here and in the `member.invited` event); "
        "send it to the invited address"
    )
    accept_url: str = Field(description="the dashboard link that accepts the invitation")


class MemberListOut(BaseModel):
    items: list[MemberOut]
    invitations: list[InvitationOut] = Field(
        description="invitations not yet accepted (withdraw one with DELETE .../members/{id})"
    )


class MemberAddIn(BaseModel):
    email: EmailStr
    role: RoleName = "member"


class MemberUpdateIn(BaseModel):
    role: RoleName


class MemberAddedOut(BaseModel):
    status: Literal["added", "invited"]
    member: MemberOut | None = None
    invitation: InvitationIssuedOut | None = None


class InvitationAcceptIn(BaseModel):
    token: str = Field(min_length=1, max_length=200, description="the invitation's token")


class InvitationAcceptedOut(BaseModel):
    organization: OrganizationOut
    user_id: str
    role: str
    joined_at: datetime
