from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from tollway.kit.models import Base, id_column


class UsageEvent(Base):
    """One metered occurrence; the unique key makes a retried event count once."""

    __tablename__ = "usage_events"
    __table_args__ = (
        UniqueConstraint("organization_id", "idempotency_key"),
        Index("ix_usage_events_org_meter_time", "organization_id", "meter", "occurred_at"),
    )

    id: Mapped[str] = id_column()
    organization_id: Mapped[str] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False
    )
    meter: Mapped[str] = mapped_column(String(64), nullable=False)
    quantity: Mapped[int] = mapped_column(BigInteger, nullable=False)
    occurred_at: Mapped[datetime] = mapped_column(nullable=False)
    period_start: Mapped[datetime] = mapped_column(nullable=False)
    idempotency_key: Mapped[str] = mapped_column(String(255), nullable=False)
    #: SHA-256 of what the client sent, to tell a retry from a reused key.
    fingerprint: Mapped[str] = mapped_column(String(64), nullable=False)
    #: SQL NULL when absent (not JSON ``null``): nothing to serialise on the hot path.
    properties: Mapped[dict[str, Any] | None] = mapped_column(
        JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")
    )
    #: ``api`` (POST /billing/usage), ``authorize`` or ``middleware``.
    source: Mapped[str] = mapped_column(String(16), nullable=False)
    recorded_at: Mapped[datetime] = mapped_column(nullable=False)


class UsageCounter(Base):
    """The exact aggregate of one meter for one organization and period.

    Updated in the same transaction as the events it counts, so it always equals the
    aggregate of ``usage_events``; quota checks read and bump it atomically.
    """

    __tablename__ = "usage_counters"

    organization_id: Mapped[str] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True
    )
    meter: Mapped[str] = mapped_column(String(64), primary_key=True)
    period_start: Mapped[datetime] = mapped_column(primary_key=True)
    period_end: Mapped[datetime] = mapped_column(nullable=False)
    value: Mapped[int] = mapped_column(BigInteger, nullable=False)
    #: The highest quota threshold (0, 80, 100 percent) already announced this period.
    notified_percent: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    updated_at: Mapped[datetime] = mapped_column(nullable=False)


class UsageUniqueValue(Base):
    """The distinct values a ``unique`` meter has seen in a period."""

    __tablename__ = "usage_unique_values"

    organization_id: Mapped[str] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True
    )
    meter: Mapped[str] = mapped_column(String(64), primary_key=True)
    period_start: Mapped[datetime] = mapped_column(primary_key=True)
    value: Mapped[str] = mapped_column(String(255), primary_key=True)
