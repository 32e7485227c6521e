from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from tollway.kit.models import Base, id_column


class RefreshToken(Base):
    """An opaque refresh token, stored as its SHA-256; rotated on every use.

    All tokens descended from one login share a ``family_id``; presenting a token
    that was already rotated (``used_at`` set) revokes the whole family.
    """

    __tablename__ = "refresh_tokens"

    id: Mapped[str] = id_column()
    family_id: Mapped[str] = mapped_column(String(40), nullable=False, index=True)
    user_id: Mapped[str] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True
    )
    organization_id: Mapped[str] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False
    )
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    #: The access token issued with this refresh token, revoked with the family.
    access_token_id: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(nullable=False)
    expires_at: Mapped[datetime] = mapped_column(nullable=False)
    used_at: Mapped[datetime | None] = mapped_column()
    revoked_at: Mapped[datetime | None] = mapped_column()


class RevokedAccessToken(Base):
    """An access token (by ``jti``) refused before its expiry: logout, family revocation."""

    __tablename__ = "revoked_access_tokens"

    jti: Mapped[str] = mapped_column(String(40), primary_key=True)
    revoked_at: Mapped[datetime] = mapped_column(nullable=False, index=True)
    expires_at: Mapped[datetime] = mapped_column(nullable=False, index=True)


class LoginThrottle(Base):
    """Failed logins of one account (``account:<email>``) or one client address
    (``address:<ip>``), shared by every process through the database.

    ``failures`` count within the window that began at ``window_started_at``; reaching
    the limit locks the key until ``locked_until``, and each repeated lock-out
    (``lockouts``) doubles the lock.
    """

    __tablename__ = "login_throttles"

    key: Mapped[str] = mapped_column(String(400), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    window_started_at: Mapped[datetime] = mapped_column(nullable=False)
    lockouts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    locked_until: Mapped[datetime | None] = mapped_column()
    last_failure_at: Mapped[datetime] = mapped_column(nullable=False, index=True)


class RecoveryCode(Base):
    """A one-time 2FA recovery code, stored as an HMAC; ``used_at`` set when spent."""

    __tablename__ = "recovery_codes"

    id: Mapped[str] = id_column()
    user_id: Mapped[str] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True
    )
    code_hash: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    created_at: Mapped[datetime] = mapped_column(nullable=False)
    used_at: Mapped[datetime | None] = mapped_column()


class OAuthAccount(Base):
    """A provider identity (GitHub, Google) linked to a user."""

    __tablename__ = "oauth_accounts"
    __table_args__ = (UniqueConstraint("provider", "provider_user_id"),)

    id: Mapped[str] = id_column()
    provider: Mapped[str] = mapped_column(String(20), nullable=False)
    provider_user_id: Mapped[str] = mapped_column(String(100), nullable=False)
    user_id: Mapped[str] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True
    )
    email: Mapped[str | None] = mapped_column(String(320))
    created_at: Mapped[datetime] = mapped_column(nullable=False)
    last_login_at: Mapped[datetime | None] = mapped_column()


class OAuthState(Base):
    """An authorization request in flight: its ``state`` (stored as SHA-256) and PKCE
    verifier, kept server-side so any process can complete the callback."""

    __tablename__ = "oauth_states"

    state_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    provider: Mapped[str] = mapped_column(String(20), nullable=False)
    code_verifier: Mapped[str] = mapped_column(String(128), nullable=False)
    #: ``cookie``: the callback opens a dashboard session and redirects to ``redirect_to``;
    #: ``token``: it answers with the JSON session of /auth/login.
    mode: Mapped[str] = mapped_column(String(10), nullable=False)
    redirect_to: Mapped[str] = mapped_column(String(500), nullable=False)
    created_at: Mapped[datetime] = mapped_column(nullable=False)
    expires_at: Mapped[datetime] = mapped_column(nullable=False, index=True)


class DashboardSession(Base):
    """A cookie session of the dashboard: the cookie holds an opaque token, stored here
    as its SHA-256, with the synchronizer CSRF token unsafe requests must echo."""

    __tablename__ = "dashboard_sessions"

    id: Mapped[str] = id_column()
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    csrf_token: Mapped[str] = mapped_column(String(64), nullable=False)
    user_id: Mapped[str] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True
    )
    organization_id: Mapped[str] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False
    )
    created_at: Mapped[datetime] = mapped_column(nullable=False)
    expires_at: Mapped[datetime] = mapped_column(nullable=False, index=True)
    revoked_at: Mapped[datetime | None] = mapped_column()


class TwoFactorChallenge(Base):
    """A login that passed its first factor (an OAuth provider) and waits for the TOTP
    code of an account with 2FA on. The challenge itself is given to the client once and
    stored here as its SHA-256; it is good for one completion, for a few minutes.

    ``mode`` and ``redirect_to`` are the OAuth login's, so the completion answers what
    the callback would have. The ``link_*`` columns are set when completing also links
    a new provider identity to the account (found by its verified email).
    """

    __tablename__ = "two_factor_challenges"

    challenge_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True
    )
    #: What proved the first factor, for the audit trail: ``oauth:github``.
    via: Mapped[str] = mapped_column(String(40), nullable=False)
    mode: Mapped[str] = mapped_column(String(10), nullable=False)
    redirect_to: Mapped[str] = mapped_column(String(500), nullable=False)
    link_provider: Mapped[str | None] = mapped_column(String(20))
    link_provider_user_id: Mapped[str | None] = mapped_column(String(100))
    link_email: Mapped[str | None] = mapped_column(String(320))
    created_at: Mapped[datetime] = mapped_column(nullable=False)
    expires_at: Mapped[datetime] = mapped_column(nullable=False, index=True)


class UserToken(Base):
    """A one-time token sent to a user's mailbox (through the operator's mailer): a
    password reset or an email verification. The token itself exists only in the outbox
    event; its SHA-256 is kept here. Good once (``used_at``) and until ``expires_at``; a
    newer token of the same purpose replaces the user's open ones.
    """

    __tablename__ = "user_tokens"

    id: Mapped[str] = id_column()
    user_id: Mapped[str] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True
    )
    #: ``password_reset`` or ``email_verification``: a token works only for its purpose.
    purpose: Mapped[str] = mapped_column(String(30), nullable=False)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    expires_at: Mapped[datetime] = mapped_column(nullable=False, index=True)
    used_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(nullable=False)
