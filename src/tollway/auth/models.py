from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String
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
