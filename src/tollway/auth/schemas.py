from __future__ import annotations

from datetime import datetime
from typing import Literal

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


class SessionOut(BaseModel):
    """What register, login and refresh answer."""

    user: UserOut
    organization: OrganizationOut
    role: str
    access_token: str
    refresh_token: str
    token_type: str = "bearer"  # noqa: S105 - the OAuth token type, not a secret
    expires_in: int


class ValidationOut(BaseModel):
    valid: bool
    kind: str | None = None
    user_id: str | None = None
    organization_id: str | None = None
    tier: str | None = None
    scopes: list[str] = []
    expires_at: datetime | None = None
    code: str | None = Field(None, description="why the token is not valid")


class MeOut(BaseModel):
    user: UserOut | None
    organization: OrganizationOut
    role: str
    tier: str
    scopes: list[str]
    api_key_id: str | None = None


class DashboardSessionOut(BaseModel):
    """What POST /auth/session answers; the session itself travels in the cookie."""

    user: UserOut
    organization: OrganizationOut
    role: str
    csrf_token: str = Field(
        description="echo it in the X-CSRF-Token header on unsafe requests (also in the "
        "tollway_csrf cookie)"
    )
    expires_at: datetime


class TotpSetupOut(BaseModel):
    secret: str = Field(description="base32 secret for the authenticator app")
    otpauth_uri: str = Field(description="the same as an otpauth:// URI (for a QR code)")
    enabled: bool = False


class TotpCodeIn(BaseModel):
    code: str = Field(min_length=6, max_length=32, description="the current 6-digit code")


class TotpEnabledOut(BaseModel):
    enabled: bool = True
    recovery_codes: list[str] = Field(
        description="one-time codes for when the authenticator is lost; shown only here"
    )


class TotpDisableIn(BaseModel):
    code: str | None = Field(None, max_length=32, description="a current code or a recovery code")
    password: str | None = Field(None, max_length=1024)


class TotpStatusOut(BaseModel):
    enabled: bool


class ChallengeIn(BaseModel):
    challenge: str | None = Field(
        None,
        max_length=200,
        description="the challenge of the OAuth callback's 401 `totp_required` answer; "
        "browsers may leave it out, their `tollway_2fa_challenge` cookie carries it",
    )
    totp_code: str | None = Field(None, max_length=32, description="the current 6-digit code")
    recovery_code: str | None = Field(None, max_length=32, description="an unused recovery code")


class ChallengeSessionOut(DashboardSessionOut):
    """A challenge of a browser (cookie-mode) login completed: the session is in the
    cookies, as after POST /auth/session."""

    redirect_to: str = Field(description="where the login was going: a path on this site")


class PasswordChangeIn(BaseModel):
    current_password: str = Field(min_length=1, max_length=1024)
    new_password: str = Field(min_length=1, max_length=1024)


class PasswordResetIn(BaseModel):
    email: EmailStr


class PasswordResetConfirmIn(BaseModel):
    token: str = Field(min_length=1, max_length=200, description="the token of the reset link")
    password: str = Field(min_length=1, max_length=1024, description="the new password")


class EmailVerifyIn(BaseModel):
    token: str = Field(
        min_length=1, max_length=200, description="the token of the verification link"
    )


class EmailSentOut(BaseModel):
    """A request whose answer travels by email (through the operator's mailer)."""

    status: Literal["accepted"] = "accepted"
    detail: str


class JoinedOrganizationOut(BaseModel):
    organization_id: str
    role: str


class EmailVerifiedOut(BaseModel):
    user: UserOut
    joined: list[JoinedOrganizationOut] = Field(
        description="organizations joined through open invitations to the verified email"
    )


class LoginOut(BaseModel):
    """One way the person is logged in (see ``GET /api/v1/auth/logins``)."""

    id: str = Field(description="fam_... for a token login, ses_... for a dashboard session")
    kind: Literal["token", "dashboard"]
    organization_id: str
    started_at: datetime
    last_active_at: datetime = Field(description="a token login's latest refresh")
    expires_at: datetime
    current: bool = Field(description="the login making this request")


class LoginListOut(BaseModel):
    items: list[LoginOut]


class LoginsEndedOut(BaseModel):
    logins: int = Field(description="token logins ended")
    sessions: int = Field(description="dashboard sessions closed")
