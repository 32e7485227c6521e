from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from tollway.kit.models import Base, TimestampMixin, id_column


class ApiKey(TimestampMixin, Base):
    """An API key. Only an HMAC-SHA256 of the key (with the server pepper) is stored."""

    __tablename__ = "api_keys"

    id: Mapped[str] = id_column()
    organization_id: Mapped[str] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False, index=True
    )
    created_by_user_id: Mapped[str | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    #: ``live`` or ``test``, the key's visible environment (``tw_live_`` / ``tw_test_``).
    environment: Mapped[str] = mapped_column(String(4), nullable=False)
    #: The first characters of the key, shown in lists so a user can tell keys apart.
    prefix: Mapped[str] = mapped_column(String(24), nullable=False)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    scopes: Mapped[list[str]] = mapped_column(JSON, nullable=False)
    expires_at: Mapped[datetime | None] = mapped_column()
    last_used_at: Mapped[datetime | None] = mapped_column()
    revoked_at: Mapped[datetime | None] = mapped_column()
