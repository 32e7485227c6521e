from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Identity, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from tollway.kit.models import Base, SequenceKey

GENESIS_HASH = "0" * 64


class AuditEntry(Base):
    """One audited change. ``hash`` = SHA-256 over ``prev_hash`` and this row's fields."""

    __tablename__ = "audit_log"

    seq: Mapped[int] = mapped_column(SequenceKey, Identity(), primary_key=True)
    # The client-made ID lets one INSERT write many rows and still match each to the
    # sequence number the database gave it (SQLAlchemy's "insertmanyvalues" sentinel).
    id: Mapped[str] = mapped_column(String(40), unique=True, nullable=False, insert_sentinel=True)
    occurred_at: Mapped[datetime] = mapped_column(nullable=False, index=True)
    actor: Mapped[str] = mapped_column(String(100), nullable=False)
    action: Mapped[str] = mapped_column(String(100), nullable=False, index=True)
    target: Mapped[str | None] = mapped_column(String(200))
    organization_id: Mapped[str | None] = mapped_column(String(40), index=True)
    request_id: Mapped[str | None] = mapped_column(String(64))
    details: Mapped[dict[str, Any]] = mapped_column(nullable=False)
    prev_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    hash: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)


class AuditChainHead(Base):
    """A single row holding the newest hash; locking it orders concurrent appends."""

    __tablename__ = "audit_chain_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    last_seq: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    last_hash: Mapped[str] = mapped_column(String(64), nullable=False, default=GENESIS_HASH)
