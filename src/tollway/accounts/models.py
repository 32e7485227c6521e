from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from tollway.kit.models import Base, JSONDocument, TimestampMixin, id_column


class User(TimestampMixin, Base):
    __tablename__ = "users"

    id: Mapped[str] = id_column()
    email: Mapped[str] = mapped_column(String(320), unique=True, nullable=False)
    name: Mapped[str | None] = mapped_column(String(200))
    #: argon2id (or an imported bcrypt hash, upgraded at the next login); None for
    #: accounts that only sign in through OAuth.
    password_hash: Mapped[str | None] = mapped_column(String(255))
    email_verified: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    is_platform_admin: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    #: The TOTP secret, encrypted (Fernet, key derived from TOLLWAY_SECRET_KEY); set by
    #: 2FA set-up, in force once ``totp_enabled``.
    totp_secret: Mapped[str | None] = mapped_column(String(255))
    totp_enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    #: The last accepted TOTP time step: a code is accepted once, never replayed.
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger)
    last_login_at: Mapped[datetime | None] = mapped_column()
    disabled_at: Mapped[datetime | None] = mapped_column()


class Organization(TimestampMixin, Base):
    __tablename__ = "organizations"

    id: Mapped[str] = id_column()
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    #: ISO 3166-1 alpha-2; selects the tax rate on invoices.
    billing_country: Mapped[str | None] = mapped_column(String(2))
    billing_email: Mapped[str | None] = mapped_column(String(320))
    #: The billing profile (``PUT /api/v1/billing/profile``), printed on invoices: the
    #: legal name (the organization's name when unset), postal address lines, tax id.
    billing_name: Mapped[str | None] = mapped_column(String(200))
    billing_address: Mapped[list[str] | None] = mapped_column(JSONDocument)
    billing_tax_id: Mapped[str | None] = mapped_column(String(50))
    #: Set once, from the user who registered it; personal organizations have one.
    personal_for_user_id: Mapped[str | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )


class Membership(TimestampMixin, Base):
    __tablename__ = "memberships"
    __table_args__ = (UniqueConstraint("organization_id", "user_id"),)

    id: Mapped[str] = id_column()
    organization_id: Mapped[str] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False, index=True
    )
    user_id: Mapped[str] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True
    )
    role: Mapped[str] = mapped_column(String(20), nullable=False)


class Invitation(TimestampMixin, Base):
    """A pending membership for an email without an account.

    It becomes a membership when a logged-in user presents its token (sent to the
    email; only its SHA-256 is kept), or when the email registers through an OAuth
    provider that verified it, unless it expired or was withdrawn. A registration with
    a password proves nothing about the mailbox and accepts nothing.
    """

    __tablename__ = "invitations"
    __table_args__ = (UniqueConstraint("organization_id", "email"),)

    id: Mapped[str] = id_column()
    organization_id: Mapped[str] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False
    )
    email: Mapped[str] = mapped_column(String(320), nullable=False, index=True)
    role: Mapped[str] = mapped_column(String(20), nullable=False)
    invited_by_user_id: Mapped[str | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )
    #: SHA-256 of the accept token; None for invitations made before tokens existed
    #: (those are accepted only by an OAuth registration with the verified email).
    token_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    expires_at: Mapped[datetime] = mapped_column(nullable=False)
